"""Benchmarks of the session engines: see README.md here; not part of the test suite."""

from __future__ import annotations
