"""A Django session engine on Redis."""

from __future__ import annotations

from django_redis_sessions.exceptions import SessionTooLarge, SessionUnavailable

__all__ = ["SessionTooLarge", "SessionUnavailable"]
__version__ = "1.0.0"
