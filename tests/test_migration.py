"""SESSION_REDIS["migrate_from"]: sessions of the previous engine, moved without a logout.

Each old store is real: Django's db engine on SQLite, cached_db, the cache engine
on Django's RedisCache and on django-redis, files in a temporary directory, and
django-redis-sessions 0.6.2's keys, written the way 0.6.2 writes them, on a
redis-server of their own (the suite's Redis, on any topology, is ours).
Sessions are made by the old engine's own SessionStore.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from importlib import import_module
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore as DbStore
from django.contrib.sessions.backends.file import SessionStore as FileStore
from django.contrib.sessions.models import Session
from django.core import signing
from django.test import Client, override_settings
from django.utils import timezone

from django_redis_sessions import codec, conf, migration
from django_redis_sessions.exceptions import SessionUnavailable
from django_redis_sessions.session import SessionStore
from testproject.redis_server import RedisServer
from tests.conftest import session_redis
from tests.twins import Ops, command_calls

COOKIE = settings.SESSION_COOKIE_NAME
AGE = settings.SESSION_COOKIE_AGE

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def old_redis_url() -> Iterator[str]:
    """A Redis for the old stores (caches, 0.6.2), apart from ours on every topology."""
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def old_redis(old_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(old_redis_url)
    client.flushdb()
    yield client
    client.close()


# The old engines -------------------------------------------------------------------


class Old:
    """One previous engine: its settings, and sessions made by its own code."""

    engine = ""
    keyed = True  # False: the cookie is the session (signed_cookies)

    def __init__(self, tmp_path: Any, old_redis_url: str) -> None:
        self.tmp_path = tmp_path
        self.old_redis_url = old_redis_url

    def settings(self, **redis_keys: Any) -> dict[str, Any]:
        return {"SESSION_REDIS": session_redis(migrate_from=self.engine, **redis_keys)}

    def make(self, data: dict[str, Any], age: int | None = None) -> str:
        """A session saved by the old engine; ``age``: seconds it has left."""
        store = import_module(self.engine).SessionStore()
        store.update(data)
        if age is not None:
            store.set_expiry(age)
        store.save()
        key: str = store.session_key
        return key

    def load(self, key: str) -> dict[str, Any]:
        """What the old engine itself would serve for this cookie (after a rollback)."""
        store = import_module(self.engine).SessionStore(key)
        return dict(store.load())

    def has(self, key: str) -> bool:
        return bool(import_module(self.engine).SessionStore().exists(key))


class OldDb(Old):
    engine = migration.DB

    def settings(self, **redis_keys: Any) -> dict[str, Any]:
        return {**super().settings(**redis_keys), "SESSION_ENGINE": self.engine}

    def expire_in(self, key: str, seconds: int) -> None:
        Session.objects.filter(session_key=key).update(
            expire_date=timezone.now() + timedelta(seconds=seconds)
        )


class OldCachedDb(OldDb):
    engine = migration.CACHED_DB


class OldCache(Old):
    engine = migration.CACHE
    backend = "django.core.cache.backends.redis.RedisCache"
    options: dict[str, Any] = {}

    def settings(self, **redis_keys: Any) -> dict[str, Any]:
        caches = {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "sessions": {"BACKEND": self.backend, "LOCATION": self.old_redis_url, **self.options},
        }
        return {
            **super().settings(**redis_keys),
            "CACHES": caches,
            "SESSION_CACHE_ALIAS": "sessions",
        }


class OldDjangoRedis(OldCache):
    backend = "django_redis.cache.RedisCache"
    options = {
        "KEY_PREFIX": "app",
        "OPTIONS": {"COMPRESSOR": "django_redis.compressors.zlib.ZlibCompressor"},
    }


class OldFile(Old):
    engine = migration.FILE

    def settings(self, **redis_keys: Any) -> dict[str, Any]:
        # The file engine keeps the first path it saw for good: forget it.
        if "_storage_path" in vars(FileStore):
            delattr(FileStore, "_storage_path")
        return {**super().settings(**redis_keys), "SESSION_FILE_PATH": str(self.tmp_path)}

    def has(self, key: str) -> bool:
        return os.path.exists(os.path.join(self.tmp_path, COOKIE + key))


class OldDrs(Old):
    """django-redis-sessions 0.6.2, with ``prefix`` set: keys ``drs:<key>``."""

    engine = migration.DRS
    prefix = "drs"

    def settings(self, **redis_keys: Any) -> dict[str, Any]:
        options = {"url": self.old_redis_url, "prefix": self.prefix}
        return super().settings(migrate_from_options=options, **redis_keys)

    @property
    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.old_redis_url)

    def real_key(self, key: str) -> str:
        return f"{self.prefix}:{key}" if self.prefix else key

    def make(self, data: dict[str, Any], age: int | None = None, key: str | None = None) -> str:
        # What 0.6.2's save() does: SETEX <prefix>:<key> get_expiry_age() encode(data).
        store = DbStore()
        store.update(data)
        if age is not None:
            store.set_expiry(age)
        key = key or SessionStore()._get_new_session_key()
        self.client.set(self.real_key(key), store.encode(data), ex=store.get_expiry_age())
        return key

    def load(self, key: str) -> dict[str, Any]:
        value = self.client.get(self.real_key(key))
        return DbStore().decode(value.decode()) if value is not None else {}  # type: ignore[union-attr]

    def has(self, key: str) -> bool:
        return bool(self.client.exists(self.real_key(key)))


class OldSignedCookies(Old):
    engine = migration.SIGNED_COOKIES
    keyed = False


KEYED = {
    "db": OldDb,
    "cached_db": OldCachedDb,
    "cache": OldCache,
    "django_redis": OldDjangoRedis,
    "file": OldFile,
    "drs": OldDrs,
}


@pytest.fixture(params=list(KEYED))
def old(request: pytest.FixtureRequest, tmp_path: Any, old_redis: redis.Redis) -> Iterator[Old]:
    """Each keyed old store, with SESSION_REDIS["migrate_from"] pointing at it."""
    engine = KEYED[request.param](tmp_path, _url(old_redis))
    with override_settings(**engine.settings()):
        yield engine


def _url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


@pytest.fixture
def signed(tmp_path: Any, old_redis: redis.Redis) -> Iterator[Old]:
    engine = OldSignedCookies(tmp_path, _url(old_redis))
    with override_settings(**engine.settings()):
        yield engine


def ours(r: Any, key: str) -> Any:
    return r.get(codec.redis_key("session:", key))


def pttl(r: Any, key: str) -> int:
    return int(r.pttl(codec.redis_key("session:", key)))


@contextmanager
def around_read(action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` right after the old store is read, before the import is written."""
    source = migration.source_for(conf.get_config())
    read = source.read

    def read_then_act(cookie: str) -> migration.Record:
        del source.read  # only this read is followed by the action
        record = read(cookie)
        action()
        return record

    source.read = read_then_act  # type: ignore[method-assign]
    try:
        yield
    finally:
        vars(source).pop("read", None)


# Lazy import ------------------------------------------------------------------------


def test_import_keeps_data_key_and_remaining_lifetime(old: Old, ops: Ops, r: Any) -> None:
    key = old.make({"user": "ada", "cart": [1, 2]}, age=600)
    store = SessionStore(key)
    data = ops.load(store)
    assert data["user"] == "ada" and data["cart"] == [1, 2]
    assert store.session_key == key and store.modified is False
    assert ours(r, key).startswith(b"j1:1:{")
    assert 590_000 < pttl(r, key) <= 600_000
    # Then it is ours: changes save as usual, and the old store is left alone.
    ops.setitem(store, "n", 1)
    ops.save(store)
    assert ops.load(SessionStore(key))["n"] == 1
    assert old.has(key)


def test_remaining_lifetime_is_not_a_fresh_cookie_age(ops: Ops, r: Any, tmp_path: Any) -> None:
    db = OldDb(tmp_path, "")
    with override_settings(**db.settings()):
        key = db.make({"a": 1})
        db.expire_in(key, 500)
        assert ops.load(SessionStore(key)) == {"a": 1}
        assert 490_000 < pttl(r, key) <= 500_000
    file = OldFile(tmp_path, "")
    with override_settings(**file.settings()):
        key = file.make({"a": 1})
        path = os.path.join(tmp_path, COOKIE + key)
        os.utime(path, (time.time() - 1000, time.time() - 1000))
        assert ops.load(SessionStore(key)) == {"a": 1}
        assert (AGE - 1010) * 1000 < pttl(r, key) <= (AGE - 1000) * 1000


def test_expired_in_the_old_store_is_not_imported(ops: Ops, r: Any, tmp_path: Any) -> None:
    db = OldDb(tmp_path, "")
    with override_settings(**db.settings()):
        key = db.make({"a": 1})
        db.expire_in(key, -5)
        store = SessionStore(key)
        assert ops.load(store) == {}
        assert store.session_key is None and ours(r, key) is None


def test_unknown_cookie_reads_the_old_store_once(old: Old, ops: Ops, r: Any) -> None:
    store = SessionStore("x" * 32)
    assert ops.load(store) == {}
    assert ops.load(store) == {}  # no second old-store read for the same cookie
    assert r.dbsize() == 0


def test_a_migrated_session_costs_one_get(old: Old, r: Any) -> None:
    key = old.make({"a": 1})
    SessionStore(key).load()
    r.config_resetstat()
    source = migration.source_for(conf.get_config())
    reads: list[str] = []
    read = source.read
    source.read = lambda cookie: reads.append(cookie) or read(cookie)  # type: ignore[method-assign,func-returns-value]
    try:
        assert SessionStore(key).load() == {"a": 1}
    finally:
        del source.read
    assert reads == [] and command_calls(r) == 1


def test_logged_in_through_the_middleware_then_logout_stays_logout(
    old: Old, r: Any, client: Client
) -> None:
    user = User.objects.create_user("ada", password="pw")
    key = old.make(
        {
            "_auth_user_id": str(user.pk),
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
            "_auth_user_hash": user.get_session_auth_hash(),
        }
    )
    client.cookies[COOKIE] = key
    assert client.get("/whoami/").content == b"ada"
    assert COOKIE not in client.get("/whoami/").cookies  # no new cookie: same key
    client.get("/logout/")
    assert not old.has(key)
    client.cookies[COOKIE] = key  # a replayed cookie, or a parallel tab
    assert client.get("/whoami/").content == b"anonymous"


def test_cycle_key_removes_the_old_key_from_both_stores(old: Old, ops: Ops, r: Any) -> None:
    key = old.make({"a": 1})
    store = SessionStore(key)
    ops.cycle_key(store)
    assert store.session_key != key
    assert ops.load(SessionStore(store.session_key)) == {"a": 1}
    assert not old.has(key)
    assert ops.load(SessionStore(key)) == {}


def test_import_racing_a_logout_never_resurrects(old: Old, ops: Ops, r: Any) -> None:
    key = old.make({"_auth_user_id": "1"})
    # A logout lands between this request's old-store read and its write.
    with around_read(lambda: SessionStore(key).flush()):
        racing = SessionStore(key)
        assert ops.load(racing) == {}
    assert racing.session_key is None
    assert not old.has(key)
    assert ops.load(SessionStore(key)) == {}


def test_two_first_requests_keep_what_the_first_saved(old: Old, ops: Ops, r: Any) -> None:
    key = old.make({"n": 0})

    def first_request() -> None:
        first = SessionStore(key)
        first["n"] = 1
        first.save()

    with around_read(first_request):  # the first one finishes while we import
        second = SessionStore(key)
        assert ops.load(second) == {"n": 1}
    assert ours(r, key) == b'j1:2:{"n":1}'


def test_old_store_failure_is_an_outage_not_a_logout(ops: Ops, r: Any, tmp_path: Any) -> None:
    down = OldDrs(tmp_path, "redis://127.0.0.1:1/0")
    with override_settings(**down.settings()):
        store = SessionStore("a" * 32)
        with pytest.raises(SessionUnavailable, match="old session store"):
            ops.load(store)
    with override_settings(**down.settings(on_unavailable="anonymous")):
        store = SessionStore("a" * 32)
        assert ops.load(store) == {}
        assert store.session_key == "a" * 32  # the cookie is kept for later


def test_old_store_down_gives_503(tmp_path: Any, client: Client) -> None:
    down = OldDrs(tmp_path, "redis://127.0.0.1:1/0")
    with override_settings(**down.settings()):
        client.cookies[COOKIE] = "a" * 32
        response = client.get("/whoami/")
    assert response.status_code == 503


# Keys that are not ours -----------------------------------------------------------


def test_signed_cookie_is_imported_under_a_new_key(signed: Old, ops: Ops, r: Any) -> None:
    cookie = signed.make({"user": "ada"})
    assert len(cookie) > 32
    store = SessionStore(cookie)
    assert ops.load(store) == {"user": "ada"}
    assert store.session_key is not None and codec.is_valid_session_key(store.session_key)
    assert store.modified is True  # the new cookie goes out
    assert AGE * 1000 - 10_000 < pttl(r, store.session_key) <= AGE * 1000


def test_signed_cookie_through_the_middleware(signed: Old, client: Client) -> None:
    user = User.objects.create_user("ada", password="pw")
    cookie = signed.make(
        {
            "_auth_user_id": str(user.pk),
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
            "_auth_user_hash": user.get_session_auth_hash(),
        }
    )
    client.cookies[COOKIE] = cookie
    response = client.get("/whoami/")
    assert response.content == b"ada"
    new = response.cookies[COOKIE].value
    assert codec.is_valid_session_key(new)
    assert client.get("/whoami/").content == b"ada"


def test_signed_cookie_too_old_forged_or_garbage(
    signed: Old, ops: Ops, r: Any, caplog: Any, monkeypatch: Any
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: 1_000_000_000.0)
        too_old = signing.dumps({"a": 1}, salt=migration.SIGNED_COOKIES_SALT, compress=True)
    forged = signing.dumps({"a": 1}, key="another", salt=migration.SIGNED_COOKIES_SALT)
    with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
        assert ops.load(SessionStore(forged)) == {}
    assert "bad signature" in caplog.text
    assert ops.load(SessionStore(too_old)) == {}
    assert ops.load(SessionStore("garbage!")) == {}
    assert r.dbsize() == 0


def test_odd_drs_key_gets_a_new_key_and_leaves_the_old_store(
    ops: Ops, r: Any, tmp_path: Any, old_redis: redis.Redis
) -> None:
    drs = OldDrs(tmp_path, _url(old_redis))
    with override_settings(**drs.settings()):
        odd = drs.make({"cart": [1]}, key="Attacker-Chosen_KEY!")
        store = SessionStore(odd)
        assert ops.load(store) == {"cart": [1]}
        assert store.session_key != odd and store.modified
        assert not drs.has(odd)
