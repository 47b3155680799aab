"""Who is signed in where: list a user's sessions, end one, end all.

The index itself is a layer of the store (``userindex``); this module is its
public side: the listing, the ends (each through the store's one end path, so
an end is final whatever else is on: a migration's old store, the timeouts),
and the receivers that sign a deactivated or deleted user out everywhere.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.db import models
from django.http import HttpRequest
from django.utils import timezone as django_timezone

from django_redis_sessions import codec, hooks, plan, scripts, userindex
from django_redis_sessions.driver import arun, run
from django_redis_sessions.hooks import Steps
from django_redis_sessions.session import SessionStore
from django_redis_sessions.userindex import (
    AUTH_USER_KEY,
    IP_LENGTH,
    MARKER,
    SLACK_MS,
    USER_AGENT_LENGTH,
    index_key,
    now_ms,
)

__all__ = [
    "AUTH_USER_KEY",
    "IP_LENGTH",
    "MARKER",
    "SLACK_MS",
    "USER_AGENT_LENGTH",
    "UserSession",
    "aend_session",
    "aend_sessions",
    "aget_sessions",
    "attach",
    "describe_user_agent",
    "end_session",
    "end_sessions",
    "get_sessions",
    "index_key",
    "remote_addr",
    "user_id",
]

# A user instance (any model, or request.user) or its primary key.
User = Any

_DIGEST_RE = userindex.DIGEST_RE
_now_ms = now_ms


@dataclass(frozen=True)
class UserSession:
    """One signed-in session of a user, as the index knows it."""

    #: A public handle (the session key's digest), never the session key.
    id: str
    created: datetime
    last_seen: datetime
    #: None for a session without expiry (only when someone removed its TTL).
    expires: datetime | None
    ip: str | None
    user_agent: str | None
    #: Whether this is the session of the request that asked.
    current: bool = False

    @property
    def device(self) -> str:
        """A short name for the browser and system, e.g. "Firefox on Linux"."""
        return describe_user_agent(self.user_agent)


# Checked in order: several browsers also name the ones they derive from.
_BROWSERS = (
    ("Edge", re.compile(r"\bEdg(e|A|iOS)?/")),
    ("Opera", re.compile(r"\bOPR/|\bOpera\b")),
    ("Samsung Internet", re.compile(r"\bSamsungBrowser/")),
    ("Firefox", re.compile(r"\b(Firefox|FxiOS)/")),
    ("Headless Chrome", re.compile(r"\bHeadlessChrome/")),
    ("Chrome", re.compile(r"\b(Chrome|CriOS)/")),
    ("Safari", re.compile(r"\bVersion/[\d.]+.*\bSafari/")),
)
_SYSTEMS = (
    ("Android", re.compile(r"\bAndroid\b")),
    ("iPhone", re.compile(r"\biPhone\b")),
    ("iPad", re.compile(r"\biPad\b")),
    ("Windows", re.compile(r"\bWindows\b")),
    ("ChromeOS", re.compile(r"\bCrOS\b")),
    ("macOS", re.compile(r"\bMac OS X\b|\bMacintosh\b")),
    ("Linux", re.compile(r"\bLinux\b")),
)


def describe_user_agent(user_agent: str | None) -> str:
    """ "Firefox on Linux", "Safari on iPhone", or the user agent itself when unknown."""
    if not user_agent:
        return "Unknown device"
    browser = next((name for name, pattern in _BROWSERS if pattern.search(user_agent)), None)
    system = next((name for name, pattern in _SYSTEMS if pattern.search(user_agent)), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or user_agent[:60]


# Names -------------------------------------------------------------------------------


def user_id(user: User) -> str:
    """The user id as ``login()`` stores it in the session."""
    if getattr(user, "is_anonymous", False) is True:
        raise TypeError("An anonymous user has no sessions of its own.")
    if isinstance(user, models.Model):
        pk = user._meta.pk
        assert pk is not None
        return str(pk.value_to_string(user))
    if user is None or isinstance(user, bool):
        raise TypeError(f"Expected a user or its primary key, got {user!r}.")
    return str(user)


def remote_addr(request: HttpRequest) -> str | None:
    """The default ``SESSION_REDIS["client_ip"]``: the peer's address as the server saw it."""
    value = request.META.get("REMOTE_ADDR")
    return str(value) if value else None


# Hooks into the request cycle ------------------------------------------------------


def attach(request: HttpRequest) -> None:
    """Let the request's session read IP and user agent when it indexes itself."""
    session = getattr(request, "session", None)
    scratch = getattr(session, "scratch", None)
    if isinstance(scratch, dict):
        scratch[userindex.REQUEST] = weakref.ref(request)


def on_login(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """``user_logged_in`` receiver: covers Django's own middleware and ``force_login``."""
    if request is not None:
        attach(request)


def end_sessions_of_inactive_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_save`` receiver for the user model: a deactivated user is signed out everywhere."""
    if getattr(instance, "is_active", True) is False and _indexed():
        end_sessions(instance)


def end_sessions_of_deleted_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_delete`` receiver for the user model."""
    if _indexed():
        end_sessions(instance)


def _indexed() -> bool:
    return plan.get_plan().users.enabled


def connect_signals() -> None:
    from django.contrib.auth.signals import user_logged_in
    from django.db.models.signals import post_delete, post_save

    user_logged_in.connect(on_login, dispatch_uid="django_redis_sessions.users.on_login")
    model = settings.AUTH_USER_MODEL
    post_save.connect(
        end_sessions_of_inactive_user, sender=model, dispatch_uid=f"{__name__}.inactive"
    )
    post_delete.connect(
        end_sessions_of_deleted_user, sender=model, dispatch_uid=f"{__name__}.deleted"
    )


# Reading and ending -----------------------------------------------------------------


def _when(ms: int) -> datetime:
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment if settings.USE_TZ else django_timezone.make_naive(moment)


def _current_digest(current: SessionBase | str | None) -> str | None:
    key = current.session_key if isinstance(current, SessionBase) else current
    return codec.digest(key) if isinstance(key, str) and codec.is_valid_session_key(key) else None


def _list(user: User, current: SessionBase | str | None) -> Steps[list[UserSession]]:
    config = plan.get_plan().config
    key = index_key(config.prefix, user_id(user))
    entries = yield from userindex.entries(key)
    mine = _current_digest(current)
    found: list[UserSession] = []
    stale: list[str] = []
    for digest, value in entries.items():
        entry = userindex.decode_entry(value)
        if not _DIGEST_RE.fullmatch(digest) or entry is None:
            stale.append(digest)
            continue
        pttl = yield (scripts.PTTL, config.prefix + digest)
        if pttl == -2:  # gone: logged out elsewhere, expired, deleted by hand
            stale.append(digest)
            continue
        now = _now_ms()
        found.append(
            UserSession(
                id=digest,
                created=_when(entry.created),
                last_seen=_when(entry.last_seen),
                expires=None if pttl < 0 else _when(now + pttl),
                ip=entry.ip,
                user_agent=entry.user_agent,
                current=digest == mine,
            )
        )
    if stale:
        yield (scripts.HDEL, key, *stale)
    found.sort(key=lambda session: (session.last_seen, session.created), reverse=True)
    return found


def _end_one(user: User, session_id: str) -> Steps[bool]:
    if not isinstance(session_id, str) or not _DIGEST_RE.fullmatch(session_id):
        return False
    uid = user_id(user)
    key = index_key(plan.get_plan().config.prefix, uid)
    if (yield (scripts.HEXISTS, key, session_id)) != 1:  # not this user's: never touch it
        return False
    # The store's one end path: the key, the entry, an old store's copy, the signals.
    ending = hooks.Ending(session_id, hooks.ENDED, uid=uid)
    return (yield from SessionStore().end_steps(ending))


def _end_all(user: User, keep: SessionBase | str | None) -> Steps[int]:
    uid = user_id(user)
    key = index_key(plan.get_plan().config.prefix, uid)
    entries = yield from userindex.entries(key)
    spared = _current_digest(keep)
    store = SessionStore()
    ended = 0
    dropped = []
    for digest in entries:
        if digest == spared:
            continue
        if _DIGEST_RE.fullmatch(digest):
            ended += yield from store.end_steps(hooks.Ending(digest, hooks.ENDED, uid=uid))
        else:
            dropped.append(digest)
    if dropped:
        yield (scripts.HDEL, key, *dropped)
    return ended


def get_sessions(user: User, current: SessionBase | str | None = None) -> list[UserSession]:
    """The user's live sessions, most recently seen first.

    ``current`` (a session, e.g. ``request.session``, or a session key) marks
    the one that is ``current``.
    """
    return run(_list(user, current))


async def aget_sessions(user: User, current: SessionBase | str | None = None) -> list[UserSession]:
    """The async twin of :func:`get_sessions`."""
    return await arun(_list(user, current))


def end_session(user: User, session_id: str) -> bool:
    """End one session by its ``UserSession.id``; False if not this user's or already gone."""
    return bool(run(_end_one(user, session_id)))


async def aend_session(user: User, session_id: str) -> bool:
    """The async twin of :func:`end_session`."""
    return bool(await arun(_end_one(user, session_id)))


def end_sessions(user: User, keep: SessionBase | str | None = None) -> int:
    """End every session of the user but ``keep`` (e.g. ``request.session``); return how many."""
    return int(run(_end_all(user, keep)))


async def aend_sessions(user: User, keep: SessionBase | str | None = None) -> int:
    """The async twin of :func:`end_sessions`."""
    return int(await arun(_end_all(user, keep)))
