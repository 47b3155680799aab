"""The per-user session index, as a layer of the store (its public API is ``users``).

Each user with a signed-in session has one Redis hash, ``<prefix>u:<hash of the
user id>``, with one field per session: the session's digest (its Redis key
without the prefix, and its public handle), valued
``<until ms>|<last seen ms>|<created ms>|<{"ip": ..., "ua": ...}>``.

The index is kept on the write path, never by keyspace notifications:

- a save of a signed-in session that is new (login, ``cycle_key``, an import),
  not yet indexed, or whose TTL outgrows its entry first upserts its entry
  (``scripts.INDEX_PUT``), then writes the session; a crash in between leaves
  an entry without a session, never the reverse;
- a load of a signed-in session whose ``last_seen`` is older than
  ``activity_interval`` upserts its entry and rewrites its stamp in place
  (same version, same TTL, not ``modified``): the request stays read-only;
- the one end path (every way a session ends) deletes the key, then the entry;
- reading prunes entries whose session is gone (one ``PTTL`` each), and every
  upsert drops entries past their ``until``; the hash's TTL always covers its
  newest session, so it disappears with the last of them.

What decides the ``last_seen`` refresh travels in the session itself (the
``_drs_user_index`` key: user id, created, last seen, until), so an ordinary
request costs no extra command.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django.utils.module_loading import import_string

from django_redis_sessions import conf, hooks, scripts
from django_redis_sessions.hooks import Steps

logger = logging.getLogger("django_redis_sessions")

#: Django's session key for the signed-in user's id (django.contrib.auth.SESSION_KEY).
AUTH_USER_KEY = "_auth_user_id"
#: Where a session keeps its index stamp: [user id, created ms, last seen ms, until ms].
MARKER = "_drs_user_index"
#: Clocks of app servers may disagree by this much (ms): entries and the index
#: outlive their session by it.
SLACK_MS = 60_000
USER_AGENT_LENGTH = 256
IP_LENGTH = 64
DIGEST_RE = re.compile(r"[0-9a-f]{32}")
# What this layer keeps in a store's scratch space.
REQUEST = "users.request"  # a weak reference to the request, for IP and user agent
OWNERS = "users.owners"  # {session key: user id} of the sessions this store indexed

DEFAULT_ACTIVITY_INTERVAL = 60
DEFAULT_CLIENT_IP = "django_redis_sessions.users.remote_addr"
DEFAULT_MAX_SESSIONS_PER_USER = 100

#: The SESSION_REDIS keys this feature owns.
KEYS = frozenset(
    {"user_index", "activity_interval", "client_ip", "store_user_agent", "max_sessions_per_user"}
)


@dataclass(frozen=True)
class Config:
    """On/off, how often last_seen moves (seconds), where the IP comes from (None:
    not stored), whether the user agent is stored, how many sessions a user keeps."""

    enabled: bool = True
    activity_interval: int = DEFAULT_ACTIVITY_INTERVAL
    client_ip: str | None = DEFAULT_CLIENT_IP
    store_user_agent: bool = True
    max_sessions_per_user: int = DEFAULT_MAX_SESSIONS_PER_USER
    prefix: str = conf.DEFAULT_PREFIX


def configure(core: conf.Config) -> Config:
    raw = core.features
    return Config(
        enabled=conf.flag(raw, "user_index", True),
        activity_interval=conf.non_negative_int(
            raw, "activity_interval", DEFAULT_ACTIVITY_INTERVAL
        ),
        client_ip=conf.dotted_path({"client_ip": DEFAULT_CLIENT_IP, **raw}, "client_ip"),
        store_user_agent=conf.flag(raw, "store_user_agent", True),
        max_sessions_per_user=conf.positive_int(
            {"max_sessions_per_user": DEFAULT_MAX_SESSIONS_PER_USER, **raw},
            "max_sessions_per_user",
            optional=False,
        ),
        prefix=core.prefix,
    )


def index_key(prefix: str, uid: str) -> str:
    digest = hashlib.blake2b(
        uid.encode("utf-8", "surrogatepass"), digest_size=16, person=b"drs-user-index"
    ).hexdigest()
    return f"{prefix}u:{digest}"


@functools.cache
def client_ip_function(path: str) -> Callable[[HttpRequest], Any]:
    try:
        function: Callable[[HttpRequest], Any] = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f'{conf.SETTING}["client_ip"]: cannot import {path!r} ({exc}).'
        ) from exc
    return function


def now_ms() -> int:
    return int(time.time() * 1000)


def text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def signed_in(data: dict[str, Any]) -> str | None:
    """The id of the user signed in to the session, if any (Django stores a string)."""
    uid = data.get(AUTH_USER_KEY)
    if isinstance(uid, str) or (isinstance(uid, int) and not isinstance(uid, bool)):
        return str(uid)
    return None


def marker_of(data: dict[str, Any]) -> tuple[str, int, int, int] | None:
    """The session's index stamp, or None when absent or not one of ours."""
    value = data.get(MARKER)
    if isinstance(value, list) and len(value) == 4:
        uid, created, seen, until = value
        if isinstance(uid, str) and type(created) is type(seen) is type(until) is int:
            return uid, created, seen, until
    return None


def _owners(store: hooks.Store) -> dict[str, str]:
    owners: dict[str, str] = store.scratch.setdefault(OWNERS, {})
    return owners


class Index(hooks.Layer):
    """The index's part of every load, save and end."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.interval_ms = config.activity_interval * 1000

    # Steps --------------------------------------------------------------------

    def _put(
        self,
        store: hooks.Store,
        session_key: str,
        uid: str,
        data: dict[str, Any],
        ttl: int,
        previous: str = "",
    ) -> Steps[tuple[str, str, list[Any]]]:
        """Upsert the entry and stamp ``data``; returns (index key, digest, evicted)."""
        marker = marker_of(data)
        now = now_ms()
        created = marker[1] if marker is not None and marker[0] == uid else now
        until = now + ttl + self.interval_ms
        data[MARKER] = [uid, created, now, until]
        key = index_key(self.config.prefix, uid)
        digest = store.digest_of(session_key)
        evicted = yield (
            scripts.EVALSHA,
            scripts.INDEX_PUT,
            key,
            digest,
            f"{until}|{now}|{created}|",
            now,
            until - now + SLACK_MS,
            self.config.max_sessions_per_user,
            SLACK_MS,
            self._meta(store),
            previous,
        )
        if not isinstance(evicted, list):  # not a hash: someone else's key under our prefix
            logger.warning("Session index %s is not a hash; not indexing %s", key, digest)
            evicted = []
        return key, digest, evicted

    def _evict(self, store: hooks.Store, uid: str, evicted: list[Any]) -> Steps[None]:
        for other in evicted:
            digest = text(other)
            if DIGEST_RE.fullmatch(digest):  # past the per-user cap: ended
                yield from store.end_steps(hooks.Ending(digest, hooks.EVICTED, uid=uid))

    def _meta(self, store: hooks.Store) -> str:
        """IP and user agent of the request at hand, as JSON; "" keeps the stored ones."""
        ref = store.scratch.get(REQUEST)
        request: HttpRequest | None = ref() if ref is not None else None
        if request is None:
            return ""
        meta: dict[str, str] = {}
        if self.config.client_ip is not None:
            ip = client_ip_function(self.config.client_ip)(request)
            if ip:
                meta["ip"] = str(ip)[:IP_LENGTH]
        if self.config.store_user_agent:
            agent = request.META.get("HTTP_USER_AGENT")
            if agent:
                meta["ua"] = str(agent)[:USER_AGENT_LENGTH]
        return json.dumps(meta, separators=(",", ":"), ensure_ascii=True)

    def _due(self, marker: tuple[str, int, int, int] | None, uid: str, now: int) -> bool:
        return marker is None or marker[0] != uid or now - marker[2] >= self.interval_ms

    # Hooks ----------------------------------------------------------------------

    def loaded(
        self, store: hooks.Store, session_key: str, data: dict[str, Any]
    ) -> Steps[None] | None:
        uid = signed_in(data) if AUTH_USER_KEY in data else None
        if uid is None:  # the common case: an anonymous session
            return None
        _owners(store)[session_key] = uid
        if not self._due(marker_of(data), uid, now_ms()):
            return None
        return self._stamp(store, session_key, uid, data)

    def _stamp(
        self, store: hooks.Store, session_key: str, uid: str, data: dict[str, Any]
    ) -> Steps[None]:
        # last_seen moves: entry first, then the stamp, in place (no new TTL, no cookie).
        key, digest, evicted = yield from self._put(
            store, session_key, uid, data, store.ttl_ms(data)
        )
        if not (yield from store.restamp(data)):  # ended meanwhile: take the entry back
            yield (scripts.HDEL, key, digest)
            return None
        yield from self._evict(store, uid, evicted)
        return None

    def around_save(
        self,
        store: hooks.Store,
        session_key: str,
        data: dict[str, Any],
        must_create: bool,
        write: Steps[None],
    ) -> Steps[None]:
        uid = signed_in(data) if AUTH_USER_KEY in data else None
        if uid is None:
            return unindex(store, self.config, session_key, data, write)
        marker = marker_of(data)
        ttl = store.ttl_ms(data)
        if ttl <= 0:  # the save ends the session: the end path drops the entry
            return write
        now = now_ms()
        if must_create or self._due(marker, uid, now) or now + ttl > marker[3]:  # type: ignore[index]
            return self._indexed(store, session_key, uid, data, must_create, ttl, write)
        return write

    def _indexed(
        self,
        store: hooks.Store,
        session_key: str,
        uid: str,
        data: dict[str, Any],
        must_create: bool,
        ttl: int,
        write: Steps[None],
    ) -> Steps[None]:
        owners: dict[str, str] = store.scratch.get(OWNERS) or {}
        previous = next((k for k, u in owners.items() if u == uid and k != session_key), None)
        key, digest, evicted = yield from self._put(
            store,
            session_key,
            uid,
            data,
            ttl,
            previous=store.digest_of(previous) if must_create and previous else "",
        )
        try:
            yield from write
        except (CreateError, UpdateError):
            # The session was not written (a key collision, or it was ended
            # meanwhile): take back the entry rather than leave it stale.
            yield (scripts.HDEL, key, digest)
            raise
        _owners(store)[session_key] = uid
        yield from self._evict(store, uid, evicted)
        return None

    def wants_data(self, ending: hooks.Ending) -> bool:
        return ending.uid is None

    def ended(self, store: hooks.Store, ending: hooks.Ending) -> Steps[None]:
        uid = ending.uid
        if ending.session_key is not None:
            owner = store.scratch.get(OWNERS, {}).pop(ending.session_key, None)
            uid = uid or owner
        if uid is None and ending.data is not None:
            marker = marker_of(ending.data)
            uid = signed_in(ending.data) or (marker[0] if marker is not None else None)
        if uid is not None:
            yield (scripts.HDEL, index_key(self.config.prefix, uid), ending.digest)
        return None


def unindex(
    store: hooks.Store,
    config: Config,
    session_key: str,
    data: dict[str, Any],
    write: Steps[None],
) -> Steps[None]:
    """A save of a session that is no longer indexed: its entry goes, if it had one."""
    owners: dict[str, str] | None = store.scratch.get(OWNERS) if store.has_scratch else None
    owner = owners.get(session_key) if owners else None
    if owner is None and MARKER not in data:  # the common case: an anonymous session
        return write
    # Signed out without a flush (e.g. clear() and save), or the index was
    # switched off: the entry goes.
    marker = marker_of(data)
    data.pop(MARKER, None)  # before the write runs: it is not stored again
    owner = owner or (marker[0] if marker else None)
    return write if owner is None else _dropped(store, config, session_key, owner, write)


def _dropped(
    store: hooks.Store, config: Config, session_key: str, owner: str, write: Steps[None]
) -> Steps[None]:
    yield from write
    _owners(store).pop(session_key, None)
    yield (scripts.HDEL, index_key(config.prefix, owner), store.digest_of(session_key))
    return None


class Unindexed(hooks.Layer):
    """The index switched off: a save of a session still stamped drops its entry."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def around_save(
        self,
        store: hooks.Store,
        session_key: str,
        data: dict[str, Any],
        must_create: bool,
        write: Steps[None],
    ) -> Steps[None]:
        return unindex(store, self.config, session_key, data, write)


Entries = dict[str, str]


def entries(key: str) -> Steps[Entries]:
    """The index hash as {digest: value}; a key that is not a hash reads as empty."""
    reply = yield (scripts.HGETALL, key)
    if isinstance(reply, Exception):
        logger.warning("Session index %s is not a hash; ignoring it", key)
        return {}
    return {text(field): text(value) for field, value in reply.items()}
