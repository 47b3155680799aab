"""The per-user session index, as a layer of the store (its public API is ``users``).

Each user with a signed-in session has one Redis hash, ``<prefix>u:<hash of the
user id>``, with one field per session: the session's digest (its Redis key
without the prefix, and its public handle), valued
``A<last seen>|<until - last seen>|<last seen - created>|<ip>|<user agent>``
(format "A", compact: see "The entry's value" below).

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

import binascii
import functools
import hashlib
import ipaddress
import json
import logging
import re
import time
import urllib.parse
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


# The entry's value ---------------------------------------------------------------
#
# Format "A" (this release): ``A<last seen>|<until - last seen>|<last seen - created>|<ip>|<ua>``,
# numbers in base 36 (ms), so that a typical entry stays under Redis's
# ``hash-max-listpack-value`` (64 bytes) and the user's hash stays a listpack:
# a longer value turns the whole hash into a hashtable (446 B instead of 180 B
# for one entry on Redis 7). Earlier builds wrote
# ``<until>|<last seen>|<created>|<JSON {"ip", "ua"}>`` (decimal ms): still read,
# and a tail in JSON is kept as it is.
FORMAT = "A"
# The tail's text is percent-escaped (printable ASCII but ``%`` and ``|``), then
# the commonest user-agent substrings become one control character each. The
# table is part of format "A": never change it, add a format instead.
_UA_TOKENS = (
    "Mozilla/5.0 (",
    "Windows NT 10.0; Win64; x64",
    ") AppleWebKit/537.36 (KHTML, like Gecko) ",
    " Safari/537.36",
    "Chrome/",
    "Macintosh; Intel Mac OS X ",
    "iPhone; CPU iPhone OS ",
    " like Mac OS X",
    "Mobile/",
    "Gecko/20100101 Firefox/",
    ") AppleWebKit/605.1.15 (KHTML, like Gecko) ",
    "Version/",
    " Safari/605.1.15",
    "X11; Linux x86_64",
    "Linux; Android ",
    " Mobile Safari/537.36",
    "; rv:",
    ".0.0.0",
    " Edg/",
    "; K",
    "iPad; CPU OS ",
    "X11; Ubuntu; Linux x86_64",
    " OPR/",
    "CriOS/",
    "FxiOS/",
    "SamsungBrowser/",
    "Windows NT ",
    "10_15_7",
    " Mobile/15E148",
    " Safari/604.1",
    ".0) Gecko/20100101 Firefox/",
    "10.15",
)
# The control characters, which the escaping never leaves in the text.
_TOKEN_CHARS = (*(chr(n) for n in range(1, 32)), "\x7f")
_TOKEN_OF = dict(zip(_UA_TOKENS, _TOKEN_CHARS, strict=True))
_TOKENS_RE = re.compile("|".join(re.escape(t) for t in sorted(_UA_TOKENS, key=len, reverse=True)))
_UNTOKEN = str.maketrans(dict(zip(_TOKEN_CHARS, _UA_TOKENS, strict=True)))
_SAFE = "".join(chr(n) for n in range(0x20, 0x7F) if chr(n) not in "%|")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
#: The last millisecond a datetime holds (9999-12-31): later stamps are garbage.
MAX_MS = 253_402_300_799_999
# IPv4 and IPv6 in their canonical form go packed (base64); anything else escaped.
_IP4, _IP6, _IP_TEXT = "4", "6", "="


def _b36(n: int) -> str:
    if n < 0:
        return "-" + _b36(-n)
    digits = ""
    while True:
        n, r = divmod(n, 36)
        digits = _B36[r] + digits
        if not n:
            return digits


def _escape(value: str) -> str:
    return urllib.parse.quote(value, safe=_SAFE, errors="surrogatepass")


def _unescape(value: str) -> str | None:
    if "%" not in value:  # the common case
        return value or None
    try:
        return urllib.parse.unquote(value, errors="surrogatepass")
    except UnicodeDecodeError:  # not one of ours
        return None


def _pack_ip(ip: str) -> str:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        address = None
    # Only what unpacks to the very same text (no zone, no other spelling).
    if address is not None and str(ipaddress.ip_address(address.packed)) == ip:
        tag = _IP4 if address.version == 4 else _IP6
        return tag + binascii.b2a_base64(address.packed, newline=False).decode().rstrip("=")
    return _IP_TEXT + _escape(ip)


def _unpack_ip(value: str) -> str | None:
    tag, body = value[:1], value[1:]
    if tag == _IP_TEXT:
        return _unescape(body)
    try:
        packed = binascii.a2b_base64(body + "=" * (-len(body) % 4))
    except ValueError:  # binascii.Error
        return None
    if tag == _IP4 and len(packed) == 4:
        return ".".join(map(str, packed))
    if tag == _IP6 and len(packed) == 16:
        return str(ipaddress.IPv6Address(packed))
    return None


def encode_meta(ip: str | None, user_agent: str | None) -> str:
    """The entry's tail: ``<ip>|<user agent>``, each empty when unknown."""
    packed_ip = _pack_ip(ip) if ip else ""
    agent = _TOKENS_RE.sub(lambda m: _TOKEN_OF[m[0]], _escape(user_agent)) if user_agent else ""
    return f"{packed_ip}|{agent}"


def encode_entry(until: int, last_seen: int, created: int, meta: str) -> str:
    """The value of an entry (``meta`` from :func:`encode_meta`)."""
    return f"{numbers_of(until, last_seen, created)}{meta}"


def numbers_of(until: int, last_seen: int, created: int) -> str:
    return f"{FORMAT}{_b36(last_seen)}|{_b36(until - last_seen)}|{_b36(last_seen - created)}|"


@dataclass(frozen=True)
class Entry:
    until: int
    last_seen: int
    created: int
    ip: str | None
    user_agent: str | None


_ENTRY_A_RE = re.compile(
    r"A([0-9a-z]{1,11})\|(-?[0-9a-z]{1,11})\|(-?[0-9a-z]{1,11})\|(.*)", re.DOTALL
)
_ENTRY_OLD_RE = re.compile(r"(\d{1,16})\|(\d{1,16})\|(\d{1,16})\|(.*)", re.DOTALL)


def decode_entry(value: str) -> Entry | None:
    """An entry of either format; None when it is not one (to be pruned).

    A tail that does not decode reads as no IP and no user agent."""
    if match := _ENTRY_A_RE.fullmatch(value):
        last_seen = int(match[1], 36)
        until, created = last_seen + int(match[2], 36), last_seen - int(match[3], 36)
        tail = match[4]
    elif match := _ENTRY_OLD_RE.fullmatch(value):
        until, last_seen, created = int(match[1]), int(match[2]), int(match[3])
        tail = match[4]
    else:
        return None
    if tail.startswith("{"):  # the earlier format's JSON, kept by a refresh
        ip, agent = _json_meta(tail)
    else:
        packed_ip, _, agent_text = tail.partition("|")
        ip = _unpack_ip(packed_ip)
        agent = _unescape(agent_text.translate(_UNTOKEN))
    if not all(0 <= ms <= MAX_MS for ms in (until, last_seen, created)):
        return None
    return Entry(until, last_seen, created, ip, agent)


def _json_meta(tail: str) -> tuple[str | None, str | None]:
    try:
        meta = json.loads(tail)  # an object, as it starts with "{"
    except ValueError:
        return None, None
    ip, agent = meta.get("ip"), meta.get("ua")
    return (
        ip if isinstance(ip, str) and ip else None,
        agent if isinstance(agent, str) and agent else None,
    )


def _stamp_for(marker: Any, uid: str) -> bool:
    """Whether ``marker`` (the raw ``MARKER`` value) is a stamp of ours for ``uid``:
    marker_of()'s rule, without building its tuple."""
    return (
        type(marker) is list
        and len(marker) == 4
        and marker[0] == uid
        and type(marker[1]) is int
        and type(marker[2]) is int
        and type(marker[3]) is int
    )


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
            numbers_of(until, now, created),
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
        """The request's IP and user agent (:func:`encode_meta`); "" keeps the stored ones."""
        ref = store.scratch.get(REQUEST)
        request: HttpRequest | None = ref() if ref is not None else None
        if request is None:
            return ""
        ip = agent = None
        if self.config.client_ip is not None:
            found = client_ip_function(self.config.client_ip)(request)
            ip = str(found)[:IP_LENGTH] if found else None
        if self.config.store_user_agent:
            found = request.META.get("HTTP_USER_AGENT")
            agent = str(found)[:USER_AGENT_LENGTH] if found else None
        return encode_meta(ip, agent)

    # Hooks ----------------------------------------------------------------------

    def loaded(
        self, store: hooks.Store, session_key: str, data: dict[str, Any]
    ) -> Steps[None] | None:
        uid = data.get(AUTH_USER_KEY)
        if uid is None:  # the common case: an anonymous session
            return None
        if type(uid) is not str and (uid := signed_in(data)) is None:
            return None
        store.scratch.setdefault(OWNERS, {})[session_key] = uid  # _owners(), on every load
        marker: Any = data.get(MARKER)
        if _stamp_for(marker, uid) and now_ms() - marker[2] < self.interval_ms:
            return None  # seen within the interval: nothing to write
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
        uid = data.get(AUTH_USER_KEY)
        if uid is not None and type(uid) is not str:  # signed_in()'s call for the rest
            uid = signed_in(data)
        if uid is None:
            return unindex(store, self.config, session_key, data, write)
        marker: Any = data.get(MARKER)
        ttl = store.ttl_ms(data)
        if ttl <= 0:  # the save ends the session: the end path drops the entry
            return write
        if (
            must_create
            or not _stamp_for(marker, uid)
            or (now := now_ms()) - marker[2] >= self.interval_ms
            or now + ttl > marker[3]
        ):
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
        put = self._put(
            store,
            session_key,
            uid,
            data,
            ttl,
            previous=store.digest_of(previous) if must_create and previous else "",
        )
        try:
            # The entry and the write's first command in one round trip, the
            # entry first: Redis runs them in order. Should the entry fail and
            # the write not, the save fails all the same: a new key is never
            # handed out without its entry.
            (_, _, evicted), _ = yield from hooks.together(put, write)
        except (CreateError, UpdateError):
            # The session was not written (a key collision, or it was ended
            # meanwhile): take back the entry rather than leave it stale.
            yield (scripts.HDEL, index_key(self.config.prefix, uid), store.digest_of(session_key))
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
