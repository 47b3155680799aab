"""The engine's own exception."""

from __future__ import annotations


class SessionUnavailable(Exception):
    """Redis could not be used for this session: unreachable, too slow, or it refused.

    Never raised for a session that merely does not exist (that loads empty).
    ``__cause__`` carries the redis-py error.
    """


class SessionTooLarge(ValueError):
    """The session's JSON exceeds ``SESSION_REDIS["max_bytes"]``; nothing was written."""
