"""Django settings for one engine, named by ``BENCH_ENGINE`` (see ``engines.py``)."""

from __future__ import annotations

import os

from benchmarks.engines import django_settings

globals().update(django_settings(os.environ["BENCH_ENGINE"]))
