"""Who is signed in where: list a user's sessions, end one, end all.

Each user with a signed-in session has one Redis hash, ``<prefix>u:<hash of the
user id>``, with one field per session: the session's digest (its Redis key
without the prefix, and its public handle), valued
``<until ms>|<last seen ms>|<created ms>|<{"ip": ..., "ua": ...}>``.

The index is kept on the write path, never by keyspace notifications:

- a save of a signed-in session that is new (login, ``cycle_key``), not yet
  indexed, or whose ``last_seen`` is older than ``activity_interval`` first
  upserts its entry (``scripts.INDEX_PUT``), then writes the session; a crash
  in between leaves an entry without a session, never the reverse;
- deleting a session this process loaded (logout, ``flush``, ``cycle_key``)
  deletes the key, then the entry;
- reading prunes entries whose session is gone (one ``PTTL`` each), and every
  upsert drops entries past their ``until``; the hash's TTL always covers its
  newest session, so it disappears with the last of them.

What decides the ``last_seen`` refresh travels in the session itself (the
``_drs_user_index`` key: user id, created, last seen, until), so an ordinary
request costs no extra command; once per ``activity_interval`` the session is
saved with a new stamp, after one more command for the index.

Every command touches one key: on a Cluster the index and the sessions live in
different slots, and each is addressed on its own.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.http import HttpRequest
from django.utils import timezone as django_timezone
from django.utils.module_loading import import_string

from django_redis_sessions import codec, conf, scripts
from django_redis_sessions.driver import Command, arun, run

if TYPE_CHECKING:
    from django_redis_sessions.session import SessionStore

logger = logging.getLogger("django_redis_sessions")

Steps = Generator[Command, Any, Any]
Write = Generator[Command, Any, None]
# A user instance (any model, or request.user) or its primary key.
User = Any

#: Django's session key for the signed-in user's id (django.contrib.auth.SESSION_KEY).
AUTH_USER_KEY = "_auth_user_id"
#: Where a session keeps its index stamp: [user id, created ms, last seen ms, until ms].
MARKER = "_drs_user_index"
#: Clocks of app servers may disagree by this much (ms): entries and the index
#: outlive their session by it.
SLACK_MS = 60_000
USER_AGENT_LENGTH = 256
IP_LENGTH = 64
_DIGEST_RE = re.compile(r"[0-9a-f]{32}")
_ENTRY_RE = re.compile(r"(\d+)\|(\d+)\|(\d+)\|(.*)", re.DOTALL)
# Attributes this module keeps on a SessionStore.
_REQUEST_ATTR = "_drs_request"
_OWNERS_ATTR = "_drs_owners"


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


def index_key(prefix: str, uid: str) -> str:
    digest = hashlib.blake2b(
        uid.encode("utf-8", "surrogatepass"), digest_size=16, person=b"drs-user-index"
    ).hexdigest()
    return f"{prefix}u:{digest}"


def remote_addr(request: HttpRequest) -> str | None:
    """The default ``SESSION_REDIS["client_ip"]``: the peer's address as the server saw it."""
    value = request.META.get("REMOTE_ADDR")
    return str(value) if value else None


@functools.cache
def _client_ip_function(path: str) -> Callable[[HttpRequest], Any]:
    try:
        function: Callable[[HttpRequest], Any] = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f'{conf.SETTING}["client_ip"]: cannot import {path!r} ({exc}).'
        ) from exc
    return function


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


# Hooks called by the session store ------------------------------------------------


def attach(request: HttpRequest) -> None:
    """Let the request's session read IP and user agent when it indexes itself."""
    session = getattr(request, "session", None)
    if session is not None:
        setattr(session, _REQUEST_ATTR, weakref.ref(request))


def on_login(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """``user_logged_in`` receiver: covers Django's own middleware and ``force_login``."""
    if request is not None:
        attach(request)


def _owners(store: SessionBase) -> dict[str, str]:
    owners: dict[str, str] | None = getattr(store, _OWNERS_ATTR, None)
    if owners is None:
        owners = {}
        setattr(store, _OWNERS_ATTR, owners)
    return owners


def _marker(data: dict[str, Any]) -> tuple[str, int, int, int] | None:
    """The session's index stamp, or None when absent or not one of ours."""
    value = data.get(MARKER)
    if (
        isinstance(value, list)
        and len(value) == 4
        and isinstance(value[0], str)
        and all(type(n) is int for n in value[1:])
    ):
        return value[0], value[1], value[2], value[3]
    return None


def _signed_in(data: dict[str, Any]) -> str | None:
    """The id of the user signed in to the session, if any (Django stores a string)."""
    uid = data.get(AUTH_USER_KEY)
    if isinstance(uid, str) or (isinstance(uid, int) and not isinstance(uid, bool)):
        return str(uid)
    return None


def loaded(store: SessionStore, session_key: str, data: dict[str, Any]) -> None:
    """After a load: remember whose session this is; ask for a save when its stamp is due."""
    if AUTH_USER_KEY not in data:  # the common case: an anonymous session
        return
    uid = _signed_in(data)
    if uid is None or not store._config.user_index:
        return
    _owners(store)[session_key] = uid
    marker = _marker(data)
    interval = store._config.activity_interval * 1000
    if marker is None or marker[0] != uid or _now_ms() - marker[2] >= interval:
        store.modified = True


@dataclass
class _Put:
    """Index a session before it is written."""

    store: SessionStore
    session_key: str
    uid: str
    key: str
    head: str
    now: int
    keep: int
    # The digest of the session this one was cycled from ("" if none): its metadata carries over.
    previous: str = ""

    def around(self, write: Write) -> Write:
        config = self.store._config
        digest = self.store._digest_of(self.session_key)
        evicted = yield (
            scripts.EVALSHA,
            scripts.INDEX_PUT,
            self.key,
            digest,
            self.head,
            self.now,
            self.keep,
            config.max_sessions_per_user,
            SLACK_MS,
            _meta(self.store, config),
            self.previous,
        )
        if not isinstance(evicted, list):  # not a hash: someone else's key under our prefix
            logger.warning("Session index %s is not a hash; not indexing %s", self.key, digest)
            evicted = []
        try:
            yield from write
        except (CreateError, UpdateError):
            # The session was not written (a key collision, or it was ended
            # meanwhile): take back the entry rather than leave it stale.
            yield (scripts.HDEL, self.key, digest)
            raise
        _owners(self.store)[self.session_key] = self.uid
        for other in evicted:
            other_digest = _text(other)
            if _DIGEST_RE.fullmatch(other_digest):  # past the per-user cap: ended
                yield (scripts.DEL, config.prefix + other_digest)


@dataclass
class _Drop:
    """Remove a session's entry after it is written: it is no longer signed in."""

    store: SessionStore
    session_key: str
    uid: str

    def around(self, write: Write) -> Write:
        yield from write
        _owners(self.store).pop(self.session_key, None)
        config = self.store._config
        key = index_key(config.prefix, self.uid)
        yield (scripts.HDEL, key, self.store._digest_of(self.session_key))


def save_plan(
    store: SessionStore, session_key: str, data: dict[str, Any], must_create: bool
) -> _Put | _Drop | None:
    """What a save must do to the index (None: nothing, the common case).

    May stamp ``data``, which is then written with the session.
    """
    config = store._config
    uid = _signed_in(data) if AUTH_USER_KEY in data else None
    if uid is None or not config.user_index:
        owners: dict[str, str] | None = getattr(store, _OWNERS_ATTR, None)
        owner = owners.get(session_key) if owners else None
        if owner is None and MARKER not in data:  # the common case: an anonymous session
            return None
        # Signed out without a flush (e.g. clear() and save): the entry goes.
        marker = _marker(data)
        data.pop(MARKER, None)
        owner = owner or (marker[0] if marker is not None else None)
        return _Drop(store, session_key, owner) if owner is not None else None
    marker = _marker(data)
    ttl = store._ttl_ms(data)
    now = _now_ms()
    if ttl <= 0:  # the save deletes the session
        return _Drop(store, session_key, uid)
    interval = config.activity_interval * 1000
    if not (
        must_create
        or marker is None
        or marker[0] != uid
        or now - marker[2] >= interval
        or now + ttl > marker[3]
    ):
        return None
    created = marker[1] if marker is not None and marker[0] == uid else now
    until = now + ttl + interval
    data[MARKER] = [uid, created, now, until]
    owners = getattr(store, _OWNERS_ATTR, None) or {}
    previous = next((k for k, u in owners.items() if u == uid and k != session_key), None)
    return _Put(
        store,
        session_key,
        uid,
        index_key(config.prefix, uid),
        head=f"{until}|{now}|{created}|",
        now=now,
        keep=until - now + SLACK_MS,
        previous=store._digest_of(previous) if must_create and previous else "",
    )


def _meta(store: SessionStore, config: conf.Config) -> str:
    """IP and user agent of the request at hand, as JSON; "" keeps the stored ones."""
    ref = getattr(store, _REQUEST_ATTR, None)
    request: HttpRequest | None = ref() if ref is not None else None
    if request is None:
        return ""
    meta: dict[str, str] = {}
    if config.client_ip is not None:
        ip = _client_ip_function(config.client_ip)(request)
        if ip:
            meta["ip"] = str(ip)[:IP_LENGTH]
    if config.store_user_agent:
        agent = request.META.get("HTTP_USER_AGENT")
        if agent:
            meta["ua"] = str(agent)[:USER_AGENT_LENGTH]
    return json.dumps(meta, separators=(",", ":"), ensure_ascii=True)


def deleted(store: SessionStore, session_key: str) -> Steps:
    """After a session key was deleted: drop its entry, if we know whose it was."""
    owners: dict[str, str] | None = getattr(store, _OWNERS_ATTR, None)
    uid = owners.pop(session_key, None) if owners else None
    if uid is not None:
        key = index_key(store._config.prefix, uid)
        yield (scripts.HDEL, key, store._digest_of(session_key))


def end_sessions_of_inactive_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_save`` receiver for the user model: a deactivated user is signed out everywhere."""
    if getattr(instance, "is_active", True) is False and conf.get_config().user_index:
        end_sessions(instance)


def end_sessions_of_deleted_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_delete`` receiver for the user model."""
    if conf.get_config().user_index:
        end_sessions(instance)


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


def _entries(key: str) -> Generator[Command, Any, dict[str, str]]:
    """The index hash as {digest: value}; a key that is not a hash reads as empty."""
    reply = yield (scripts.HGETALL, key)
    if isinstance(reply, Exception):
        logger.warning("Session index %s is not a hash; ignoring it", key)
        return {}
    return {_text(field): _text(value) for field, value in reply.items()}


def _list(user: User, current: SessionBase | str | None) -> Steps:
    config = conf.get_config()
    key = index_key(config.prefix, user_id(user))
    entries = yield from _entries(key)
    mine = _current_digest(current)
    found: list[UserSession] = []
    stale: list[str] = []
    for digest, value in entries.items():
        entry = _ENTRY_RE.fullmatch(value)
        if not _DIGEST_RE.fullmatch(digest) or entry is None:
            stale.append(digest)
            continue
        pttl = yield (scripts.PTTL, config.prefix + digest)
        if pttl == -2:  # gone: logged out elsewhere, expired, deleted by hand
            stale.append(digest)
            continue
        now = _now_ms()
        try:
            meta = json.loads(entry[4])
        except ValueError:
            meta = {}
        if not isinstance(meta, dict):
            meta = {}
        found.append(
            UserSession(
                id=digest,
                created=_when(int(entry[3])),
                last_seen=_when(int(entry[2])),
                expires=None if pttl < 0 else _when(now + pttl),
                ip=_optional_text(meta.get("ip")),
                user_agent=_optional_text(meta.get("ua")),
                current=digest == mine,
            )
        )
    if stale:
        yield (scripts.HDEL, key, *stale)
    found.sort(key=lambda session: (session.last_seen, session.created), reverse=True)
    return found


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _end_one(user: User, session_id: str) -> Steps:
    if not isinstance(session_id, str) or not _DIGEST_RE.fullmatch(session_id):
        return False
    config = conf.get_config()
    key = index_key(config.prefix, user_id(user))
    if (yield (scripts.HEXISTS, key, session_id)) != 1:  # not this user's: never touch it
        return False
    ended = yield (scripts.DEL, config.prefix + session_id)
    yield (scripts.HDEL, key, session_id)
    return ended == 1


def _end_all(user: User, keep: SessionBase | str | None) -> Steps:
    config = conf.get_config()
    key = index_key(config.prefix, user_id(user))
    entries = yield from _entries(key)
    spared = _current_digest(keep)
    ended = 0
    dropped = []
    for digest in entries:
        if digest == spared:
            continue
        if _DIGEST_RE.fullmatch(digest):
            ended += (yield (scripts.DEL, config.prefix + digest)) == 1
        dropped.append(digest)
    if dropped:
        yield (scripts.HDEL, key, *dropped)
    return ended


def get_sessions(user: User, current: SessionBase | str | None = None) -> list[UserSession]:
    """The user's live sessions, most recently seen first.

    ``current`` (a session, e.g. ``request.session``, or a session key) marks
    the one that is ``current``.
    """
    result: list[UserSession] = run(_list(user, current))
    return result


async def aget_sessions(user: User, current: SessionBase | str | None = None) -> list[UserSession]:
    """The async twin of :func:`get_sessions`."""
    result: list[UserSession] = await arun(_list(user, current))
    return result


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
