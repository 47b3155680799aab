"""Moving live sessions from the engine a site used before into ours.

``SESSION_REDIS["migrate_from"]`` names the previous ``SESSION_ENGINE``. While it
is set:

- a load that misses in Redis reads the old store once and, if the session is
  live there, hands it to the store, which writes it like any new session
  (``SET NX``, its remaining lifetime as a cap, the timeouts' cap, the index);
  a cookie that is not one of our 32-character keys is imported under a fresh
  key, and the old record is then deleted (also under its own key, unless it
  is kept as the way back: ``migrate_write_back``);
- every end of a session (the store's one end path: logout, rotation, another
  device, the admin, eviction, a timeout) removes it from the old store when
  its key is known, and leaves a tombstone at our key for as long as the old
  store could still hold it, so that neither an import racing the end nor a
  later one brings the session back;
- with ``SESSION_REDIS["migrate_write_back"]``, every save is also written to the
  old store, so that switching ``SESSION_ENGINE`` back logs nobody out;
- ``clear_expired`` (``manage.py clearsessions``) prunes the old store too;
- ``manage.py migrate_sessions`` copies every live session in bulk.

A source (``Source`` below) knows one old store: how to read one session by its
cookie, list them all, delete one and write one back. Sources do blocking I/O;
the storage steps call them through ``driver.CALL``, which the async driver
runs in a thread (the ``db`` engine of Django 4.2 has no async API).
"""

from __future__ import annotations

import enum
import logging
import math
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import import_module
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from django.apps import apps
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.core import signing
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.utils import timezone
from django.utils.module_loading import import_string
from redis.backoff import NoBackoff
from redis.retry import Retry

from django_redis_sessions import codec, conf, driver, hooks, scripts, signals
from django_redis_sessions.exceptions import SessionUnavailable
from django_redis_sessions.hooks import Steps

T = TypeVar("T")
logger = logging.getLogger("django_redis_sessions.migration")
suspicious_logger = logging.getLogger("django.security.SuspiciousSession")

DB = "django.contrib.sessions.backends.db"
CACHED_DB = "django.contrib.sessions.backends.cached_db"
CACHE = "django.contrib.sessions.backends.cache"
FILE = "django.contrib.sessions.backends.file"
SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"
DRS = "redis_sessions.session"
ENGINES = (DB, CACHED_DB, CACHE, FILE, SIGNED_COOKIES, DRS)
# Where saves can be mirrored for a way back: every engine with a server-side store.
WRITE_BACK_ENGINES = (DB, CACHED_DB, CACHE, FILE, DRS)

# Every built-in store class, and 0.6.2's, is named SessionStore: one salt.
SESSION_SALT = "django.contrib.sessions.SessionStore"
SIGNED_COOKIES_SALT = "django.contrib.sessions.backends.signed_cookies"
CACHE_KEY_PREFIX = "django.contrib.sessions.cache"
# signing.dumps() output: [.]base64:base62 timestamp:43-character HMAC-SHA256.
SIGNED_RE = re.compile(r"\.?[A-Za-z0-9_-]+:[0-9A-Za-z]+:[A-Za-z0-9_-]{43}")
# Keys this engine generates; any other cookie is imported under a fresh key.
OWN_KEY_RE = re.compile(r"[a-z0-9]{32}")
# The longest cookie looked up in a keyed store (db allows 40; 0.6.2 any length).
MAX_KEY_LENGTH = 256
DB_KEY_LENGTH = 40
FILE_KEY_RE = re.compile(r"[a-z0-9]+")

# Left at our key by an end while migrating: an import that read the old store
# before the end then fails its SET NX, and so does any later one while the old
# store may still hold the session (its expiry age); never less than this.
TOMBSTONE = codec.TOMBSTONE
TOMBSTONE_TTL_MS = 10 * 60 * 1000

# 0.6.2's SESSION_REDIS keys (redis_sessions/settings.py) and their defaults.
DRS_DEFAULTS: dict[str, Any] = {
    "host": "localhost",
    "port": 6379,
    "socket_timeout": 0.1,
    "retry_on_timeout": False,
    "db": 0,
    "prefix": "",
    "password": None,
    "unix_domain_socket_path": None,
    "url": None,
    "POOL": None,
    "pool": None,
}

# A read from an old store that fails outright: the request gets our outage
# policy (a 503, or an empty read-only session), never a logout.
SOURCE_ERRORS: tuple[type[BaseException], ...] = (DatabaseError, OSError, redis.RedisError)


class Outcome(enum.Enum):
    COPIED = "copied"
    PRESENT = "already there"
    EXPIRED = "expired"
    BAD_SIGNATURE = "bad signature"
    NOT_JSON = "not JSON-able"
    INVALID_KEY = "invalid key"
    UNREADABLE = "unreadable"
    MISSING = "missing"


@dataclass(frozen=True)
class Record:
    """What an old store holds for one cookie: the data and its remaining lifetime."""

    outcome: Outcome
    data: dict[str, Any] | None = None
    ttl_ms: int = 0
    detail: str = ""


MISSING = Record(Outcome.MISSING)


def _skip(outcome: Outcome, detail: str = "") -> Record:
    return Record(outcome, detail=detail)


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)


def serializer() -> Any:
    return import_string(settings.SESSION_SERIALIZER)


def unsign(value: str, salt: str, max_age: int | None = None) -> Any:
    """The dict inside a signed session value, or the Record saying why not.

    Not ``SessionBase.decode()``: it returns ``{}`` for a bad signature as for an
    empty session, and importing that would log the user out without a word.
    """
    if not SIGNED_RE.fullmatch(value):
        return _skip(Outcome.UNREADABLE, "not a signed session value")
    try:
        data = signing.loads(value, salt=salt, serializer=serializer(), max_age=max_age)
    except signing.SignatureExpired:
        return _skip(Outcome.EXPIRED)
    except signing.BadSignature:
        return _skip(
            Outcome.BAD_SIGNATURE,
            "signed with another SECRET_KEY (add it to SECRET_KEY_FALLBACKS) or salt",
        )
    except Exception as exc:  # a serializer error: what the value holds is unreadable
        return _skip(Outcome.UNREADABLE, f"{type(exc).__name__}: {exc}")
    return data  # found() checks that it is a dict


def found(data: Any, ttl_ms: int) -> Record:
    """A live session, if JSON holds it exactly; never imported approximately.

    Pickled sessions (the cache engine; PickleSerializer on Django 4.2) can hold
    what JSON cannot (datetimes, sets, model instances) or would change
    (tuples become lists, int keys strings): those are not imported.
    """
    if not isinstance(data, dict):
        return _skip(Outcome.UNREADABLE, f"holds a {type(data).__name__}, not a dict")
    if ttl_ms <= 0:
        return _skip(Outcome.EXPIRED)
    try:
        same = codec.loads(codec.dumps(data)) == data
    except (TypeError, ValueError) as exc:
        return _skip(Outcome.NOT_JSON, str(exc))
    if not same:
        return _skip(Outcome.NOT_JSON, "JSON would change its values (tuples, non-str keys)")
    return Record(Outcome.COPIED, data, min(ttl_ms, MAX_TTL_MS))


MAX_TTL_MS = 100 * 365 * 24 * 3600 * 1000


# Sources ----------------------------------------------------------------------------


class Source:
    """One old store. Methods block; they raise only SOURCE_ERRORS on failure."""

    engine: str
    #: What ``manage.py migrate_sessions`` prints before it starts.
    description: str = ""

    def read(self, cookie: str) -> Record:
        raise NotImplementedError

    def keys(self, batch_size: int) -> Iterator[list[str]]:
        """Every stored session's cookie, in batches; never all in memory at once."""
        raise NotImplementedError

    def records(self, batch_size: int) -> Iterator[list[tuple[str, Record]]]:
        """Every stored session, read, in batches (``manage.py migrate_sessions``)."""
        for batch in self.keys(batch_size):
            yield [(key, self.read(key)) for key in batch]

    def count(self) -> int | None:
        """How many sessions ``records`` will go through, when that is cheap to know."""
        return None

    def delete(self, cookie: str) -> None:
        self._old_store(cookie).delete(cookie)

    def write(self, session_key: str, data: dict[str, Any], ttl_ms: int) -> None:
        """Store ``data`` the way the old engine would have saved it.

        ``ttl_ms``: the lifetime ours just got (a timeout's cap included); the old
        copy expires no later, so it can never bring back a session ours let go.
        """
        old = self._old_store(session_key)
        old._session_cache = dict(data)  # type: ignore[attr-defined]
        _expire_in(old, ttl_ms)
        if old.get_expiry_age() <= 0:
            old.delete(session_key)
            return
        try:
            old.save()
        except UpdateError:  # not there yet (a session born in Redis)
            old.save(must_create=True)

    def clear_expired(self) -> None:
        """Remove expired sessions from the old store, if it keeps them."""

    def expired_count(self) -> int:
        return 0

    def close(self) -> None:
        """Release connections the source opened itself."""

    def _old_store(self, session_key: str) -> SessionBase:
        store: SessionBase = import_module(self.engine).SessionStore(session_key)
        return store


class DbSource(Source):
    """``db`` and ``cached_db``: the ``django_session`` row is authoritative."""

    def __init__(self, engine: str) -> None:
        if not apps.is_installed("django.contrib.sessions"):
            raise _fail(
                "migrate_from",
                f"{engine!r} needs 'django.contrib.sessions' in INSTALLED_APPS (its table).",
            )
        from django.contrib.sessions.models import Session

        self.engine = engine
        self.model = Session
        self.description = f"table {Session._meta.db_table!r} ({engine})"

    def read(self, cookie: str) -> Record:
        if len(cookie) > DB_KEY_LENGTH:
            return _skip(Outcome.INVALID_KEY)
        row = self.model.objects.filter(session_key=cookie).values_list(
            "session_data", "expire_date"
        )[:1]
        rows = list(row)
        if not rows:
            return MISSING
        return self._record(*rows[0])

    def _record(self, session_data: str, expire_date: datetime) -> Record:
        remaining = (expire_date - timezone.now()).total_seconds()
        if remaining <= 0:
            return _skip(Outcome.EXPIRED)
        data = unsign(session_data, SESSION_SALT)
        if isinstance(data, Record):
            return data
        return found(data, _ms(remaining))

    def records(self, batch_size: int) -> Iterator[list[tuple[str, Record]]]:
        # One streamed query (a server-side cursor where the database has them),
        # not one per session.
        live = (
            self.model.objects.filter(expire_date__gt=timezone.now())
            .values_list("session_key", "session_data", "expire_date")
            .iterator(chunk_size=batch_size)
        )
        records = ((key, self._record(data, expires)) for key, data, expires in live)
        yield from _batches(records, batch_size)

    def count(self) -> int:
        return self.model.objects.filter(expire_date__gt=timezone.now()).count()

    def expired_count(self) -> int:
        return self.model.objects.filter(expire_date__lte=timezone.now()).count()

    def clear_expired(self) -> None:
        import_module(self.engine).SessionStore.clear_expired()


class CacheSource(Source):
    """``cache``: the dict the cache backend pickled, under ``KEY_PREFIX + key``.

    Reading it unpickles whatever the cache holds: anyone who can write to that
    cache can run code here, exactly as with the cache engine itself.
    """

    engine = CACHE

    def __init__(self) -> None:
        self.alias = settings.SESSION_CACHE_ALIAS
        self.cache: Any = caches[self.alias]
        self.description = f"cache {self.alias!r} ({type(self.cache).__module__})"

    def read(self, cookie: str) -> Record:
        if len(cookie) > MAX_KEY_LENGTH:
            return _skip(Outcome.INVALID_KEY)
        key = CACHE_KEY_PREFIX + cookie
        try:
            data = self.cache.get(key)
        except SOURCE_ERRORS:
            raise
        except Exception as exc:  # an unpicklable value
            return _skip(Outcome.UNREADABLE, f"{type(exc).__name__}: {exc}")
        if data is None:
            return MISSING
        ttl_ms = self._pttl(key, data)
        if ttl_ms == -2:  # expired between the two reads
            return MISSING
        return found(data, ttl_ms)

    def _pttl(self, key: str, data: Any) -> int:
        """The remaining lifetime, exact on Redis caches, else from the session itself."""
        cache = self.cache
        if hasattr(cache, "pttl"):  # django-redis: None when the key has no expiry
            ttl = cache.pttl(key)
            return _ms(_cookie_age()) if ttl is None else int(ttl)
        client = self._redis_client(write=False)
        if client is not None:
            return int(client.pttl(cache.make_and_validate_key(key)))
        # Other caches do not tell: the session's own expiry, else the cookie age.
        expiry = data.get("_session_expiry") if isinstance(data, dict) else None
        return _ms(SessionBase().get_expiry_age(expiry=expiry) if expiry else _cookie_age())

    def _redis_client(self, write: bool) -> redis.Redis | None:
        from django.core.cache.backends.redis import RedisCache

        if isinstance(self.cache, RedisCache):
            client: redis.Redis = self.cache._cache.get_client(write=write)
            return client
        return None

    def keys(self, batch_size: int) -> Iterator[list[str]]:
        cache = self.cache
        if hasattr(cache, "iter_keys"):  # django-redis: SCAN with its own key function
            names = cache.iter_keys(_glob_escape(CACHE_KEY_PREFIX) + "*", itersize=batch_size)
            yield from _batches((name.removeprefix(CACHE_KEY_PREFIX) for name in names), batch_size)
            return
        client = self._redis_client(write=True)
        if client is None:
            raise ImproperlyConfigured(
                f"Cache {self.alias!r} ({type(cache).__name__}) cannot list its keys: only "
                "Redis caches can be copied in bulk. Sessions in it still move lazily, "
                "on each user's next request."
            )
        made = cache.make_key(CACHE_KEY_PREFIX)
        names = client.scan_iter(match=_glob_escape(made) + "*", count=batch_size)
        yield from _batches((_text(name).removeprefix(made) for name in names), batch_size)


class FileSource(Source):
    """``file``: ``<SESSION_FILE_PATH>/<SESSION_COOKIE_NAME><key>``, read directly.

    Not through the file engine's load(), which deletes and re-creates files.
    """

    engine = FILE

    def __init__(self) -> None:
        self.path: str = getattr(settings, "SESSION_FILE_PATH", None) or tempfile.gettempdir()
        self.name_prefix = settings.SESSION_COOKIE_NAME
        self.description = f"files {os.path.join(self.path, self.name_prefix)}*"

    def read(self, cookie: str) -> Record:
        if len(cookie) > MAX_KEY_LENGTH or not FILE_KEY_RE.fullmatch(cookie):
            return _skip(Outcome.INVALID_KEY)
        path = os.path.join(self.path, self.name_prefix + cookie)
        try:
            with open(path, "rb") as file:
                raw = file.read()
                modified = os.fstat(file.fileno()).st_mtime
        except FileNotFoundError:
            return MISSING
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return _skip(Outcome.UNREADABLE, "not ASCII")
        data = unsign(text, SESSION_SALT)
        if isinstance(data, Record):
            return data
        return found(data, _ms(_file_remaining(data.get("_session_expiry"), modified)))

    def keys(self, batch_size: int) -> Iterator[list[str]]:
        pattern = re.compile(re.escape(self.name_prefix) + r"([a-z0-9]+)")
        with os.scandir(self.path) as entries:
            matches = (pattern.fullmatch(entry.name) for entry in entries)
            yield from _batches((m.group(1) for m in matches if m), batch_size)

    def delete(self, cookie: str) -> None:
        # The file engine raises on a key that cannot be a file name: none is stored.
        if len(cookie) <= MAX_KEY_LENGTH and FILE_KEY_RE.fullmatch(cookie):
            super().delete(cookie)

    def clear_expired(self) -> None:
        import_module(FILE).SessionStore.clear_expired()


def _expire_in(store: SessionBase, ttl_ms: int) -> None:
    """Make an old engine's store save with this lifetime (whole seconds, never more)."""
    seconds = max(0, ttl_ms // 1000)

    def age(**kwargs: Any) -> int:
        return seconds

    def date(**kwargs: Any) -> datetime:
        return timezone.now() + timedelta(seconds=seconds)

    store.get_expiry_age = age  # type: ignore[method-assign]
    store.get_expiry_date = date  # type: ignore[method-assign]


def _file_remaining(expiry: Any, modified: float) -> float:
    """Seconds left, as the file engine reckons them from the data and the mtime."""
    now = time.time()
    if isinstance(expiry, str):  # an ISO datetime set by set_expiry(datetime)
        try:
            when = datetime.fromisoformat(expiry)
        except ValueError:
            return 0
        if timezone.is_naive(when):
            when = timezone.make_aware(when, timezone.get_default_timezone())
        return (when - timezone.now()).total_seconds()
    if isinstance(expiry, (int, float)) and not isinstance(expiry, bool) and expiry:
        return modified + expiry - now  # N seconds from the last save
    return modified + _cookie_age() - now


class SignedCookieSource(Source):
    """``signed_cookies``: the cookie is the session; nothing is stored server-side."""

    engine = SIGNED_COOKIES
    description = "signed cookies (only lazily, as each browser comes back)"

    def read(self, cookie: str) -> Record:
        age = _cookie_age()
        data = unsign(cookie, SIGNED_COOKIES_SALT, max_age=age)
        if isinstance(data, Record):
            return data
        signed_at = signing.b62_decode(cookie.rsplit(":", 2)[1])
        return found(data, _ms(signed_at + age - time.time()))

    def keys(self, batch_size: int) -> Iterator[list[str]]:
        raise ImproperlyConfigured(
            "Signed-cookie sessions live in the browsers: there is nothing to copy in "
            "bulk. They move lazily, on each user's next request."
        )

    def delete(self, cookie: str) -> None:
        """A signed cookie cannot be revoked; the browser drops it on logout."""

    def write(  # pragma: no cover
        self, session_key: str, data: dict[str, Any], ttl_ms: int
    ) -> None:
        raise ImproperlyConfigured("signed_cookies has no store to write back to")


class DrsSource(Source):
    """django-redis-sessions 0.6.2: ``[prefix:]key`` holds the signed string, with a TTL."""

    engine = DRS

    def __init__(self, options: Mapping[str, Any], ours: conf.Config) -> None:
        self.options = {**DRS_DEFAULTS, **options}
        self.prefix: str = self.options["prefix"] or ""
        self.client = drs_client(self.options)
        maybe_ours = ours.topology == "sentinel" or _same_server(self.options, ours)
        self.own_prefix = ours.prefix if maybe_ours else None
        kwargs = self.client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        self.description = (
            f"Redis {where} db {kwargs.get('db', 0)}, keys "
            f"{(self.prefix + ':') if self.prefix else ''}<session key> (0.6.2)"
        )

    def redis_key(self, cookie: str) -> str:
        return f"{self.prefix}:{cookie}" if self.prefix else cookie

    def _foreign(self, cookie: str) -> bool:
        # One of our own keys (same server, no 0.6.2 prefix) is never a 0.6.2 session.
        name = self.redis_key(cookie)
        return self.own_prefix is not None and name.startswith(self.own_prefix)

    def read(self, cookie: str) -> Record:
        if len(cookie) > MAX_KEY_LENGTH or self._foreign(cookie):
            return _skip(Outcome.INVALID_KEY)
        key = self.redis_key(cookie)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            value, ttl_ms = pipe.execute()
        return self._record(value, ttl_ms)

    def _record(self, value: Any, ttl_ms: int) -> Record:
        if value is None or ttl_ms == -2:
            return MISSING
        try:
            text = value.decode("ascii")
        except (UnicodeDecodeError, AttributeError):
            return _skip(Outcome.UNREADABLE, "not ASCII")
        data = unsign(text, SESSION_SALT)
        if isinstance(data, Record):
            return data
        if ttl_ms == -1:  # 0.6.2 always set one; keep the session a cookie age
            ttl_ms = _ms(_cookie_age())
        return found(data, ttl_ms)

    def records(self, batch_size: int) -> Iterator[list[tuple[str, Record]]]:
        for batch in self.keys(batch_size):
            with self.client.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.get(self.redis_key(key))
                    pipe.pttl(self.redis_key(key))
                replies = pipe.execute()
            yield [
                (key, self._record(replies[2 * i], replies[2 * i + 1]))
                for i, key in enumerate(batch)
            ]

    def keys(self, batch_size: int) -> Iterator[list[str]]:
        match = (_glob_escape(self.prefix) + ":*") if self.prefix else "*"
        cut = len(self.prefix) + 1 if self.prefix else 0
        names = (_text(name) for name in self.client.scan_iter(match=match, count=batch_size))
        own = self.own_prefix
        keys = (name[cut:] for name in names if own is None or not name.startswith(own))
        yield from _batches(keys, batch_size)

    def delete(self, cookie: str) -> None:
        if len(cookie) > MAX_KEY_LENGTH or self._foreign(cookie):
            return
        # Only a value in 0.6.2's format is deleted (never someone else's key).
        self.client.eval(scripts.DELETE_SIGNED.source, 1, self.redis_key(cookie))

    def write(self, session_key: str, data: dict[str, Any], ttl_ms: int) -> None:
        old = SessionBase(session_key)
        old._session_cache = dict(data)  # type: ignore[attr-defined]
        _expire_in(old, ttl_ms)
        age = old.get_expiry_age()
        if age <= 0:  # 0.6.2's SETEX refuses it; the session is over anyway
            self.delete(session_key)
            return
        value = signing.dumps(data, salt=SESSION_SALT, serializer=serializer(), compress=True)
        self.client.set(self.redis_key(session_key), value, ex=age)

    def close(self) -> None:
        self.client.close()


def drs_client(options: Mapping[str, Any]) -> redis.Redis:
    """The connection 0.6.2 really made: url, else socket, else host (POOL was ignored)."""
    timeout = options["socket_timeout"]
    if options["url"]:
        return redis.Redis.from_url(options["url"], socket_timeout=timeout)
    # 0.6.2's retry_on_timeout (one retry after a timeout, else none) in redis-py's
    # current terms: its own argument of that name is deprecated.
    retry = Retry(
        NoBackoff(),
        1 if options["retry_on_timeout"] else 0,
        (redis.TimeoutError, socket.timeout),
    )
    if options["unix_domain_socket_path"]:
        return redis.Redis(
            unix_socket_path=options["unix_domain_socket_path"],
            socket_timeout=timeout,
            retry=retry,
            db=options["db"],
            password=options["password"],
        )
    if options["POOL"]:  # 0.6.2 read every pool member as localhost:6379, db 0
        return redis.Redis(host="localhost", port=6379, db=0, socket_timeout=timeout)
    return redis.Redis(
        host=options["host"],
        port=options["port"],
        socket_timeout=timeout,
        retry=retry,
        db=options["db"],
        password=options["password"],
    )


def _batches(items: Iterator[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _text(name: Any) -> str:
    return name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else str(name)


def _cookie_age() -> int:
    return int(settings.SESSION_COOKIE_AGE)


# Settings ---------------------------------------------------------------------------


def _fail(key: str, message: str) -> ImproperlyConfigured:
    return conf.fail(key, message)


#: The SESSION_REDIS keys this feature owns.
KEYS = frozenset({"migrate_from", "migrate_from_options", "migrate_write_back"})


@dataclass(frozen=True)
class Config:
    migrate_from: str
    migrate_from_options: Mapping[str, Any]
    migrate_write_back: bool


def configure(core: conf.Config) -> Config | None:
    """This feature's settings, or None when no migration is configured."""
    fields = parse(core.features)
    return Config(**fields) if fields else None


def parse(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of this feature's Config, from ``SESSION_REDIS``, validated."""
    engine = raw.get("migrate_from")
    if engine is None:
        for key in ("migrate_from_options", "migrate_write_back"):
            if key in raw:
                raise _fail(key, 'only applies with "migrate_from".')
        return {}
    if engine not in ENGINES:
        raise _fail(
            "migrate_from",
            f"{engine!r} is not an engine sessions can be migrated from; "
            f"one of {', '.join(ENGINES)}.",
        )
    options = raw.get("migrate_from_options")
    if options is not None:
        if engine != DRS:
            raise _fail("migrate_from_options", f'only applies to "{DRS}" (0.6.2\'s settings).')
        if not isinstance(options, Mapping):
            raise _fail("migrate_from_options", f"must be a dict, got a {type(options).__name__}.")
        unknown = sorted(set(options) - set(DRS_DEFAULTS))
        if unknown:
            raise _fail(
                "migrate_from_options",
                f"unknown key(s) {', '.join(map(repr, unknown))}: 0.6.2 read only "
                f"{', '.join(sorted(DRS_DEFAULTS))}.",
            )
        prefix = options.get("prefix") or ""
        if not isinstance(prefix, str):
            raise _fail("migrate_from_options", f"'prefix' must be a string, got {prefix!r}.")
    write_back = raw.get("migrate_write_back", False)
    if not isinstance(write_back, bool):
        raise _fail("migrate_write_back", f"must be True or False, got {write_back!r}.")
    if write_back and engine not in WRITE_BACK_ENGINES:
        raise _fail(
            "migrate_write_back",
            f"{engine!r} keeps nothing server-side to write back to; remove this key.",
        )
    return {
        "migrate_from": engine,
        "migrate_from_options": dict(options or {}),
        "migrate_write_back": write_back,
    }


def check(config: conf.Config) -> None:
    """Refuse, at startup, an old keyspace that can overlap ours."""
    settings_ = configure(config)
    if settings_ is None:
        return
    if settings_.migrate_from == DRS:
        options = {**DRS_DEFAULTS, **settings_.migrate_from_options}
        if not _same_server(options, config):
            return
        prefix = options["prefix"] or ""
        theirs = prefix + ":" if prefix else ""
        # An empty 0.6.2 prefix is the whole database: ours included.
        if (
            not theirs
            or not config.prefix
            or config.prefix.startswith(theirs)
            or theirs.startswith(config.prefix)
        ):
            raise _fail(
                "migrate_from_options",
                f"0.6.2's keys ({theirs or ''}<session key>) and ours "
                f"({config.prefix}<digest>) would share one Redis database, where a "
                'cookie could name one of our keys. Point "url" at another database '
                '(e.g. /1) or choose another "prefix" for ours.',
            )
    elif settings_.migrate_from == CACHE:
        made = caches[settings.SESSION_CACHE_ALIAS].make_key(CACHE_KEY_PREFIX)
        if config.prefix and (made.startswith(config.prefix) or config.prefix.startswith(made)):
            raise _fail(
                "prefix",
                f"{config.prefix!r} overlaps the cache engine's keys ({made!r}…): choose "
                "another prefix.",
            )


def _same_server(options: Mapping[str, Any], ours: conf.Config) -> bool:
    """Is 0.6.2's Redis database ours, as far as the settings say?

    0.6.2 talked to one plain server. Ours on a Cluster is the same if 0.6.2
    named one of its nodes; a Sentinel's primary cannot be told from settings,
    so reads and deletes of keys with our prefix are refused there anyway
    (``DrsSource._foreign``).
    """
    theirs = _location_of(options)
    if ours.topology == "cluster":
        nodes = [_url_location(ours.url)[:2]]
        nodes += [(_LOCAL.get(host, host), port) for host, port in ours.startup_nodes]
        return theirs[2] == 0 and theirs[:2] in nodes
    return ours.topology == "single" and theirs == _url_location(ours.url)


_LOCAL = {"localhost": "127.0.0.1", "::1": "127.0.0.1", "": "127.0.0.1"}


def _url_location(url: str) -> tuple[str, int | str, int]:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return ("unix", parts.path, _db_of(parts.query, ""))
    host = parts.hostname or ""
    return (_LOCAL.get(host, host), parts.port or 6379, _db_of(parts.query, parts.path))


def _db_of(query: str, path: str) -> int:
    match = re.search(r"(?:^|&)db=(\d+)", query)
    if match:
        return int(match.group(1))
    path = path.strip("/")
    return int(path) if path.isdigit() else 0


def _location_of(options: Mapping[str, Any]) -> tuple[str, int | str, int]:
    if options["url"]:
        return _url_location(options["url"])
    if options["unix_domain_socket_path"]:
        return ("unix", options["unix_domain_socket_path"], int(options["db"]))
    if options["POOL"]:
        return ("127.0.0.1", 6379, 0)
    host = str(options["host"])
    return (_LOCAL.get(host, host), int(options["port"]), int(options["db"]))


_source: tuple[conf.Config, Source] | None = None
_source_lock = threading.Lock()


def source_for(config: conf.Config) -> Source:
    """The old store ``config`` names, made once per settings."""
    global _source
    cached = _source
    if cached is not None and cached[0] is config:
        return cached[1]
    with _source_lock:
        cached = _source
        if cached is not None and cached[0] is config:
            return cached[1]
        source = build_source(config)
        if cached is not None:
            cached[1].close()
        _source = (config, source)
        return source


def build_source(config: conf.Config) -> Source:
    check(config)
    settings_ = configure(config)
    assert settings_ is not None, "only a configured migration has an old store"
    engine = settings_.migrate_from
    if engine in (DB, CACHED_DB):
        return DbSource(engine)
    if engine == CACHE:
        return CacheSource()
    if engine == FILE:
        return FileSource()
    if engine == SIGNED_COOKIES:
        return SignedCookieSource()
    return DrsSource(settings_.migrate_from_options, config)  # parse() allows no other


def _guarded(function: Any, *args: Any) -> Any:
    """Call a source; its failure becomes our outage, not a 500 and not a logout."""
    try:
        return function(*args)
    except SOURCE_ERRORS as exc:
        failure = SessionUnavailable(f"The old session store failed: {type(exc).__name__}: {exc}")
        failure.__cause__ = exc
        raise failure from exc


def report(store_class: type, record: Record, digest: str | None) -> None:
    """Log what a lazy import met (by digest, never the cookie); signal it for metrics."""
    outcome = record.outcome
    if outcome is Outcome.BAD_SIGNATURE:
        suspicious_logger.warning(
            "Session %s in the old store has a bad signature: %s", digest, record.detail
        )
    elif outcome in (Outcome.NOT_JSON, Outcome.UNREADABLE):
        logger.warning(
            "Session %s in the old store not imported (%s): %s",
            digest,
            outcome.value,
            record.detail,
        )
    if signals.session_migrated.receivers:
        signals.session_migrated.send(store_class, digest=digest, outcome=outcome.value)


# The layer: the migration's part of each miss, save and end -------------------------

# A store's scratch key: set while a session found in the old store is being
# stored (it is not written back there).
IMPORTING = "migration.importing"


class Migration(hooks.Layer):
    def __init__(self, config: Config, core: conf.Config) -> None:
        self.config = config
        self.core = core

    def source(self) -> Source:
        return source_for(self.core)

    def missing(self, store: hooks.Store, cookie: str) -> Steps[hooks.Found | None]:
        """What the old store holds for a cookie Redis does not know."""
        source = self.source()
        record: Record = yield (driver.CALL, _guarded, source.read, cookie)
        own_key = OWN_KEY_RE.fullmatch(cookie) is not None
        if record.data is None:
            if record.outcome is not Outcome.MISSING:
                report(type(store), record, codec.digest(cookie) if own_key else None)
            return None

        if own_key:  # stored under the same key: the old store has it already
            store.scratch[IMPORTING] = True

        def stored(session_key: str) -> Steps[None]:
            # The old record is not needed any more: a later end cannot be undone
            # by importing it again. Kept only as the way back; when a timeout cut
            # ours shorter, it is written back with that lifetime, so it never
            # outlives ours.
            digest = store.digest_of(session_key)
            if not own_key or not self.config.migrate_write_back:
                yield (driver.CALL, _guarded, source.delete, cookie)
            else:
                data = dict(record.data or {})
                ttl = store.ttl_ms(data)
                if ttl < record.ttl_ms:
                    yield (driver.CALL, _write_back, source, session_key, data, ttl, digest)
            report(type(store), record, digest)

        return hooks.Found(record.data, record.ttl_ms, cookie if own_key else None, stored)

    def around_save(
        self,
        store: hooks.Store,
        session_key: str,
        data: dict[str, Any],
        must_create: bool,
        write: Steps[None],
    ) -> Steps[None]:
        importing = must_create and store.has_scratch and store.scratch.pop(IMPORTING, False)
        yield from write
        if importing or not self.config.migrate_write_back or store.read_only:
            return None
        # The way back: the old store gets every save too.
        digest = store.digest_of(session_key)
        ttl = store.ttl_ms(data)
        yield (driver.CALL, _write_back, self.source(), session_key, dict(data), ttl, digest)
        return None

    def tombstone_ms(self, store: hooks.Store, ending: hooks.Ending) -> int:
        return max(TOMBSTONE_TTL_MS, _cookie_age() * 1000, _age_ms(ending.data))

    def ended(self, store: hooks.Store, ending: hooks.Ending) -> Steps[None]:
        age = _age_ms(ending.data)
        if age > max(TOMBSTONE_TTL_MS, _cookie_age() * 1000):  # read as it was removed
            yield (scripts.PEXPIRE, self.core.prefix + ending.digest, age)
        if ending.session_key is not None:
            yield (driver.CALL, _guarded, self.source().delete, ending.session_key)
        return None

    def clear_expired(self) -> None:
        self.source().clear_expired()


def _age_ms(data: dict[str, Any] | None) -> int:
    """How long the old engine keeps a session with this data, at most, from now."""
    if not data or not data.get("_session_expiry"):
        return 0
    try:
        return _ms(SessionBase().get_expiry_age(expiry=data["_session_expiry"]))
    except (TypeError, ValueError):
        return 0


def _write_back(
    source: Source, session_key: str, data: dict[str, Any], ttl_ms: int, digest: str
) -> None:
    # Like Symfony's MigratingSessionHandler, a failed mirror does not fail the
    # request: the session is safe in Redis; only a rollback would see it stale.
    try:
        source.write(session_key, data, ttl_ms)
    except Exception as exc:
        logger.error("Could not write session %s back to the old store: %s", digest, exc)


def copy_session(store: hooks.Store, key: str, record: Record, dry_run: bool) -> Steps[Outcome]:
    """Copy one session read by ``manage.py migrate_sessions``; never overwrite ours.

    ``store`` is a fresh SessionStore: the value is written the way it writes any.
    """
    if record.data is None:
        return record.outcome
    if OWN_KEY_RE.fullmatch(key) is None:
        # Only a request can hand its browser a new key: left to the lazy import.
        return Outcome.INVALID_KEY
    if dry_run:
        present = yield (scripts.EXISTS, store.config.prefix + codec.digest(key))
        return Outcome.PRESENT if present else Outcome.COPIED
    store.scratch[IMPORTING] = True
    created = yield from store.adopt(hooks.Found(record.data, record.ttl_ms, key))
    if created is None:  # over by our own clocks (a timeout): nothing to keep
        return Outcome.EXPIRED
    return Outcome.COPIED if created else Outcome.PRESENT
