"""Signals for metrics: connect a receiver to count failures, conflicts and timings.

Every signal is sent with ``sender`` = the SessionStore class and ``digest``, the
session's one-way name (never the session key itself), or ``None`` when the
operation concerns no particular session.
"""

from __future__ import annotations

from django.dispatch import Signal

#: An operation finished: ``operation`` ("load", "save", "create", "delete",
#: "exists"), ``duration`` in seconds, ``ok`` (False when it raised).
operation_completed = Signal()

#: Redis could not serve an operation: ``operation``, ``exception`` (a
#: SessionUnavailable whose ``__cause__`` is the redis-py error).
store_unavailable = Signal()

#: A save met a newer version written by a concurrent request and merged:
#: ``attempt`` counts from 1.
save_conflict = Signal()

#: The engine ended a session on reading it because its absolute deadline had
#: passed (a restored or replayed value, or a sign-in time it did not write):
#: ``reason`` is ``"absolute"``. Sessions whose TTL runs out (idle, or at the
#: deadline) are removed by Redis itself; no process sees that, nothing is sent.
session_timed_out = Signal()

#: The engine ended a session, by its one end path: ``reason`` is "deleted"
#: (logout, flush), "cycled" (the old key of cycle_key), "ended" (another
#: device, the admin, a deactivated user: ``users.end_session(s)``), "evicted"
#: (past ``max_sessions_per_user``), "expired" (a save past its expiry),
#: "absolute" (read past its deadline). Sent only when the session was there.
session_ended = Signal()

#: SESSION_REDIS["migrate_from"]: a load found the session in the old store.
#: ``outcome`` is "copied" (imported), or why it was not: "expired",
#: "bad signature", "not JSON-able", "invalid key", "unreadable".
session_migrated = Signal()
