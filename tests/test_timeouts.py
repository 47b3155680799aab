"""Idle and absolute timeouts against a real Redis, through the sync and the async API.

Most tests move time by rewriting what Redis holds (a TTL, a stored sign-in
time), as an idle pause or an old, replayed value would leave it; a few let a
short window (1-2 s) really pass.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from typing import Any

import django
import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import AsyncClient, override_settings
from django.utils import timezone

from django_redis_sessions import codec, driver, plan, scripts, signals, timeouts
from django_redis_sessions.exceptions import SessionUnavailable
from django_redis_sessions.session import SessionStore
from testproject.redis_server import RedisServer
from tests.conftest import session_redis
from tests.twins import OURS, Ops, command_calls, new_session, session_keys

ANCHOR = timeouts.ANCHOR
AGE_MS = settings.SESSION_COOKIE_AGE * 1000


@pytest.fixture
def timeout_settings() -> Iterator[Any]:
    """``with timeout_settings(idle_timeout=2): ...``"""

    def use(**keys: Any) -> Any:
        return override_settings(SESSION_REDIS=session_redis(**keys))

    yield use


@pytest.fixture
def ended() -> Iterator[list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    def receiver(sender: Any, signal: Any, **kwargs: Any) -> None:
        sent.append(kwargs)

    signals.session_timed_out.connect(receiver)
    yield sent
    signals.session_timed_out.disconnect(receiver)


def key_of(store: SessionStore) -> str:
    assert store.session_key is not None
    return codec.redis_key("session:", store.session_key)


def stored_data(r: Any, store: SessionStore) -> dict[str, Any]:
    return stored_data_at(r, key_of(store))


def stored_data_at(r: Any, key: str) -> dict[str, Any]:
    fmt, _, body = codec.split(r.get(key))
    return codec.loads(codec.unpack_body(fmt, body))


def redis_now_ms(r: Any) -> int:
    seconds, microseconds = r.time()
    return int(seconds) * 1000 + int(microseconds) // 1000


def left_after(r: Any, since_ms: int, full: int, unit_ms: int = 1000) -> range:
    """What may be left of a ``full``-unit window opened no sooner than ``since_ms``.

    Call it after reading the value it bounds: the lower bound is the window less
    what Redis's clock says has passed since, so a slow machine widens it rather
    than failing the test, and a clock that leaks time still falls outside it.
    """
    passed = redis_now_ms(r) - since_ms + 1  # both reads cut to the millisecond
    return range((full * unit_ms - passed) // unit_ms, full + 1)


def write_raw(r: Any, store: SessionStore, data: dict[str, Any], **expiry: Any) -> None:
    r.set(key_of(store), codec.join(codec.PLAIN, b"7", codec.dumps(data)), **expiry)


def signed_in(ops: Ops, **data: Any) -> SessionStore:
    """A stored session that has just signed in (as login() does: cycle_key)."""
    store = new_session(ops, **data)
    loaded = SessionStore(store.session_key)
    ops.cycle_key(loaded)
    ops.setitem(loaded, "_auth_user_id", "1")
    ops.save(loaded)
    return loaded


# Settings -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["idle_timeout", "absolute_timeout"])
@pytest.mark.parametrize("bad", [0, -5, 1.5, "1800", True])
def test_bad_timeout_settings_name_the_key(key: str, bad: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match=rf'SESSION_REDIS\["{key}"\]'):
        plan.parse({key: bad})


def test_timeouts_default_to_off() -> None:
    assert plan.parse({}).timeouts is None and plan.parse({}).clock is None
    config = plan.parse({"idle_timeout": 1800, "absolute_timeout": 43200}).timeouts
    assert config == timeouts.Config(idle_timeout=1800, absolute_timeout=43200)


def test_remaining_is_none_without_the_settings(ops: Ops) -> None:
    store = new_session(ops, a=1)
    loaded = SessionStore(store.session_key)
    assert ops.get_idle_remaining(loaded) is None
    assert ops.get_absolute_remaining(loaded) is None


# What an ordinary request costs --------------------------------------------------


@pytest.mark.single_only
def test_settings_off_load_is_one_get(ops: Ops, r: redis.Redis) -> None:
    store = new_session(ops, a=1)
    r.config_resetstat()
    assert ops.load(SessionStore(store.session_key)) == {"a": 1}
    assert command_calls(r) == 1
    assert "cmdstat_get" in r.info("commandstats")


@pytest.mark.single_only
def test_idle_load_is_one_script_call_and_no_refresh_while_fresh(
    ops: Ops, r: redis.Redis, timeout_settings: Any
) -> None:
    with timeout_settings(idle_timeout=100, absolute_timeout=1000):
        store = signed_in(ops, a=1)
        r.config_resetstat()
        loaded = SessionStore(store.session_key)
        assert ops.load(loaded)["a"] == 1
        stats = r.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 1
        assert "cmdstat_pexpire" not in stats
        assert "cmdstat_set" not in stats
        assert not timeouts.renews_cookie(loaded)


# The TTL is the smallest clock ----------------------------------------------------


def test_idle_window_caps_the_ttl(ops: Ops, r: redis.Redis, timeout_settings: Any) -> None:
    with timeout_settings(idle_timeout=30):
        since = redis_now_ms(r)
        store = new_session(ops, a=1)
        assert r.pttl(key_of(store)) in left_after(r, since, 30_000, unit_ms=1)
        assert ANCHOR not in stored_data(r, store)  # idle alone stores nothing of its own


def test_absolute_deadline_caps_the_ttl(ops: Ops, r: redis.Redis, timeout_settings: Any) -> None:
    with timeout_settings(idle_timeout=600, absolute_timeout=20):
        since = redis_now_ms(r)
        store = signed_in(ops)
        assert r.pttl(key_of(store)) in left_after(r, since, 20_000, unit_ms=1)
        assert ops.get_absolute_remaining(store) in left_after(r, since, 20)
        assert ops.get_idle_remaining(store) in left_after(r, since, 20)


def test_expiry_age_and_date_never_pass_the_deadline(
    ops: Ops, r: redis.Redis, timeout_settings: Any
) -> None:
    with timeout_settings(absolute_timeout=60):
        since = redis_now_ms(r)
        store = signed_in(ops)
        loaded = SessionStore(store.session_key)
        assert ops.get_expiry_age(loaded) in left_after(r, since, 60)
        left = (ops.get_expiry_date(loaded) - timezone.now()).total_seconds()
        assert left_after(r, since, 60)[0] - 1 < left <= 60
        # An explicit expiry asks Django's question, untouched.
        assert ops.get_expiry_age(loaded, expiry=3600) == 3600
        assert ops.get_expiry_date(loaded, expiry=None) > timezone.now() + dt.timedelta(days=1)


def test_django_expiry_caps_the_ttl(ops: Ops, r: redis.Redis, timeout_settings: Any) -> None:
    with timeout_settings(idle_timeout=600, absolute_timeout=900):
        store = signed_in(ops)
        ops.set_expiry(store, 10)
        since = redis_now_ms(r)
        ops.save(store)
        assert r.pttl(key_of(store)) in left_after(r, since, 10_000, unit_ms=1)


def test_no_write_exceeds_the_deadline(ops: Ops, r: redis.Redis, timeout_settings: Any) -> None:
    """Saves, merges and refreshes all measure the time left on Redis's clock."""
    with timeout_settings(idle_timeout=600, absolute_timeout=900):
        store = signed_in(ops, n=0)
        # Signed in 600 s ago, as far as Redis's clock is concerned: 300 s are
        # left, half the idle window (wide enough for a slow machine).
        since = redis_now_ms(r)
        data = stored_data(r, store)
        data[ANCHOR] = since - 600_000
        write_raw(r, store, data, px=600_000)
        first, second = SessionStore(store.session_key), SessionStore(store.session_key)
        ops.load(first)
        assert r.pttl(key_of(store)) <= 300_000  # the load cut the TTL down
        ops.load(second)
        ops.setitem(first, "n", 1)
        ops.save(first)
        assert r.pttl(key_of(store)) <= 300_000
        ops.setitem(second, "m", 2)
        ops.save(second)  # merges onto the first one's save
        assert r.pttl(key_of(store)) <= 300_000
        assert {k: v for k, v in stored_data(r, store).items() if k in "nm"} == {"n": 1, "m": 2}
        assert ops.get_absolute_remaining(second) in left_after(r, since, 300)


# Idle -----------------------------------------------------------------------------


def test_idle_session_expires(ops: Ops, timeout_settings: Any) -> None:
    with timeout_settings(idle_timeout=1):
        store = new_session(ops, a=1)
        time.sleep(1.1)
        loaded = SessionStore(store.session_key)
        assert ops.load(loaded) == {}
        assert loaded.session_key is None


def test_activity_keeps_an_idle_session_alive(
    ops: Ops, r: redis.Redis, timeout_settings: Any
) -> None:
    with timeout_settings(idle_timeout=100):
        store = new_session(ops, a=1)
        for _ in range(4):  # 120 s idle in all, never 100 s without a request
            r.pexpire(key_of(store), 70_000)  # as a 30 s pause leaves it
            since = redis_now_ms(r)
            loaded = SessionStore(store.session_key)
            assert ops.load(loaded) == {"a": 1}
            assert timeouts.renews_cookie(loaded)  # more than 10 s had gone by
            assert r.pttl(key_of(store)) in left_after(r, since, 100_000, unit_ms=1)


def test_refresh_slides_the_ttl_without_a_write(
    ops: Ops, r: redis.Redis, timeout_settings: Any
) -> None:
    with timeout_settings(idle_timeout=100):
        store = new_session(ops, a=1)
        before = r.get(key_of(store))
        r.pexpire(key_of(store), 89_000)  # 11 s idle: past the 10 s refresh threshold
        since = redis_now_ms(r)
        loaded = SessionStore(store.session_key)
        assert ops.load(loaded) == {"a": 1}
        assert r.pttl(key_of(store)) in left_after(r, since, 100_000, unit_ms=1)
        assert r.get(key_of(store)) == before  # same version, same bytes
        assert timeouts.renews_cookie(loaded)
        assert ops.get_idle_remaining(loaded) in left_after(r, since, 100)


def test_refresh_is_skipped_while_enough_is_left(
    ops: Ops, r: redis.Redis, timeout_settings: Any
) -> None:
    with timeout_settings(idle_timeout=1000):
        store = new_session(ops, a=1)
        # 50 s idle: half the 100 s threshold, a margin no stall of the machine eats.
        r.pexpire(key_of(store), 950_000)
        since = redis_now_ms(r)
        loaded = SessionStore(store.session_key)
        ops.load(loaded)
        assert r.pttl(key_of(store)) <= 950_000
        assert not timeouts.renews_cookie(loaded)
        assert ops.get_idle_remaining(loaded) in left_after(r, since, 950)


def test_a_key_without_expiry_is_cut_to_the_idle_window(
    ops: Ops, r: redis.Redis, timeout_settings: Any
) -> None:
    """A restored or PERSISTed value does not outlive the idle window."""
    with timeout_settings(idle_timeout=100):
        store = new_session(ops, a=1)
        r.persist(key_of(store))
        since = redis_now_ms(r)
        ops.load(SessionStore(store.session_key))
        assert r.pttl(key_of(store)) in left_after(r, since, 100_000, unit_ms=1)


def test_unsaved_session_reports_what_saving_would_give(ops: Ops, timeout_settings: Any) -> None:
    with timeout_settings(idle_timeout=100):
        assert ops.get_idle_remaining(SessionStore()) == 100


# Absolute -------------------------------------------------------------------------


def test_anonymous_sessions_have_no_deadline(
    ops: Ops, r: redis.Redis, timeout_settings: Any
) -> None:
    with timeout_settings(absolute_timeout=60):
        store = new_session(ops, a=1)
        assert stored_data(r, store) == {"a": 1, ANCHOR: None}
        assert r.pttl(key_of(store)) > 60_000  # Django's age alone
        assert ops.get_absolute_remaining(SessionStore(store.session_key)) is None
        assert ops.get_idle_remaining(SessionStore(store.session_key)) is None


def test_sign_in_starts_the_clock_on_redis_time(
    ops: Ops, r: redis.Redis, timeout_settings: Any
) -> None:
    with timeout_settings(absolute_timeout=60):
        before = redis_now_ms(r)
        loaded = signed_in(ops, a=1)
        after = redis_now_ms(r)
        assert before <= stored_data(r, loaded)[ANCHOR] <= after
        assert r.pttl(key_of(loaded)) in left_after(r, before, 60_000, unit_ms=1)


def test_sign_in_without_a_previous_load_asks_redis_for_the_time(
    ops: Ops, r: redis.Redis, timeout_settings: Any
) -> None:
    with timeout_settings(absolute_timeout=60):
        since = redis_now_ms(r)
        store = SessionStore()
        ops.cycle_key(store)  # a first visit that signs in: nothing was loaded
        ops.setitem(store, "_auth_user_id", "1")
        ops.save(store)
        assert since <= stored_data(r, store)[ANCHOR] <= redis_now_ms(r)
        assert ops.get_absolute_remaining(store) in left_after(r, since, 60)


def test_new_session_after_flush_is_a_sign_in(
    ops: Ops, r: redis.Redis, timeout_settings: Any
) -> None:
    """login() over another user's session flushes it and starts a new one."""
    with timeout_settings(absolute_timeout=60):
        store = signed_in(ops)
        old = stored_data(r, store)[ANCHOR]
        since = redis_now_ms(r)
        loaded = SessionStore(store.session_key)
        ops.flush(loaded)
        ops.setitem(loaded, "_auth_user_id", "2")
        ops.save(loaded)
        assert stored_data(r, loaded)[ANCHOR] >= old
        assert ops.get_absolute_remaining(loaded) in left_after(r, since, 60)


def test_activity_does_not_extend_the_deadline(
    ops: Ops, r: redis.Redis, timeout_settings: Any
) -> None:
    with timeout_settings(idle_timeout=1, absolute_timeout=2):
        slid = redis_now_ms(r)  # the idle window was last set no sooner than this
        store = signed_in(ops, a=1)
        deadline = stored_data(r, store)[ANCHOR] + 2_000
        # A request every 0.3 s up to the deadline, each sliding the idle window.
        while (start := redis_now_ms(r)) < deadline:
            loaded = SessionStore(store.session_key)
            data = ops.load(loaded)
            if redis_now_ms(r) < min(deadline, slid + 1_000):  # neither clock ran out
                assert data.get("a") == 1
            if timeouts.renews_cookie(loaded):
                slid = start
            time.sleep(0.3)
        loaded = SessionStore(store.session_key)
        assert ops.load(loaded) == {}
        assert r.exists(key_of(store)) == 0


def test_a_replayed_value_past_its_deadline_is_ended_on_read(
    ops: Ops, r: redis.Redis, timeout_settings: Any, ended: list[dict[str, Any]]
) -> None:
    with timeout_settings(absolute_timeout=60):
        store = signed_in(ops, a=1)
        data = stored_data(r, store)
        data[ANCHOR] = redis_now_ms(r) - 61_000
        write_raw(r, store, data)  # restored from a backup, without expiry
        loaded = SessionStore(store.session_key)
        assert ops.load(loaded) == {}
        assert loaded.session_key is None
        assert r.exists(key_of(store)) == 0
        assert ended == [{"digest": codec.digest(store.session_key or ""), "reason": "absolute"}]


@pytest.mark.parametrize("garbage", ["yesterday", 0, -5, True, 1.5])
def test_a_sign_in_time_we_did_not_write_ends_the_session(
    ops: Ops,
    r: redis.Redis,
    timeout_settings: Any,
    ended: list[dict[str, Any]],
    garbage: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with timeout_settings(absolute_timeout=60):
        store = new_session(ops)
        write_raw(r, store, {"a": 1, ANCHOR: garbage}, px=60_000)
        with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
            assert ops.load(SessionStore(store.session_key)) == {}
        assert "is not one the engine wrote" in caplog.text
        assert r.exists(key_of(store)) == 0
        assert [e["reason"] for e in ended] == ["absolute"]


def test_sessions_stored_before_the_setting_get_a_deadline(
    ops: Ops, r: redis.Redis, timeout_settings: Any
) -> None:
    store = new_session(ops, a=1)  # the setting is off
    with timeout_settings(absolute_timeout=60):
        before = redis_now_ms(r)
        loaded = SessionStore(store.session_key)
        assert ops.load(loaded)["a"] == 1
        assert not loaded.modified  # the new clock is written in place, once
        assert before <= stored_data(r, loaded)[ANCHOR] <= redis_now_ms(r)
        assert r.pttl(key_of(store)) in left_after(r, before, 60_000, unit_ms=1)
        assert ops.get_absolute_remaining(SessionStore(store.session_key)) in left_after(
            r, before, 60
        )


def test_clear_keeps_the_sign_in_time(ops: Ops, r: redis.Redis, timeout_settings: Any) -> None:
    with timeout_settings(absolute_timeout=60):
        store = signed_in(ops, a=1)
        anchor = stored_data(r, store)[ANCHOR]
        loaded = SessionStore(store.session_key)
        ops.items(loaded)
        loaded.clear()
        ops.setitem(loaded, "b", 2)
        ops.save(loaded)
        assert stored_data(r, loaded) == {"b": 2, ANCHOR: anchor}


def test_deadline_passing_between_load_and_save_deletes(
    ops: Ops, r: redis.Redis, timeout_settings: Any
) -> None:
    with timeout_settings(absolute_timeout=60):
        store = signed_in(ops, a=1)
        loaded = SessionStore(store.session_key)
        ops.items(loaded)
        loaded._clock.offset = 61.0  # type: ignore[union-attr]  # as if 61 s went by
        ops.setitem(loaded, "a", 2)
        ops.save(loaded)
        assert r.exists(key_of(store)) == 0


def test_scripts_end_a_session_past_its_deadline(r: redis.Redis) -> None:
    """The deadline check inside the scripts, for a deadline that passed in flight."""
    key = "session:" + "0" * 32
    past = redis_now_ms(r) - 1
    r.set(key, b"j1:1:{}", px=60_000)
    save = scripts.DEADLINED[scripts.SAVE]
    assert r.eval(save.source, 1, key, b"1", b"j1:2:{}", 60_000, past) == 0
    assert r.exists(key) == 0
    create = scripts.DEADLINED[scripts.CREATE]
    assert r.eval(create.source, 1, key, b"j1:1:{}", 60_000, past) == 1
    assert r.exists(key) == 0  # nothing kept: it was over before it began
    assert r.eval(create.source, 1, key, b"j1:1:{}", 60_000, past + 30_000) == 1
    assert 28_000 < r.pttl(key) <= 30_000
    assert r.eval(create.source, 1, key, b"j1:1:{}", 60_000, past + 30_000) == 0  # taken


# Through the real middleware ------------------------------------------------------

COOKIE = settings.SESSION_COOKIE_NAME


@pytest.fixture
def user(db: None) -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_user("ada", password="pw")


def only_key(r: Any) -> str:
    keys = session_keys(r)
    assert len(keys) == 1
    return keys[0].decode()


def pass_the_deadline(r: Any, key: str) -> None:
    fmt, version, body = codec.split(r.get(key))
    data = codec.loads(body)
    data[ANCHOR] -= 3_600_000
    r.set(key, codec.join(fmt, version, codec.dumps(data)), keepttl=True)


def test_login_starts_the_clock_and_the_cookie_never_outlives_it(
    middleware: str, client: Any, user: Any, r: Any, timeout_settings: Any
) -> None:
    with timeout_settings(idle_timeout=30, absolute_timeout=60):
        client.get("/counter/")
        assert stored_data_at(r, only_key(r))[ANCHOR] is None  # anonymous: no deadline
        since = redis_now_ms(r)
        response = client.get("/login/?username=ada")
        key = only_key(r)
        assert isinstance(stored_data_at(r, key)[ANCHOR], int)
        assert r.pttl(key) <= 30_000
        max_age = int(response.cookies[COOKIE]["max-age"])
        # Ours: the idle window (the cookie follows each slide); Django's: the deadline.
        assert max_age in left_after(r, since, 30 if middleware == OURS else 60)
        assert client.get("/whoami/").content == b"ada"


def test_past_the_deadline_the_user_is_signed_out(
    middleware: str,
    client: Any,
    user: Any,
    r: Any,
    timeout_settings: Any,
    ended: list[dict[str, Any]],
) -> None:
    with timeout_settings(absolute_timeout=60):
        client.get("/login/?username=ada")
        pass_the_deadline(r, only_key(r))
        response = client.get("/whoami/")
        assert response.content == b"anonymous"
        assert session_keys(r) == []
        assert [e["reason"] for e in ended] == ["absolute"]
        assert response.cookies[COOKIE].value == ""  # the cookie is dropped


def test_the_idle_slide_renews_our_cookie(client: Any, r: Any, timeout_settings: Any) -> None:
    with timeout_settings(idle_timeout=100):
        client.get("/counter/")
        key = only_key(r)
        assert client.get("/get/").cookies.get(COOKIE) is None  # fresh: no slide, no cookie
        r.pexpire(key, 50_000)
        since = redis_now_ms(r)
        response = client.get("/get/")
        assert int(response.cookies[COOKIE]["max-age"]) in left_after(r, since, 100)
        assert r.pttl(key) in left_after(r, since, 100_000, unit_ms=1)
        assert response["Vary"] == "Cookie"


def test_the_idle_slide_renews_our_cookie_async(r: Any, timeout_settings: Any) -> None:
    async def visit(client: AsyncClient, url: str = "/aget/") -> Any:
        return await client.get(url)

    with timeout_settings(idle_timeout=100):
        client = AsyncClient()
        async_to_sync(visit)(client, "/acounter/")
        key = only_key(r)
        assert async_to_sync(visit)(client).cookies.get(COOKIE) is None
        r.pexpire(key, 50_000)
        since = redis_now_ms(r)
        response = async_to_sync(visit)(client)
        assert int(response.cookies[COOKIE]["max-age"]) in left_after(r, since, 100)
        assert r.pttl(key) in left_after(r, since, 100_000, unit_ms=1)


@pytest.mark.skipif(django.VERSION < (5, 0), reason="alogin/auser arrived in Django 5.0")
def test_async_login_and_deadline(
    middleware: str, user: Any, r: Any, timeout_settings: Any
) -> None:
    async def sign_in() -> tuple[int, str]:
        client = AsyncClient()
        await client.get("/acounter/")
        response = await client.get("/alogin/?username=ada")
        assert (await client.get("/awhoami/")).content == b"ada"
        return int(response.cookies[COOKIE]["max-age"]), client.cookies[COOKIE].value

    async def later(cookie: str) -> bytes:
        client = AsyncClient()
        client.cookies[COOKIE] = cookie
        return (await client.get("/awhoami/")).content

    with timeout_settings(idle_timeout=30, absolute_timeout=60):
        max_age, cookie = async_to_sync(sign_in)()
        assert max_age <= (30 if middleware == OURS else 60)
        key = only_key(r)
        assert isinstance(stored_data_at(r, key)[ANCHOR], int)
        assert r.pttl(key) <= 30_000
        pass_the_deadline(r, key)
        assert async_to_sync(later)(cookie) == b"anonymous"
        assert session_keys(r) == []


# Bad input, failures, replication -------------------------------------------------


@pytest.mark.parametrize("raw", [b"garbage", b"j1:1:not json", b"z1:2:not zlib"])
def test_corrupt_values_load_empty_with_timeouts(
    ops: Ops, r: Any, timeout_settings: Any, caplog: pytest.LogCaptureFixture, raw: bytes
) -> None:
    with timeout_settings(idle_timeout=100, absolute_timeout=100):
        store = new_session(ops, a=1)
        r.set(key_of(store), raw)
        with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
            assert ops.load(SessionStore(store.session_key)) == {}
        assert "Session data corrupted" in caplog.text
        assert r.get(key_of(store)) == raw  # not ours to delete


def test_wrong_redis_type_loads_empty_with_timeouts(
    ops: Ops, r: Any, timeout_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with timeout_settings(idle_timeout=100):
        store = new_session(ops, a=1)
        r.delete(key_of(store))
        r.hset(key_of(store), "a", "1")
        with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
            assert ops.load(SessionStore(store.session_key)) == {}
        assert "WRONGTYPE" in caplog.text
        assert r.type(key_of(store)) == b"hash"


@pytest.mark.single_only
@pytest.mark.parametrize("policy", ["error", "anonymous"])
def test_redis_down_follows_the_failure_policy(ops: Ops, policy: str) -> None:
    with RedisServer() as server:
        keys = {"idle_timeout": 100, "absolute_timeout": 100, "on_unavailable": policy}
        with override_settings(SESSION_REDIS=session_redis(url=server.url, **keys)):
            store = SessionStore()
            ops.cycle_key(store)
            ops.save(store)
            server.stop()
            fresh = SessionStore(store.session_key)
            if policy == "error":
                with pytest.raises(SessionUnavailable):
                    ops.load(fresh)
            else:
                assert ops.load(fresh) == {}
                assert fresh.session_key == store.session_key  # kept for later


def test_reads_and_expiry_refreshes_do_not_wait_for_replicas() -> None:
    key = "session:x"
    for script in (scripts.LOAD, scripts.NOW, scripts.TOUCH, scripts.DEADLINED[scripts.TOUCH]):
        assert not driver.needs_wait((scripts.EVALSHA, script, key))
    for script in (scripts.SAVE, scripts.REPLACE, scripts.CREATE):
        assert driver.needs_wait((scripts.EVALSHA, scripts.DEADLINED[script], key))


def test_writes_wait_for_replicas_with_timeouts(
    ops: Ops, r: Any, timeout_settings: Any, redis_topology: str
) -> None:
    """With wait_replicas, timed writes still wait (and fail when no replica answers)."""
    if redis_topology == "single":
        with timeout_settings(absolute_timeout=100, wait_replicas=1, wait_timeout=100):
            store = SessionStore()
            with pytest.raises(SessionUnavailable, match="replicas"):
                ops.cycle_key(store)
    else:  # one replica per primary: the sign-in is acknowledged
        with timeout_settings(absolute_timeout=100, wait_replicas=1):
            since = redis_now_ms(r)
            store = SessionStore()
            ops.cycle_key(store)
            ops.setitem(store, "_auth_user_id", "1")  # the sign-in
            ops.save(store)
            remaining = ops.get_absolute_remaining(SessionStore(store.session_key))
            assert remaining in left_after(r, since, 100)


@pytest.mark.single_only
def test_one_expiry_refresh_per_request_even_when_saving_every_request(
    client: Any, r: Any, timeout_settings: Any
) -> None:
    with timeout_settings(idle_timeout=100), override_settings(SESSION_SAVE_EVERY_REQUEST=True):
        client.get("/counter/")
        key = only_key(r)
        client.get("/get/")  # loads the scripts
        r.pexpire(key, 50_000)
        r.config_resetstat()
        since = redis_now_ms(r)
        response = client.get("/get/")
        assert r.info("commandstats")["cmdstat_pexpire"]["calls"] == 1
        assert int(response.cookies[COOKIE]["max-age"]) in left_after(r, since, 100)
        r.config_resetstat()
        client.get("/get/")  # not due: Django's rule still refreshes, once
        assert r.info("commandstats")["cmdstat_pexpire"]["calls"] == 1


def test_idle_user_starts_over_and_active_one_does_not(
    middleware: str, client: Any, timeout_settings: Any
) -> None:
    with timeout_settings(idle_timeout=1):
        assert [client.get("/counter/").content for _ in range(2)] == [b"1", b"2"]
        time.sleep(0.5)
        assert client.get("/counter/").content == b"3"  # within the window
        time.sleep(1.1)
        assert client.get("/counter/").content == b"1"  # idle too long: a new session
