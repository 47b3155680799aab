"""Idle and absolute timeouts: ``SESSION_REDIS["idle_timeout"]`` and ``["absolute_timeout"]``.

Both clocks end up in one place, the key's Redis TTL, which every write sets to
the smallest of the idle window, the time left before the absolute deadline and
Django's own expiry age. The deadline is counted from sign-in (a save where the
signed-in user id, ``_auth_user_id``, appears or changes: ``login()``), kept
across ``cycle_key()`` (a key rotation is no sign-in) and in the session's JSON
under ``ANCHOR``; scripts get it as an argument and measure the
time left with Redis's ``TIME``, so app servers' clocks never matter and the
stored value's header stays ``<format>:<version>:``.

With either setting on, a load is one script call returning the value, its PTTL
and Redis's clock. That is enough to end a session past its deadline (a
replayed or restored value included), to start the clock of a session stored
before the setting, and to decide whether this request must slide the idle
window: only when more than a tenth of it has gone by since the last slide, so
an active session costs one PEXPIRE per ``idle_timeout / 10``, never a rewrite.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from django_redis_sessions import conf, hooks, scripts

Steps = Generator[tuple[Any, ...], Any, Any]

suspicious_logger = logging.getLogger("django.security.SuspiciousSession")

#: The session's sign-in time (Unix ms on Redis's clock), or None for a session
#: nobody signed in to. Reserved: written by the engine, read by its scripts' callers.
ANCHOR = "_redis_signed_in_at"
#: The idle window slides once more than 1/REFRESH_FRACTION of it has gone by.
REFRESH_FRACTION = 10
# A TTL longer than the clocks allow by more than this was not set by us (a
# restored or PERSISTed key): cut it down. Absorbs clock reads a moment apart.
SLACK_MS = 1000
IDLE, ABSOLUTE = hooks.IDLE, hooks.ABSOLUTE
#: Django's session key for the signed-in user's id (django.contrib.auth.SESSION_KEY).
AUTH_USER_KEY = "_auth_user_id"
_MISSING = object()

#: The SESSION_REDIS keys this feature owns.
KEYS = frozenset({"idle_timeout", "absolute_timeout"})


@dataclass(frozen=True)
class Config:
    idle_timeout: int | None
    absolute_timeout: int | None


def configure(core: conf.Config) -> Config | None:
    """This feature's settings (seconds), or None when both clocks are off."""
    raw: Mapping[str, Any] = core.features
    idle = conf.positive_int(raw, "idle_timeout", optional=True)
    absolute = conf.positive_int(raw, "absolute_timeout", optional=True)
    if idle is None and absolute is None:
        return None
    return Config(idle, absolute)


def clock_factory(config: Config) -> Callable[[], Clock]:
    """What the plan calls for each store: a fresh clock with these settings."""

    def make() -> Clock:
        return Clock(config.idle_timeout, config.absolute_timeout)

    return make


class Clock:
    """One request's view of one session's timeouts."""

    def __init__(self, idle_timeout: int | None, absolute_timeout: int | None) -> None:
        self.idle_ms = idle_timeout * 1000 if idle_timeout else None
        self.absolute_ms = absolute_timeout * 1000 if absolute_timeout else None
        # Redis's clock minus ours (seconds), once a reply has told it.
        self.offset: float | None = None
        # The sign-in time to keep even if the data is cleared; set by a load or a sign-in.
        self.anchor: int | None = None
        # The user id the stored session was signed in to: a save with another is a sign-in.
        self.user: Any = None
        # This request slid the idle window without a write: the cookie follows.
        self.refreshed = False
        # When (our clock) the key's TTL, as last read or set, runs out.
        self.ttl_until: float | None = None

    # Redis's clock ------------------------------------------------------------

    def _learn(self, seconds: Any, microseconds: Any) -> int:
        now_ms = int(seconds) * 1000 + int(microseconds) // 1000
        self.offset = now_ms / 1000 - time.time()
        return now_ms

    def now_ms(self) -> int:
        return int((time.time() + (self.offset or 0.0)) * 1000)

    # Deadlines ----------------------------------------------------------------

    def deadline_of(self, data: dict[str, Any]) -> int | None:
        if self.absolute_ms is None:
            return None
        user = data.get(AUTH_USER_KEY)
        if user is not None and user != self.user:  # signing in: its clock starts at the save
            return self.now_ms() + self.absolute_ms
        anchor = data.get(ANCHOR)
        if not isinstance(anchor, int) or isinstance(anchor, bool) or anchor <= 0:
            return None
        return anchor + self.absolute_ms

    def past_deadline(self, data: dict[str, Any]) -> bool:
        deadline = self.deadline_of(data)
        return deadline is not None and deadline <= self.now_ms()

    def cap(self, ttl_ms: int, data: dict[str, Any]) -> int:
        """Django's TTL cut to the idle window and to the time left before the deadline."""
        if self.idle_ms is not None:
            ttl_ms = min(ttl_ms, self.idle_ms)
        deadline = self.deadline_of(data)
        if deadline is not None:
            ttl_ms = min(ttl_ms, deadline - self.now_ms())
        return max(ttl_ms, 0)

    def command(self, command: tuple[Any, ...], data: dict[str, Any]) -> tuple[Any, ...]:
        """A write as sent: with a deadline, its script measures the time left itself."""
        ttl = command[4] if command[0] == scripts.SET else command[-1]
        self.ttl_until = time.time() + ttl / 1000
        deadline = self.deadline_of(data)
        if deadline is None:
            return command
        if command[0] == scripts.SET:  # (SET, key, value, PX, ttl, NX)
            create = scripts.DEADLINED[scripts.CREATE]
            return (scripts.EVALSHA, create, *command[1:3], ttl, deadline)
        return (scripts.EVALSHA, scripts.DEADLINED[command[1]], *command[2:], deadline)

    # Hooks of the session's steps -----------------------------------------------

    def read(self, redis_key: str) -> Steps:
        """GET, with the key's PTTL and Redis's clock: ``(value or None or error, pttl)``."""
        reply = yield (scripts.EVALSHA, scripts.LOAD, redis_key)
        if reply is None or isinstance(reply, Exception):
            return reply, None
        value, pttl, seconds, microseconds = reply
        self._learn(seconds, microseconds)
        return value, int(pttl)

    def on_load(
        self, store: hooks.Store, redis_key: str, data: dict[str, Any], version: bytes, pttl: int
    ) -> Steps:
        """Check a loaded session's clocks; the reason it is over, or None."""
        now = self.now_ms()
        self.user = data.get(AUTH_USER_KEY)
        if self.absolute_ms is not None:
            anchor = data.get(ANCHOR, _MISSING)
            if anchor is _MISSING:
                # Stored before absolute_timeout was set: its clock starts now,
                # written in place (same version and TTL, not a user's change).
                anchor = data[ANCHOR] = now
                yield from store.restamp(data)
            deadline = self.deadline_of(data)
            if deadline is None and anchor is not None:
                suspicious_logger.warning(
                    "Session sign-in time %r is not one the engine wrote (session %s): "
                    "the session is ended.",
                    anchor,
                    redis_key,
                )
                deadline = 0  # counts as long past
            if deadline is not None and deadline <= now:
                return ABSOLUTE
            self.anchor = anchor
        target = store.ttl_ms(data)
        if pttl < 0 or pttl > target + SLACK_MS or self._slides(target, pttl):
            yield self.command((scripts.EVALSHA, scripts.TOUCH, redis_key, version, target), data)
            self.refreshed = True
        else:
            self.ttl_until = time.time() + pttl / 1000
        return None

    def _slides(self, target: int, pttl: int) -> bool:
        if self.idle_ms is None:
            return False
        return target - pttl > self.idle_ms // REFRESH_FRACTION

    def before_write(self, redis_key: str, data: dict[str, Any]) -> Steps:
        """Stamp the sign-in time into data about to be written (one TIME at sign-in)."""
        if self.absolute_ms is None:
            return None
        user = data.get(AUTH_USER_KEY)
        if user is not None and user != self.user:  # a sign-in: the clock starts now
            if self.offset is None:
                seconds, microseconds = yield (scripts.EVALSHA, scripts.NOW, redis_key)
                self._learn(seconds, microseconds)
            self.anchor = data[ANCHOR] = self.now_ms()
            self.user = user
        elif ANCHOR not in data:  # a new session, or one clear() emptied
            data[ANCHOR] = self.anchor
        return None

    def adopted(self, data: dict[str, Any]) -> None:
        """A session found elsewhere: if it carries its sign-in time (one this engine
        wrote back), it keeps that deadline; storing it is no sign-in."""
        if ANCHOR in data:
            self.user = data.get(AUTH_USER_KEY)
            anchor = data[ANCHOR]
            self.anchor = anchor if isinstance(anchor, int) else None

    def signed_out(self) -> None:
        """The session ended (flush()): the next one starts with no sign-in of its own."""
        self.anchor = self.user = None

    # What is left -------------------------------------------------------------------

    def absolute_remaining(self, data: dict[str, Any]) -> int | None:
        deadline = self.deadline_of(data)
        if deadline is None:
            return None
        return max(0, (deadline - self.now_ms()) // 1000)

    def cap_age(self, age: int, data: dict[str, Any]) -> int:
        """Django's expiry age, never past the absolute deadline."""
        left = self.absolute_remaining(data)
        return age if left is None else min(age, left)

    def cap_date(self, date: datetime, data: dict[str, Any]) -> datetime:
        """Django's expiry date, never past the absolute deadline."""
        left = self.absolute_remaining(data)
        return date if left is None else min(date, timezone.now() + timedelta(seconds=left))

    def idle_remaining(self, store: hooks.Store, data: dict[str, Any]) -> int | None:
        if self.idle_ms is None:
            return None
        if self.ttl_until is not None:
            return max(0, math.floor(self.ttl_until - time.time()))
        return store.ttl_ms(data) // 1000  # not stored yet: what saving it would give


def cookie_age(session: Any, age: float) -> float:
    """A session cookie's Max-Age: never longer than the server keeps it unused."""
    clock: Clock | None = getattr(session, "_clock", None)
    if clock is None or clock.idle_ms is None:
        return age
    return min(age, clock.idle_ms / 1000)


def renews_cookie(session: Any) -> bool:
    """Whether this request slid the idle window, so the cookie must follow."""
    clock: Clock | None = getattr(session, "_clock", None)
    return clock is not None and clock.refreshed
