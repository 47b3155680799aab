"""SESSION_REDIS["migrate_from"]: sessions of the previous engine, moved without a logout.

Each old store is real: Django's db engine on SQLite, cached_db, the cache engine
on Django's RedisCache and on django-redis, files in a temporary directory, and
django-redis-sessions 0.6.2's keys, written the way 0.6.2 writes them, on a
redis-server of their own (the suite's Redis, on any topology, is ours).
Sessions are made by the old engine's own SessionStore.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from importlib import import_module
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore as DbStore
from django.contrib.sessions.backends.file import SessionStore as FileStore
from django.contrib.sessions.models import Session
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.utils import timezone

from django_redis_sessions import codec, conf, migration, plan, signals
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
        value = store.encode(store._get_session())  # type: ignore[attr-defined]
        self.client.set(self.real_key(key), value, ex=store.get_expiry_age())
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
    # Then it is ours: changes save as usual, and the old record is gone, so
    # that no later end of the session can be undone by importing it again.
    ops.setitem(store, "n", 1)
    ops.save(store)
    assert ops.load(SessionStore(key))["n"] == 1
    assert not old.has(key)


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
    # The same key: no new cookie (or the same one again, once the imported
    # session is added to its user's session index).
    again = client.get("/whoami/").cookies.get(COOKIE)
    assert again is None or again.value == key
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


# Safety -----------------------------------------------------------------------------


def test_keyspace_overlap_with_0_6_2_is_refused(redis_url: str) -> None:
    def config(**keys: Any) -> conf.Config:
        return conf.parse({"url": "redis://localhost:6379/0", **keys})

    same = {"migrate_from": migration.DRS}
    for options in ({"prefix": "session"}, {"host": "127.0.0.1", "prefix": "session"}, {}):
        with pytest.raises(ImproperlyConfigured, match="share one Redis database"):
            migration.check(config(**same, migrate_from_options=options))
    # Apart: another database, another server, or prefixes that cannot meet.
    migration.check(config(**same, migrate_from_options={"db": 1, "prefix": "session"}))
    migration.check(config(**same, migrate_from_options={"url": "redis://other:6379/0"}))
    migration.check(config(**same, migrate_from_options={"prefix": "drs"}))
    with pytest.raises(ImproperlyConfigured, match="share one Redis database"):
        migration.check(config(**same, prefix="", migrate_from_options={"prefix": "drs"}))


def test_cache_keyspace_overlap_is_refused() -> None:
    with override_settings(CACHES={"default": {"BACKEND": OldCache.backend, "KEY_PREFIX": ""}}):
        migration.check(conf.parse({"migrate_from": migration.CACHE}))
        with pytest.raises(ImproperlyConfigured, match="overlaps the cache engine"):
            migration.check(conf.parse({"migrate_from": migration.CACHE, "prefix": ":1:dj"}))


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"migrate_from": "myapp.sessions"}, "not an engine sessions can be migrated from"),
        ({"migrate_from": 3}, "not an engine"),
        ({"migrate_from_options": {}}, "only applies with"),
        ({"migrate_write_back": True}, "only applies with"),
        (
            {"migrate_from": migration.DB, "migrate_from_options": {"prefix": "x"}},
            "only applies to",
        ),
        ({"migrate_from": migration.DRS, "migrate_from_options": "redis://"}, "must be a dict"),
        ({"migrate_from": migration.DRS, "migrate_from_options": {"hots": "x"}}, "unknown key"),
        ({"migrate_from": migration.DRS, "migrate_from_options": {"prefix": 1}}, "'prefix'"),
        ({"migrate_from": migration.DB, "migrate_write_back": "yes"}, "True or False"),
        (
            {"migrate_from": migration.SIGNED_COOKIES, "migrate_write_back": True},
            "nothing server-side",
        ),
    ],
)
def test_bad_migration_settings(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        plan.parse(keys)


def test_startup_refuses_an_overlap() -> None:
    from django.apps import apps

    keys = {"url": "redis://127.0.0.1:6379/3", "migrate_from": migration.DRS}
    with (
        override_settings(SESSION_REDIS={**keys, "migrate_from_options": {"db": 3}}),
        pytest.raises(ImproperlyConfigured, match="share one Redis database"),
    ):
        apps.get_app_config("django_redis_sessions").ready()


def test_0_6_2_format_is_checked_before_reading_or_deleting(
    ops: Ops, r: Any, tmp_path: Any, old_redis: redis.Redis, caplog: Any
) -> None:
    drs = OldDrs(tmp_path, _url(old_redis))
    with override_settings(**drs.settings()):
        key = "b" * 32
        foreign = b'j1:1:{"_auth_user_id":"1"}'  # one of our values, or anybody's
        old_redis.set(drs.real_key(key), foreign, ex=100)
        with caplog.at_level(logging.WARNING, "django_redis_sessions.migration"):
            assert ops.load(SessionStore(key)) == {}
        assert "unreadable" in caplog.text
        ops.delete(SessionStore(key))
        assert old_redis.get(drs.real_key(key)) == foreign
        assert r.get(codec.redis_key("session:", key)) == migration.TOMBSTONE


def test_rotated_secret_key_is_a_counted_bad_signature_then_fallbacks_work(
    ops: Ops, r: Any, tmp_path: Any, client: Client, caplog: Any
) -> None:
    db = OldDb(tmp_path, "")
    with override_settings(**db.settings()):
        with override_settings(SECRET_KEY="the-old-secret-key"):
            key = db.make({"a": 1})
        received: list[str] = []

        def count(outcome: str, **kwargs: Any) -> None:
            received.append(outcome)

        signals.session_migrated.connect(count)
        try:
            with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
                client.cookies[COOKIE] = key
                assert client.get("/get/").status_code == 200  # never a 500
            assert "bad signature" in caplog.text
            assert received == ["bad signature"] and ours(r, key) is None
            with override_settings(SECRET_KEY_FALLBACKS=["the-old-secret-key"]):
                assert ops.load(SessionStore(key)) == {"a": 1}
            assert received == ["bad signature", "copied"]
        finally:
            signals.session_migrated.disconnect(count)


@pytest.mark.parametrize(
    "value",
    [
        {"when": timezone.now()},  # JSON cannot hold it
        {"pair": (1, 2)},  # JSON would make it a list
        {"by_id": {1: "a"}},  # JSON would make the key a string
    ],
    ids=["datetime", "tuple", "int-key"],
)
def test_pickled_values_json_cannot_hold_are_not_imported(
    ops: Ops, r: Any, tmp_path: Any, old_redis: redis.Redis, value: dict[str, Any], caplog: Any
) -> None:
    cache = OldCache(tmp_path, _url(old_redis))
    with override_settings(**cache.settings()):
        key = cache.make({"user": "ada", **value})
        with caplog.at_level(logging.WARNING, "django_redis_sessions.migration"):
            store = SessionStore(key)
            assert ops.load(store) == {}
        assert "not JSON-able" in caplog.text
        assert store.session_key is None and ours(r, key) is None
        assert cache.has(key)  # left where it was


def test_pickle_serializer_of_django_4_2(ops: Ops, r: Any, tmp_path: Any) -> None:
    from django.contrib.sessions import serializers

    if not hasattr(serializers, "PickleSerializer"):
        pytest.skip("PickleSerializer was removed in Django 5.0")
    pickled = "django.contrib.sessions.serializers.PickleSerializer"
    db = OldDb(tmp_path, "")
    with override_settings(**db.settings(), SESSION_SERIALIZER=pickled):
        plain = db.make({"a": [1]})
        dated = db.make({"a": timezone.now()})
        assert ops.load(SessionStore(plain)) == {"a": [1]}
        assert ops.load(SessionStore(dated)) == {}
        assert ours(r, dated) is None


# manage.py migrate_sessions -----------------------------------------------------


def run_command(*args: str) -> tuple[str, str | None]:
    """The command's output, and its error (a non-zero exit status) if any."""
    out = io.StringIO()
    try:
        call_command("migrate_sessions", *args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), str(exc)
    return out.getvalue(), None


def counts(output: str) -> dict[str, int]:
    pairs = (line.rsplit(": ", 1) for line in output.splitlines() if ": " in line)
    return {label: int(number) for label, number in pairs if number.isdigit()}


BULK = ["db", "cached_db", "cache", "django_redis", "file", "drs"]


@pytest.fixture(params=BULK)
def bulk_old(
    request: pytest.FixtureRequest, tmp_path: Any, old_redis: redis.Redis
) -> Iterator[Old]:
    engine = KEYED[request.param](tmp_path, _url(old_redis))
    with override_settings(**engine.settings()):
        yield engine


def test_bulk_copies_every_live_session_once(bulk_old: Old, r: Any) -> None:
    keys = [bulk_old.make({"n": n}, age=600 + n) for n in range(7)]
    SessionStore(keys[0]).load()  # already moved by a request
    output, error = run_command("--batch-size", "3")
    assert error is None
    assert counts(output) == {
        "copied": 6,
        "already there": 0,  # the lazy import took the old record with it
        "expired": 0,
        "bad signature": 0,
        "not JSON-able": 0,
        "invalid key": 0,
        "unreadable": 0,
    }
    for n, key in enumerate(keys):
        assert SessionStore(key).load() == {"n": n, "_session_expiry": 600 + n}
        assert 590_000 < pttl(r, key) <= (600 + n) * 1000
    # Idempotent, so an interrupted run is resumed by running it again.
    assert counts(run_command()[0])["already there"] == 6


def test_bulk_never_overwrites_a_newer_session(bulk_old: Old, r: Any) -> None:
    key = bulk_old.make({"n": 0})
    store = SessionStore(key)
    store["n"] = 1
    store.save()
    run_command()
    assert SessionStore(key).load() == {"n": 1}


def test_dry_run_counts_and_writes_nothing(bulk_old: Old, r: Any) -> None:
    for n in range(3):
        bulk_old.make({"n": n})
    output, error = run_command("--dry-run", "--batch-size", "3")
    assert error is None and "dry run" in output
    assert counts(output)["to copy"] == 3
    assert r.dbsize() == 0


def test_bulk_counts_each_outcome_and_fails_on_unreadable(r: Any, tmp_path: Any) -> None:
    db = OldDb(tmp_path, "")
    with override_settings(**db.settings()):
        db.make({"ok": 1})
        db.expire_in(db.make({"gone": 1}), -10)
        with override_settings(SECRET_KEY="rotated-away"):
            db.make({"forged": 1})
        Session.objects.create(
            session_key="Odd-Key-From-A-Custom-Engine",
            session_data=DbStore().encode({"odd": 1}),
            expire_date=timezone.now() + timedelta(days=1),
        )
        Session.objects.create(
            session_key="c" * 32,
            session_data="not a signed value",
            expire_date=timezone.now() + timedelta(days=1),
        )
        output, error = run_command()
    assert counts(output) == {
        "copied": 1,
        "already there": 0,
        "expired": 1,
        "bad signature": 1,
        "not JSON-able": 0,
        "invalid key": 1,
        "unreadable": 1,
    }
    assert error is not None and "2 sessions could not be read" in error


def test_bulk_counts_not_json_from_a_cache(r: Any, tmp_path: Any, old_redis: redis.Redis) -> None:
    cache = OldCache(tmp_path, _url(old_redis))
    with override_settings(**cache.settings()):
        cache.make({"when": timezone.now()})
        cache.make({"ok": 1})
        output, error = run_command()
    assert error is None
    assert counts(output)["not JSON-able"] == 1 and counts(output)["copied"] == 1


def test_bulk_progress_on_a_terminal(r: Any, tmp_path: Any) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    db = OldDb(tmp_path, "")
    with override_settings(**db.settings()):
        for n in range(5):
            db.make({"n": n})
        out = Terminal()
        call_command("migrate_sessions", "--batch-size", "2", stdout=out)
    assert "Copying 5 live sessions" in out.getvalue()
    assert "2/5 read, 2 copied\r" in out.getvalue() and "5/5 read, 5 copied\r" in out.getvalue()


def test_bulk_refuses_what_it_cannot_do(r: Any, tmp_path: Any) -> None:
    signed = OldSignedCookies(tmp_path, "")
    with override_settings(**signed.settings()):
        assert "live in the browsers" in (run_command()[1] or "")
    locmem = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(
        CACHES=locmem, SESSION_REDIS=session_redis(migrate_from=migration.CACHE)
    ):
        assert "cannot list its keys" in (run_command()[1] or "")
    with override_settings(SESSION_REDIS=session_redis()):
        assert "Set SESSION_REDIS" in (run_command()[1] or "")
    assert "at least 1" in (run_command("--batch-size", "0")[1] or "")


def test_bulk_stops_with_a_resumable_error_when_a_store_is_down(r: Any, tmp_path: Any) -> None:
    down = OldDrs(tmp_path, "redis://127.0.0.1:1/0")
    with override_settings(**down.settings()):
        output, error = run_command()
    assert error is not None and "Run the command again" in error and "Connection" in error
    assert counts(output)["copied"] == 0


def test_bulk_over_a_whole_0_6_2_database_counts_odd_and_foreign_keys(
    r: Any, tmp_path: Any, old_redis: redis.Redis
) -> None:
    drs = OldDrs(tmp_path, _url(old_redis))
    drs.prefix = ""  # 0.6.2's default: the whole database
    with override_settings(**drs.settings()):
        drs.make({"ok": 1})
        drs.make({"odd": 1}, key="Odd key!")
        old_redis.set("unrelated", "value")
        output, error = run_command()
    assert counts(output)["copied"] == 1 and counts(output)["invalid key"] == 1
    assert counts(output)["unreadable"] == 1 and error is not None


def test_0_6_2_keys_with_our_prefix_are_never_touched(old_redis: redis.Redis) -> None:
    # Behind Sentinel, whether 0.6.2's server is our primary cannot be told.
    ours = conf.parse({"sentinels": [("127.0.0.1", 26379)], "service_name": "main"})
    source = migration.DrsSource({"url": _url(old_redis)}, ours)
    ours_key = "session:" + "d" * 32
    old_redis.set(ours_key, DbStore().encode({"a": 1}), ex=100)
    old_redis.set("e" * 32, DbStore().encode({"b": 1}), ex=100)
    assert source.read(ours_key).outcome is migration.Outcome.INVALID_KEY
    source.delete(ours_key)
    assert old_redis.exists(ours_key)
    assert [key for batch in source.keys(10) for key in batch] == ["e" * 32]
    source.close()


def test_same_server_on_a_cluster() -> None:
    cluster = conf.parse({"cluster": True, "startup_nodes": [("localhost", 7000)]})
    options = {**migration.DRS_DEFAULTS, "port": 7000}
    assert migration._same_server(options, cluster)
    assert not migration._same_server({**options, "port": 7001}, cluster)
    with pytest.raises(ImproperlyConfigured, match="share one Redis database"):
        migration.check(
            conf.parse(
                {
                    "cluster": True,
                    "url": "redis://127.0.0.1:7000",
                    "migrate_from": migration.DRS,
                    "migrate_from_options": {"port": 7000, "prefix": "session"},
                }
            )
        )


# The way back: SESSION_REDIS["migrate_write_back"] --------------------------------


WRITE_BACK = ["db", "cached_db", "cache", "django_redis", "file", "drs"]


@pytest.fixture(params=WRITE_BACK)
def mirrored(
    request: pytest.FixtureRequest, tmp_path: Any, old_redis: redis.Redis
) -> Iterator[Old]:
    engine = KEYED[request.param](tmp_path, _url(old_redis))
    with override_settings(**engine.settings(migrate_write_back=True)):
        yield engine


def test_write_back_keeps_the_old_store_current(mirrored: Old, ops: Ops, r: Any) -> None:
    key = mirrored.make({"n": 0}, age=900)
    store = SessionStore(key)
    ops.setitem(store, "n", 1)
    ops.save(store)
    assert mirrored.load(key) == {"n": 1, "_session_expiry": 900}
    # A session born in Redis is written back too, with its expiry.
    fresh = SessionStore()
    ops.setitem(fresh, "m", 2)
    ops.set_expiry(fresh, 300)
    ops.save(fresh)
    assert fresh.session_key is not None
    assert mirrored.load(fresh.session_key) == {"m": 2, "_session_expiry": 300}
    # Deletes too: switching back finds nobody logged back in.
    ops.delete(fresh)
    assert not mirrored.has(fresh.session_key)


def test_switching_back_keeps_everyone_logged_in(mirrored: Old, client: Client, r: Any) -> None:
    user = User.objects.create_user("ada", password="pw")
    client.get("/login/?username=ada")
    key = client.cookies[COOKIE].value
    client.get("/set/colour/blue/")
    # Rollback: the old engine serves the same cookie.
    data = mirrored.load(key)
    assert data["_auth_user_id"] == str(user.pk) and data["colour"] == "blue"


def test_write_back_failure_does_not_fail_the_request(
    ops: Ops, r: Any, tmp_path: Any, caplog: Any
) -> None:
    down = OldDrs(tmp_path, "redis://127.0.0.1:1/0")
    with override_settings(**down.settings(migrate_write_back=True)):
        store = SessionStore()
        ops.setitem(store, "a", 1)
        with caplog.at_level(logging.ERROR, "django_redis_sessions.migration"):
            ops.save(store)
        assert "Could not write session" in caplog.text
        assert ops.load(SessionStore(store.session_key)) == {"a": 1}


# clearsessions -----------------------------------------------------------------------


def test_clearsessions_prunes_the_old_store(ops: Ops, r: Any, tmp_path: Any) -> None:
    db = OldDb(tmp_path, "")
    with override_settings(**db.settings()):
        live, gone = db.make({"a": 1}), db.make({"b": 1})
        db.expire_in(gone, -10)
        if ops.is_async:
            async_to_sync(SessionStore.aclear_expired)()
        else:
            call_command("clearsessions")
        assert list(Session.objects.values_list("session_key", flat=True)) == [live]
    file = OldFile(tmp_path, "")
    with override_settings(**file.settings()):
        live, gone = file.make({"a": 1}), file.make({"b": 1})
        past = time.time() - AGE - 100
        os.utime(os.path.join(tmp_path, COOKIE + gone), (past, past))
        call_command("clearsessions")
        assert file.has(live) and not file.has(gone)


# Odd corners of each source -----------------------------------------------------------


def outcomes() -> Iterator[list[str]]:
    seen: list[str] = []

    def record(outcome: str, **kwargs: Any) -> None:
        seen.append(outcome)

    signals.session_migrated.connect(record)
    try:
        yield seen
    finally:
        signals.session_migrated.disconnect(record)


seen_outcomes = pytest.fixture(outcomes)


def test_db_key_longer_than_its_column(
    ops: Ops, r: Any, tmp_path: Any, seen_outcomes: list[str]
) -> None:
    with override_settings(**OldDb(tmp_path, "").settings()):
        assert ops.load(SessionStore("a" * 41)) == {}
    assert seen_outcomes == ["invalid key"]


def test_db_needs_the_sessions_app(tmp_path: Any) -> None:
    from django.test import modify_settings

    with (
        override_settings(**OldDb(tmp_path, "").settings()),
        modify_settings(INSTALLED_APPS={"remove": ["django.contrib.sessions"]}),
        pytest.raises(ImproperlyConfigured, match=r"needs 'django\.contrib\.sessions'"),
    ):
        migration.source_for(conf.get_config())


def test_file_odd_names_contents_and_expiries(
    ops: Ops, r: Any, tmp_path: Any, seen_outcomes: list[str]
) -> None:
    file = OldFile(tmp_path, "")
    with override_settings(**file.settings()):
        soon = timezone.now() + timedelta(seconds=300)
        dated = file.make({"a": 1}, age=soon)  # type: ignore[arg-type]
        assert ops.load(SessionStore(dated))["a"] == 1
        assert 290_000 < pttl(r, dated) <= 300_000
        naive = file.make({"_session_expiry": "2999-01-01T00:00:00"})
        # Django cannot read a naive expiry here (it would fail every later save):
        # it is dropped, and the lifetime the old store gave stands.
        assert "_session_expiry" not in ops.load(SessionStore(naive))
        assert 0 < pttl(r, naive) <= settings.SESSION_COOKIE_AGE * 1000
        bad = file.make({"_session_expiry": "not a date"})
        assert ops.load(SessionStore(bad)) == {}
        binary = "f" * 32
        (tmp_path / (COOKIE + binary)).write_bytes(b"\xff\xfe")
        assert ops.load(SessionStore(binary)) == {}
        assert ops.load(SessionStore("Not-A-File-Key!")) == {}
        ops.delete(SessionStore(), "Not-A-File-Key!")  # nothing to delete, and no error
    assert seen_outcomes == ["copied", "copied", "expired", "unreadable", "invalid key"]


def test_cache_without_ttls_uses_the_session_expiry(ops: Ops, r: Any, tmp_path: Any) -> None:
    locmem = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(
        CACHES=locmem, SESSION_REDIS=session_redis(migrate_from=migration.CACHE)
    ):
        store = import_module(migration.CACHE).SessionStore()
        store["a"] = 1
        store.set_expiry(500)
        store.save()
        plain = import_module(migration.CACHE).SessionStore()
        plain["b"] = 2
        plain.save()
        assert ops.load(SessionStore(store.session_key))["a"] == 1
        assert 490_000 < pttl(r, store.session_key) <= 500_000
        assert ops.load(SessionStore(plain.session_key)) == {"b": 2}
        assert (AGE - 10) * 1000 < pttl(r, plain.session_key) <= AGE * 1000
        assert ops.load(SessionStore("x" * 300)) == {}


def test_drs_values_without_ttl_or_not_ascii(
    ops: Ops, r: Any, tmp_path: Any, old_redis: redis.Redis, seen_outcomes: list[str]
) -> None:
    drs = OldDrs(tmp_path, _url(old_redis))
    with override_settings(**drs.settings()):
        forever, binary = "g" * 32, "h" * 32
        old_redis.set(drs.real_key(forever), DbStore().encode({"a": 1}))
        old_redis.set(drs.real_key(binary), b"\xff\xfe", ex=100)
        assert ops.load(SessionStore(forever)) == {"a": 1}
        assert (AGE - 10) * 1000 < pttl(r, forever) <= AGE * 1000
        assert ops.load(SessionStore(binary)) == {}
        assert ops.load(SessionStore("x" * 300)) == {}
        ops.delete(SessionStore(), "Odd key!")  # no tombstone for a key we never store
    assert seen_outcomes == ["copied", "unreadable", "invalid key"]


def test_write_back_of_an_expired_session_deletes_it(mirrored: Old, ops: Ops, r: Any) -> None:
    key = mirrored.make({"a": 1})
    store = SessionStore(key)
    ops.load(store)
    ops.set_expiry(store, -1)
    ops.save(store)
    assert not mirrored.has(key) and ours(r, key) == codec.TOMBSTONE
    assert ops.load(SessionStore(key)) == {}


def test_drs_connection_is_the_one_0_6_2_made() -> None:
    def kwargs(**options: Any) -> dict[str, Any]:
        client = migration.drs_client({**migration.DRS_DEFAULTS, **options})
        return dict(client.connection_pool.connection_kwargs)

    assert kwargs(url="redis://h:1/4", host="ignored")["host"] == "h"
    assert kwargs(unix_domain_socket_path="/run/r.sock", db=2)["path"] == "/run/r.sock"
    pool = kwargs(POOL=[{"host": "a", "port": 7}], db=5, password="p")
    assert (pool["host"], pool["port"], pool["db"], pool.get("password")) == (
        "localhost",
        6379,
        0,
        None,
    )
    plain = kwargs(host="h2", port=6380, db=3, password="pw")
    assert (plain["host"], plain["port"], plain["db"], plain["password"]) == ("h2", 6380, 3, "pw")
    assert plain["socket_timeout"] == 0.1


@contextmanager
def silent_server(family: int, address: Any) -> Iterator[tuple[Any, list[socket.socket]]]:
    """A server that accepts connections and never answers: every command times out."""
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(8)
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:  # closed
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname(), accepted
    finally:
        listener.close()
        thread.join(5)
        for connection in accepted:
            connection.close()


@pytest.mark.parametrize("family", ["tcp", "unix"])
@pytest.mark.parametrize(("retry_on_timeout", "connections"), [(True, 2), (False, 1)])
def test_drs_retry_on_timeout_is_kept_without_deprecation_warnings(
    tmp_path: Any, family: str, retry_on_timeout: bool, connections: int
) -> None:
    # 0.6.2 retried a command once after a timeout when asked, else never; redis-py
    # warns about its retry_on_timeout argument since 6.0.
    if family == "tcp":
        server = silent_server(socket.AF_INET, ("127.0.0.1", 0))
    else:
        server = silent_server(socket.AF_UNIX, str(tmp_path / "silent.sock"))
    with server as (address, accepted), warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        where = (
            {"host": address[0], "port": address[1]}
            if family == "tcp"
            else {"unix_domain_socket_path": address}
        )
        client = migration.drs_client(
            {
                **migration.DRS_DEFAULTS,
                **where,
                "retry_on_timeout": retry_on_timeout,
                "socket_timeout": 0.2,
            }
        )
        with pytest.raises(redis.TimeoutError):
            client.get("k")
        client.close()
        # A timeout drops its connection: each try is a connection of its own.
        deadline = time.monotonic() + 5  # the accepting thread may lag on a busy machine
        while len(accepted) < connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(accepted) == connections


@pytest.mark.parametrize(
    ("options", "ours", "same"),
    [
        ({"unix_domain_socket_path": "/run/r.sock", "db": 1}, "unix:///run/r.sock?db=1", True),
        ({"unix_domain_socket_path": "/run/r.sock"}, "unix:///run/r.sock?db=1", False),
        ({"POOL": [{}]}, "redis://localhost:6379/0", True),
        ({"url": "redis://127.0.0.1/0"}, "redis://localhost:6379", True),
        ({"host": "redis.internal"}, "redis://localhost:6379/0", False),
    ],
)
def test_same_server(options: dict[str, Any], ours: str, same: bool) -> None:
    config = conf.parse({"url": ours})
    assert migration._same_server({**migration.DRS_DEFAULTS, **options}, config) is same


def test_a_fresh_key_that_is_taken_is_not_overwritten(
    ops: Ops, r: Any, signed: Old, monkeypatch: Any
) -> None:
    taken = SessionStore()
    taken["mine"] = 1
    taken.save()
    fresh = iter([taken.session_key, "k" * 32])
    monkeypatch.setattr(SessionStore, "_get_new_session_key", lambda self: next(fresh))
    store = SessionStore(signed.make({"theirs": 1}))
    assert ops.load(store) == {"theirs": 1}
    assert store.session_key == "k" * 32
    assert SessionStore(taken.session_key).load() == {"mine": 1}


def test_read_only_session_is_not_written_back(ops: Ops, r: Any, tmp_path: Any) -> None:
    down = OldDrs(tmp_path, "redis://127.0.0.1:1/0")
    with override_settings(**down.settings(migrate_write_back=True, on_unavailable="anonymous")):
        store = SessionStore("a" * 32)
        ops.setitem(store, "x", 1)
        ops.save(store)  # nothing is written anywhere, and nothing fails
    assert r.dbsize() == 0


def test_values_that_are_no_session(
    ops: Ops, r: Any, tmp_path: Any, old_redis: redis.Redis, signed: Old, seen_outcomes: list[str]
) -> None:
    a_list = signing.dumps([1, 2], salt=migration.SIGNED_COOKIES_SALT, compress=True)
    assert ops.load(SessionStore(a_list)) == {}
    cache = OldCache(tmp_path, _url(old_redis))
    with override_settings(**cache.settings()):
        key = "m" * 32
        old_redis.set(":1:" + migration.CACHE_KEY_PREFIX + key, b"\x80\x05garbage", ex=100)
        assert ops.load(SessionStore(key)) == {}
    db = OldDb(tmp_path, "")
    with override_settings(**db.settings()):
        not_json = signing.TimestampSigner(salt=migration.SESSION_SALT).sign("bm90IGpzb24")
        key = "n" * 32
        Session.objects.create(
            session_key=key,
            session_data=not_json,
            expire_date=timezone.now() + timedelta(days=1),
        )
        assert ops.load(SessionStore(key)) == {}
    assert seen_outcomes == ["unreadable", "unreadable", "unreadable"]


def test_bulk_setup_errors_and_sessions_gone_meanwhile(r: Any, tmp_path: Any) -> None:
    from django.test import modify_settings

    db = OldDb(tmp_path, "")
    with (
        override_settings(**db.settings()),
        modify_settings(INSTALLED_APPS={"remove": ["django.contrib.sessions"]}),
    ):
        assert "needs 'django.contrib.sessions'" in (run_command()[1] or "")
    file = OldFile(tmp_path, "")
    with override_settings(**file.settings()):
        source = migration.source_for(conf.get_config())
        source.keys = lambda batch_size: iter([["z" * 32]])  # type: ignore[method-assign]
        output, error = run_command()
    assert error is None and counts(output)["copied"] == 0


def test_re_keying_gives_up_after_so_many_taken_keys(
    ops: Ops, r: Any, signed: Old, monkeypatch: Any
) -> None:
    taken = SessionStore()
    taken["mine"] = 1
    taken.save()
    monkeypatch.setattr(SessionStore, "_get_new_session_key", lambda self: taken.session_key)
    with pytest.raises(SessionUnavailable, match="new session key"):
        ops.load(SessionStore(signed.make({"theirs": 1})))
    assert SessionStore(taken.session_key).load() == {"mine": 1}


def test_asgi_requests_import_and_re_key(old: Old, signed_cookie_too: str, r: Any) -> None:
    from django.test import AsyncClient

    key = old.make({"visits": 4})

    async def flow() -> tuple[bytes, bytes, str]:
        client = AsyncClient()
        client.cookies[COOKIE] = key
        counted = (await client.get("/acounter/")).content
        client.cookies[COOKIE] = signed_cookie_too
        keys = {k: v for k, v in settings.SESSION_REDIS.items() if not k.startswith("migrate")}
        with override_settings(SESSION_REDIS={**keys, "migrate_from": migration.SIGNED_COOKIES}):
            response = await client.get("/aget/")
        return counted, response.content, response.cookies[COOKIE].value

    counted, data, new_key = async_to_sync(flow)()
    assert counted == b"5" and SessionStore(key).load() == {"visits": 5}
    assert data == b'{"from": "a cookie"}' and codec.is_valid_session_key(new_key)


@pytest.fixture
def signed_cookie_too() -> str:
    return signing.dumps({"from": "a cookie"}, salt=migration.SIGNED_COOKIES_SALT, compress=True)


# With encryption at rest -----------------------------------------------------------

KEY = "k1:" + base64.urlsafe_b64encode(bytes(range(32))).decode()


def test_imports_are_encrypted_like_any_new_session(
    ops: Ops, r: Any, tmp_path: Any, old_redis: redis.Redis
) -> None:
    old = OldDb(tmp_path, _url(old_redis))
    with override_settings(**old.settings(encryption_keys=[KEY], encryption="require")):
        lazy, bulk = old.make({"user": "ada"}, age=600), old.make({"user": "bob"}, age=600)
        assert ops.load(SessionStore(lazy)) == {"user": "ada", "_session_expiry": 600}
        assert counts(run_command()[0])["copied"] == 1
        for key, user in ((lazy, "ada"), (bulk, "bob")):
            assert ours(r, key).startswith(b"e1:1:k1:")  # sealed under its own key
            assert ops.load(SessionStore(key))["user"] == user
