"""SessionStore's rules against a real Redis, each through the sync and the async API."""

from __future__ import annotations

import datetime as dt
import logging
import pickle
import secrets
import time
import zlib
from decimal import Decimal
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone
from django.utils.crypto import get_random_string

from django_redis_sessions import codec
from django_redis_sessions.session import SessionStore
from tests.conftest import session_redis
from tests.twins import Ops, command_calls, new_session

AGE_MS = settings.SESSION_COOKIE_AGE * 1000


def stored(r: redis.Redis, store: SessionStore) -> bytes | None:
    assert store.session_key is not None
    value: Any = r.get(codec.redis_key("session:", store.session_key))
    return value  # type: ignore[no-any-return]


# Create, load, save, exists, delete ----------------------------------------


def test_round_trip(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, user="ada", cart=[1, 2], nested={"a": {"b": None}})
    assert store.session_key is not None and len(store.session_key) == 32
    again = SessionStore(store.session_key)
    assert ops.load(again) == {"user": "ada", "cart": [1, 2], "nested": {"a": {"b": None}}}
    assert r.dbsize() == 1


@pytest.mark.plaintext_values
def test_create_stores_empty_session_and_marks_modified(ops: Ops, r: redis.Redis) -> None:
    store = SessionStore()
    ops.create(store)
    assert store.modified is True
    assert stored(r, store) == b"j1:1:{}"


@pytest.mark.plaintext_values
def test_every_write_increments_the_version(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, n=0)
    assert stored(r, store) == b'j1:1:{"n":0}'
    for n in (1, 2):
        loaded = SessionStore(store.session_key)
        ops.setitem(loaded, "n", n)
        ops.save(loaded)
    assert stored(r, store) == b'j1:3:{"n":2}'


def test_exists_returns_real_bool(ops: Ops) -> None:
    store = new_session(ops, a=1)
    assert ops.exists(SessionStore(), store.session_key) is True
    assert ops.exists(SessionStore(), "a" * 32) is False
    assert ops.exists(SessionStore(), None) is False


def test_delete_own_and_other_key(ops: Ops, r: redis.Redis) -> None:
    first, second = new_session(ops, a=1), new_session(ops, b=2)
    ops.delete(first)
    assert stored(r, first) is None
    ops.delete(first, second.session_key)
    assert r.dbsize() == 0
    ops.delete(SessionStore())  # no key: nothing to do


def test_flush_deletes_and_forgets_the_key(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, a=1)
    ops.flush(store)
    assert store.session_key is None
    assert r.dbsize() == 0


def test_cycle_key_moves_the_data(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, user="ada")
    old = store.session_key
    loaded = SessionStore(old)
    ops.cycle_key(loaded)
    assert loaded.session_key not in (None, old)
    assert ops.exists(SessionStore(), old) is False
    ops.save(loaded)
    assert ops.load(SessionStore(loaded.session_key)) == {"user": "ada"}
    assert r.dbsize() == 1


def test_clear_expired_and_clearsessions(ops: Ops) -> None:
    new_session(ops, a=1)
    ops.clear_expired(SessionStore)  # Redis expires keys itself: a no-op that succeeds
    call_command("clearsessions")


def test_clear_then_save_replaces_everything(ops: Ops) -> None:
    store = new_session(ops, a=1, b=2)
    loaded = SessionStore(store.session_key)
    loaded.clear()
    ops.setitem(loaded, "c", 3)
    ops.save(loaded)
    assert ops.load(SessionStore(store.session_key)) == {"c": 3}


@pytest.mark.plaintext_values
def test_unchanged_save_only_refreshes_the_expiry(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, a=1)
    r.pexpire(codec.redis_key("session:", store.session_key or ""), 5000)
    loaded = SessionStore(store.session_key)
    assert ops.getitem(loaded, "a") == 1
    ops.save(loaded)
    assert stored(r, store) == b'j1:1:{"a":1}'  # version unchanged: not rewritten
    assert r.pttl(codec.redis_key("session:", store.session_key or "")) > AGE_MS - 60_000


@pytest.mark.plaintext_values
def test_modified_flag_without_change_is_not_a_write(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, a=1)
    loaded = SessionStore(store.session_key)
    ops.setitem(loaded, "a", 1)
    ops.save(loaded)
    assert stored(r, store) == b'j1:1:{"a":1}'


# Atomic create -------------------------------------------------------------


def test_create_never_overwrites_on_collision(
    ops: Ops, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = new_session(ops, owner="victim")
    keys = iter([victim.session_key, "b" * 32])
    monkeypatch.setattr(SessionStore, "_get_new_session_key", lambda self: next(keys))
    attacker = SessionStore()
    ops.setitem(attacker, "owner", "attacker")
    ops.create(attacker)
    assert attacker.session_key == "b" * 32
    assert ops.load(SessionStore(victim.session_key)) == {"owner": "victim"}


def test_create_gives_up_after_bounded_attempts(ops: Ops, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = new_session(ops).session_key
    monkeypatch.setattr(SessionStore, "_get_new_session_key", lambda self: taken)
    from django_redis_sessions import SessionUnavailable

    with pytest.raises(SessionUnavailable, match="Unable to create"):
        ops.create(SessionStore())


@pytest.mark.plaintext_values
def test_save_must_create_on_existing_key_raises(ops: Ops, r: redis.Redis) -> None:
    existing = new_session(ops, a=1)
    other = SessionStore(existing.session_key)
    other._session_cache = {"b": 2}
    with pytest.raises(CreateError):
        ops.save(other, must_create=True)
    assert stored(r, existing) == b'j1:1:{"a":1}'


def test_create_does_not_ask_exists_first(ops: Ops, r: redis.Redis) -> None:
    r.config_resetstat()
    ops.create(SessionStore())
    stats = r.info("commandstats")
    assert "cmdstat_exists" not in stats
    assert stats["cmdstat_set"]["calls"] == 1


# No resurrection -------------------------------------------------------------


def test_save_after_concurrent_delete_raises_and_writes_nothing(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, user="ada")
    request_a = SessionStore(store.session_key)
    assert ops.getitem(request_a, "user") == "ada"
    ops.delete(SessionStore(), store.session_key)  # logout in another tab
    ops.setitem(request_a, "cart", [1])
    with pytest.raises(UpdateError):
        ops.save(request_a)
    assert r.dbsize() == 0


def test_unchanged_save_after_concurrent_delete_raises(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, user="ada")
    request_a = SessionStore(store.session_key)
    assert ops.getitem(request_a, "user") == "ada"
    ops.delete(SessionStore(), store.session_key)
    with pytest.raises(UpdateError):
        ops.save(request_a)
    assert r.dbsize() == 0


def test_save_after_concurrent_cycle_key_raises(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, user="ada")
    request_a = SessionStore(store.session_key)
    assert ops.getitem(request_a, "user") == "ada"
    other = SessionStore(store.session_key)
    ops.cycle_key(other)
    ops.setitem(request_a, "x", 1)
    with pytest.raises(UpdateError):
        ops.save(request_a)
    assert r.dbsize() == 1
    assert ops.exists(SessionStore(), store.session_key) is False


def test_save_of_unknown_key_without_load_raises(ops: Ops, r: redis.Redis) -> None:
    ghost = SessionStore("c" * 32)
    with pytest.raises(UpdateError):
        ops.save(ghost)
    assert r.dbsize() == 0


def test_clear_then_save_after_concurrent_delete_raises(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, user="ada")
    request_a = SessionStore(store.session_key)
    request_a.clear()
    request_a["x"] = 1
    ops.delete(SessionStore(), store.session_key)
    with pytest.raises(UpdateError):
        ops.save(request_a)
    assert r.dbsize() == 0


# Loading never creates ---------------------------------------------------------


def test_unknown_key_loads_empty_and_drops_the_key(ops: Ops, r: redis.Redis) -> None:
    store = SessionStore("d" * 32)
    assert ops.load(store) == {}
    assert store.session_key is None
    assert r.dbsize() == 0


def test_modifying_an_unknown_session_creates_a_fresh_key(ops: Ops, r: redis.Redis) -> None:
    store = SessionStore("d" * 32)
    ops.setitem(store, "a", 1)
    ops.save(store)
    assert store.session_key not in (None, "d" * 32)
    assert r.dbsize() == 1


# Expiry ----------------------------------------------------------------------


def pttl(r: redis.Redis, store: SessionStore) -> int:
    return int(r.pttl(codec.redis_key("session:", store.session_key or "")))


def test_ttl_defaults_to_cookie_age(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, a=1)
    assert AGE_MS - 5000 < pttl(r, store) <= AGE_MS


@pytest.mark.parametrize(
    ("expiry", "expected_s"),
    [
        (300, 300),
        (dt.timedelta(minutes=10), 600),
        ("in-an-hour", 3600),
        (0, settings.SESSION_COOKIE_AGE),  # browser-close cookie, still bounded server-side
    ],
)
def test_ttl_follows_set_expiry(ops: Ops, r: redis.Redis, expiry: Any, expected_s: int) -> None:
    if expiry == "in-an-hour":
        expiry = timezone.now() + dt.timedelta(hours=1)
    store = SessionStore()
    ops.set_expiry(store, expiry)
    ops.save(store)
    assert expected_s * 1000 - 5000 < pttl(r, store) <= expected_s * 1000


def test_ttl_follows_later_set_expiry(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, a=1)
    loaded = SessionStore(store.session_key)
    ops.set_expiry(loaded, 60)
    ops.save(loaded)
    assert 55_000 < pttl(r, store) <= 60_000


def test_fractional_age(ops: Ops, r: redis.Redis) -> None:
    store = SessionStore()
    ops.set_expiry(store, 1.5)
    ops.save(store)
    assert 1000 < pttl(r, store) <= 1500


@pytest.mark.parametrize("expiry", [-5, "past"])
def test_expired_age_deletes_instead_of_writing(ops: Ops, r: redis.Redis, expiry: Any) -> None:
    if expiry == "past":
        expiry = timezone.now() - dt.timedelta(seconds=1)
    store = new_session(ops, a=1)
    loaded = SessionStore(store.session_key)
    ops.set_expiry(loaded, expiry)
    ops.save(loaded)
    assert r.dbsize() == 0


def test_far_future_expiry_is_capped(ops: Ops, r: redis.Redis) -> None:
    store = SessionStore()
    ops.set_expiry(store, 2**70)
    ops.save(store)
    assert 99 * 365 * 86_400_000 < pttl(r, store) <= 100 * 365 * 86_400_000
    assert ops.getitem(SessionStore(store.session_key), "_session_expiry") == 2**70


@pytest.mark.parametrize(
    ("age", "low_ms", "high_ms"),
    [
        (1.5, 1000, 1500),  # a float: rounded up to the millisecond
        (2**70, 99 * 365 * 86_400_000, 100 * 365 * 86_400_000),  # past the cap
    ],
)
def test_ttl_from_a_cookie_age_past_the_common_case(
    ops: Ops, r: redis.Redis, age: float, low_ms: int, high_ms: int
) -> None:
    # No expiry of its own: the TTL is the cookie age, however it is written.
    with override_settings(SESSION_COOKIE_AGE=age):
        store = new_session(ops, a=1)
        assert low_ms < pttl(r, store) <= high_ms
        loaded = SessionStore(store.session_key)
        ops.setitem(loaded, "a", 2)
        ops.save(loaded)
        assert low_ms < pttl(r, store) <= high_ms


@pytest.mark.parametrize("bad", [[None], "not a date", {"days": 1}])
def test_bad_expiry_value_is_a_clear_error(ops: Ops, r: redis.Redis, bad: Any) -> None:
    store = SessionStore()
    ops.setitem(store, "_session_expiry", bad)
    with pytest.raises(TypeError, match="_session_expiry"):
        ops.save(store)
    assert r.dbsize() == 0


def test_create_with_expired_age_stores_nothing(ops: Ops, r: redis.Redis) -> None:
    store = SessionStore()
    ops.set_expiry(store, -1)
    ops.create(store)
    assert r.dbsize() == 0


def test_session_expires_in_redis(ops: Ops) -> None:
    store = SessionStore()
    ops.set_expiry(store, 0.2)
    ops.save(store)
    time.sleep(0.35)
    fresh = SessionStore(store.session_key)
    assert ops.load(fresh) == {}
    assert fresh.session_key is None


def test_expiry_in_data_wins_over_a_longer_ttl(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, a=1)
    past = (timezone.now() - dt.timedelta(seconds=5)).isoformat()
    r.set(
        codec.redis_key("session:", store.session_key or ""),
        b'j1:4:{"_session_expiry":"%s"}' % past.encode(),
    )
    fresh = SessionStore(store.session_key)
    assert ops.load(fresh) == {}
    assert fresh.session_key is None


# JSON, never pickle --------------------------------------------------------------


@pytest.mark.plaintext_values
def test_values_are_compact_json(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, name="Zoë", t=(1, 2), n=2**70, f=0.1)
    assert stored(r, store) == (
        b'j1:1:{"name":"Zo\xc3\xab","t":[1,2],"n":1180591620717411303424,"f":0.1}'
    )
    assert ops.load(SessionStore(store.session_key)) == {
        "name": "Zoë",
        "t": [1, 2],
        "n": 2**70,
        "f": 0.1,
    }


def test_lone_surrogates_round_trip(ops: Ops) -> None:
    store = new_session(ops, odd="\ud800x")
    assert ops.load(SessionStore(store.session_key)) == {"odd": "\ud800x"}


@pytest.mark.parametrize(
    "value", [dt.datetime(2024, 1, 1), Decimal("1.5"), {1, 2}, b"bytes", object()]
)
def test_non_json_value_names_the_key_and_writes_nothing(
    ops: Ops, r: redis.Redis, value: Any
) -> None:
    store = new_session(ops, kept="yes")
    before = stored(r, store)
    loaded = SessionStore(store.session_key)
    ops.setitem(loaded, "when", value)
    with pytest.raises(TypeError, match="'when'"):
        ops.save(loaded)
    assert stored(r, store) == before


def test_non_string_top_level_key_is_reported(ops: Ops, r: redis.Redis) -> None:
    store = SessionStore()
    store._session_cache = {(1, 2): "tuple keys cannot be JSON object keys"}  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="not JSON serializable"):
        ops.save(store)
    assert r.dbsize() == 0


def test_non_json_value_on_create_writes_nothing(ops: Ops, r: redis.Redis) -> None:
    store = SessionStore()
    ops.setitem(store, "bad", {1, 2})
    with pytest.raises(TypeError, match="'bad'"):
        ops.save(store)
    assert r.dbsize() == 0


def test_non_json_value_on_cycle_key_keeps_the_old_session(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, a=1)
    loaded = SessionStore(store.session_key)
    ops.setitem(loaded, "bad", Decimal(1))
    with pytest.raises(TypeError, match="'bad'"):
        ops.cycle_key(loaded)
    assert ops.load(SessionStore(store.session_key)) == {"a": 1}
    assert r.dbsize() == 1


def test_pickle_is_never_loaded(ops: Ops, r: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    store = new_session(ops, a=1)
    r.set(codec.redis_key("session:", store.session_key or ""), pickle.dumps({"a": 1}))
    with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
        assert ops.load(SessionStore(store.session_key)) == {}
    assert "Session data corrupted" in caplog.text


# Keys: a digest, never the cookie; a configurable prefix ---------------------------


def test_redis_key_is_a_digest_of_the_session_key(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, a=1)
    (key,) = r.keys()
    assert store.session_key is not None
    assert store.session_key.encode() not in key
    assert key == b"session:" + codec.digest(store.session_key).encode()
    assert len(codec.digest(store.session_key)) == 32


def test_prefix_is_configurable(ops: Ops, r: redis.Redis) -> None:
    with override_settings(SESSION_REDIS=session_redis(prefix="app1:s:")):
        store = new_session(ops, a=1)
        assert ops.load(SessionStore(store.session_key)) == {"a": 1}
    assert r.keys() == [b"app1:s:" + codec.digest(store.session_key or "").encode()]
    # Another prefix is another namespace.
    assert ops.load(SessionStore(store.session_key)) == {}


# Session keys: Django's contract (8+ characters), bounded -------------------------

# Refused before any work: no Redis command at all.
BAD_KEYS = [
    "",
    "short",
    "1234567",  # Django's minimum is 8
    "x" * 257,  # our bound
    "x" * 10_000,
    "é" * 32,  # non-ASCII
    "\u200b" * 8,
    "a" * 31 + "\x00",  # control characters
    "abcdefgh\n",
    "abcdefgh\x7f",
    "abcd efgh",  # a space
]
# Keys Django accepts that name no stored session: one GET each, and nothing written.
UNKNOWN_KEYS = [
    "12345678",
    "A" * 32,
    "a" * 31 + "-",
    "../../" + "a" * 26,
    'quote"and;semi,colon\\',
    "x" * 256,
]


@pytest.mark.parametrize("bad", BAD_KEYS, ids=range(len(BAD_KEYS)))
def test_bad_session_keys_send_no_command(ops: Ops, r: redis.Redis, bad: str) -> None:
    r.config_resetstat()
    store = SessionStore(bad)
    assert store.session_key is None
    assert ops.load(store) == {}
    assert ops.exists(store, bad) is False
    ops.delete(store, bad)
    assert command_calls(r) == 0


@pytest.mark.parametrize("unknown", UNKNOWN_KEYS, ids=range(len(UNKNOWN_KEYS)))
def test_unknown_keys_cost_one_get_and_no_write(ops: Ops, r: redis.Redis, unknown: str) -> None:
    r.config_resetstat()
    store = SessionStore(unknown)
    assert store.session_key == unknown
    assert ops.load(store) == {}
    assert key_of(store) is None  # a later save gets a fresh key, never this one
    stats = r.info("commandstats")
    assert command_calls(r) == 1 and stats["cmdstat_get"]["calls"] == 1
    assert r.dbsize() == 0
    ops.setitem(store, "a", 1)
    ops.save(store)
    assert store.session_key not in (None, unknown)


def key_of(store: SessionStore) -> str | None:
    return store.session_key  # a call, so that mypy does not keep the earlier narrowing


class LongKeys(SessionStore):
    def _get_new_session_key(self) -> str:
        return get_random_string(40)  # Django's default alphabet: mixed case


class SymbolKeys(SessionStore):
    def _get_new_session_key(self) -> str:
        return secrets.token_urlsafe(24) + "!$%&'*+.^_`|~"


@pytest.mark.parametrize("store_class", [LongKeys, SymbolKeys])
def test_subclass_keys_of_another_valid_shape(
    ops: Ops, r: redis.Redis, store_class: type[SessionStore]
) -> None:
    store = store_class()
    ops.setitem(store, "a", 1)
    ops.save(store)
    assert store.session_key is not None and store.session_key == store.session_key.strip()
    assert codec.is_valid_session_key(store.session_key)
    assert ops.load(SessionStore(store.session_key)) == {"a": 1}
    ops.cycle_key(store)
    assert ops.load(SessionStore(store.session_key)) == {"a": 1}
    assert r.dbsize() == 1


@pytest.mark.parametrize("unusable", ["short", "é" * 32, "x" * 257, None])
def test_unusable_generated_key_is_a_clear_error(
    ops: Ops, r: redis.Redis, monkeypatch: pytest.MonkeyPatch, unusable: str | None
) -> None:
    monkeypatch.setattr(SessionStore, "_get_new_session_key", lambda self: unusable)
    store = SessionStore()
    ops.setitem(store, "a", 1)
    with pytest.raises(ValueError, match=r"_get_new_session_key\(\) returned a key"):
        ops.save(store)  # once a RecursionError
    with pytest.raises(ValueError, match="cannot use"):
        ops.create(SessionStore())
    assert r.dbsize() == 0


# Corrupt stored values ------------------------------------------------------------------

CORRUPT = {
    "truncated json": b'j1:3:{"a":',
    "unknown format": b'x9:3:{"a":1}',
    "bad version": b'j1:0x:{"a":1}',
    "no header": b'{"a":1}',
    "binary junk": bytes(range(256)),
    "json array": b"j1:3:[1,2]",
    "bad zlib": b"z1:3:not-zlib",
    "bad utf8": b'j1:3:{"a":"\xff"}',
    "bad expiry": b'j1:3:{"_session_expiry":"not a date"}',
    "deep nesting": b"j1:3:" + b"[" * 100_000,
}


@pytest.mark.parametrize("raw", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_value_loads_empty_logs_and_is_kept(
    ops: Ops, r: redis.Redis, caplog: pytest.LogCaptureFixture, raw: bytes
) -> None:
    store = new_session(ops, a=1)
    redis_key = codec.redis_key("session:", store.session_key or "")
    r.set(redis_key, raw)
    fresh = SessionStore(store.session_key)
    with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
        assert ops.load(fresh) == {}
    assert fresh.session_key is None
    assert "Session data corrupted" in caplog.text
    assert store.session_key is not None
    assert store.session_key not in caplog.text  # the digest is logged, never the key
    assert r.get(redis_key) == raw  # nothing stored is lost


def test_wrong_redis_type_loads_empty(
    ops: Ops, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    store = new_session(ops, a=1)
    redis_key = codec.redis_key("session:", store.session_key or "")
    r.delete(redis_key)
    r.hset(redis_key, "a", "1")
    with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
        assert ops.load(SessionStore(store.session_key)) == {}
    assert "WRONGTYPE" in caplog.text
    assert r.type(redis_key) == b"hash"


def test_save_never_overwrites_a_foreign_value(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, a=1)
    loaded = SessionStore(store.session_key)
    assert ops.getitem(loaded, "a") == 1
    redis_key = codec.redis_key("session:", store.session_key or "")
    r.set(redis_key, b"someone else's value")
    ops.setitem(loaded, "b", 2)
    with pytest.raises(UpdateError):
        ops.save(loaded)
    assert r.get(redis_key) == b"someone else's value"


@pytest.mark.plaintext_values
def test_compressed_values(ops: Ops, r: redis.Redis) -> None:
    with override_settings(SESSION_REDIS=session_redis(compress_min_bytes=100)):
        small = new_session(ops, a=1)
        big = new_session(ops, text="x" * 500)
        assert stored(r, small) == b'j1:1:{"a":1}'
        value = stored(r, big) or b""
        assert value.startswith(b"z1:1:")
        assert zlib.decompress(value[5:]) == b'{"text":"' + b"x" * 500 + b'"}'
        assert ops.load(SessionStore(big.session_key)) == {"text": "x" * 500}
    # Compressed values stay readable with compression switched off.
    assert ops.load(SessionStore(big.session_key)) == {"text": "x" * 500}


@pytest.mark.plaintext_values
def test_incompressible_values_stay_plain(ops: Ops, r: redis.Redis) -> None:
    with override_settings(SESSION_REDIS=session_redis(compress_min_bytes=1)):
        store = new_session(ops, a=1)
    assert stored(r, store) == b'j1:1:{"a":1}'
