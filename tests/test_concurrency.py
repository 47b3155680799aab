"""No lost updates: concurrent saves of one session keep each other's changes."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.test import Client, override_settings

from django_redis_sessions import SessionUnavailable, codec, scripts, signals
from django_redis_sessions.connection import Server
from django_redis_sessions.session import SessionStore
from tests.conftest import session_redis
from tests.twins import ENGINE_COMMANDS, Ops

COOKIE = settings.SESSION_COOKIE_NAME


def saved(ops: Ops, **data: Any) -> str:
    store = SessionStore()
    for key, value in data.items():
        ops.setitem(store, key, value)
    ops.save(store)
    assert store.session_key is not None
    return store.session_key


def loaded(ops: Ops, session_key: str) -> SessionStore:
    """A store that has loaded the session, as a request does when it first reads it."""
    store = SessionStore(session_key)
    ops.items(store)
    return store


def read(ops: Ops, session_key: str) -> dict[str, Any]:
    return ops.items(SessionStore(session_key))


@pytest.fixture
def conflicts() -> Iterator[list[int]]:
    seen: list[int] = []

    def receiver(sender: Any, attempt: int, **kwargs: Any) -> None:
        seen.append(attempt)

    signals.save_conflict.connect(receiver)
    yield seen
    signals.save_conflict.disconnect(receiver)


# Forced conflicts: another request writes between this one's load and save ---------


def test_different_keys_both_persist(ops: Ops, conflicts: list[int]) -> None:
    key = saved(ops, shared=0)
    a, b = loaded(ops, key), loaded(ops, key)
    ops.setitem(a, "cart", ["book"])
    ops.setitem(b, "banner_dismissed", True)
    ops.save(b)
    ops.save(a)
    assert read(ops, key) == {"shared": 0, "cart": ["book"], "banner_dismissed": True}
    assert conflicts == [1]


def test_same_key_last_writer_wins_for_that_key_only(ops: Ops) -> None:
    key = saved(ops, theme="light", lang="en")
    a, b = loaded(ops, key), loaded(ops, key)
    ops.setitem(b, "theme", "dark")
    ops.setitem(b, "lang", "fr")
    ops.save(b)
    ops.setitem(a, "theme", "blue")
    ops.save(a)
    assert read(ops, key) == {"theme": "blue", "lang": "fr"}


def test_in_place_mutation_is_seen(ops: Ops) -> None:
    key = saved(ops, cart=["book"], prefs={"tags": ["a"]})
    a, b = loaded(ops, key), loaded(ops, key)
    ops.getitem(a, "cart").append("pen")
    ops.getitem(a, "prefs")["tags"].append("b")
    a.modified = True
    ops.setitem(b, "seen", 1)
    ops.save(b)
    ops.save(a)
    assert read(ops, key) == {"cart": ["book", "pen"], "prefs": {"tags": ["a", "b"]}, "seen": 1}


def test_deleted_key_stays_deleted(ops: Ops) -> None:
    key = saved(ops, flash="hi", other=1)
    a, b = loaded(ops, key), loaded(ops, key)
    ops.pop(a, "flash")
    ops.setitem(b, "other", 2)
    ops.save(b)
    ops.save(a)
    assert read(ops, key) == {"other": 2}


def test_untouched_key_is_not_brought_back(ops: Ops) -> None:
    key = saved(ops, flash="hi", other=1)
    a, b = loaded(ops, key), loaded(ops, key)
    ops.pop(b, "flash")
    ops.save(b)
    ops.setitem(a, "other", 2)
    ops.save(a)
    assert read(ops, key) == {"other": 2}


def test_type_change_with_equal_value_is_a_change(ops: Ops) -> None:
    key = saved(ops, flag=1)
    a, b = loaded(ops, key), loaded(ops, key)
    ops.setitem(a, "flag", True)
    ops.setitem(b, "x", 1)
    ops.save(b)
    ops.save(a)
    assert read(ops, key) == {"flag": True, "x": 1}


def test_clear_keeps_its_meaning(ops: Ops) -> None:
    key = saved(ops, a=1)
    a, b = loaded(ops, key), loaded(ops, key)
    ops.setitem(b, "b", 2)
    ops.save(b)
    a.clear()
    ops.setitem(a, "fresh", True)
    ops.save(a)
    assert read(ops, key) == {"fresh": True}


def test_expiry_follows_the_merged_data(ops: Ops, r: redis.Redis) -> None:
    key = saved(ops, a=1)
    a, b = loaded(ops, key), loaded(ops, key)
    ops.set_expiry(b, 60)
    ops.save(b)
    ops.setitem(a, "c", 3)
    ops.save(a)
    assert read(ops, key) == {"a": 1, "_session_expiry": 60, "c": 3}
    assert 55_000 < r.pttl(codec.redis_key("session:", key)) <= 60_000


def test_merge_onto_a_deleted_session_raises(ops: Ops) -> None:
    key = saved(ops, a=1)
    a = loaded(ops, key)
    ops.delete(SessionStore(), key)
    ops.setitem(a, "b", 2)
    with pytest.raises(UpdateError):
        ops.save(a)


def test_repeated_conflicts_reapply_only_own_changes(ops: Ops, conflicts: list[int]) -> None:
    key = saved(ops, counter=0)
    a = loaded(ops, key)
    rival_writes = iter([1, 2])

    def rival(sender: Any, attempt: int, **kwargs: Any) -> None:
        value = next(rival_writes, None)
        if value is not None:  # another request saves while `a` is merging
            other = SessionStore(key)
            other["counter"] = value
            other.save()

    signals.save_conflict.connect(rival)
    try:
        other = SessionStore(key)
        other["counter"] = 100
        other.save()
        ops.setitem(a, "mine", True)
        ops.save(a)
    finally:
        signals.save_conflict.disconnect(rival)
    assert conflicts == [1, 2, 3]
    assert read(ops, key) == {"counter": 2, "mine": True}


def test_endless_conflicts_give_up_without_writing(ops: Ops) -> None:
    key = saved(ops, counter=0)
    a = loaded(ops, key)

    def rival(sender: Any, attempt: int, **kwargs: Any) -> None:
        other = SessionStore(key)
        other["counter"] = attempt
        other.save()

    with override_settings(SESSION_REDIS=session_redis(max_conflict_retries=3)):
        a._config = SessionStore()._config
        other = SessionStore(key)
        other["counter"] = -1
        other.save()
        signals.save_conflict.connect(rival)
        try:
            ops.setitem(a, "mine", True)
            with pytest.raises(SessionUnavailable, match="kept changing"):
                ops.save(a)
        finally:
            signals.save_conflict.disconnect(rival)
        assert read(ops, key) == {"counter": 3}


def test_uncontended_save_is_one_command(ops: Ops, r: redis.Redis, redis_server: Server) -> None:
    key = saved(ops, a=1)
    a = loaded(ops, key)
    ops.setitem(a, "b", 2)
    r.script_load(scripts.SAVE.source)
    r.config_resetstat()
    ops.save(a)
    # Handshakes of fresh connections (each async call here runs in a new event
    # loop) and a topology's own chatter are not the engine's commands.
    stats = r.info("commandstats")
    calls = {
        k: v["calls"] for k, v in stats.items() if k.removeprefix("cmdstat_") in ENGINE_COMMANDS
    }
    if redis_server.has_ifeq:  # the native compare-and-set: one SET ... IFEQ, no script
        assert calls == {"cmdstat_set": 1}
    else:  # one EVALSHA; the GETRANGE and SET are the script's own, server-side
        assert calls == {"cmdstat_evalsha": 1, "cmdstat_getrange": 1, "cmdstat_set": 1}


# Real concurrency through the real middleware ---------------------------------------

ROUNDS = 40


def hammer(cookie: str, name: str, rounds: int, append: bool = False) -> list[str]:
    """Update the session ``rounds`` times; return what went wrong (nothing, we hope)."""
    client = Client()
    client.cookies[COOKIE] = cookie
    problems = []
    for n in range(rounds):
        url = f"/append/{name}/{n}/" if append else f"/set/{name}/{n}/"
        response = client.get(url)
        if response.status_code != 200 or client.cookies[COOKIE].value != cookie:
            problems.append(f"{url}: {response.status_code} {response.content!r}")
    return problems


def _child(cookie: str) -> None:  # pragma: no cover - runs in a forked process
    import os

    try:
        problems = hammer(cookie, "process", ROUNDS)
    except BaseException:
        os._exit(2)
    os._exit(1 if problems else 0)


def test_threads_and_a_process_lose_no_update() -> None:
    client = Client()
    client.get("/counter/")
    cookie = client.cookies[COOKIE].value
    problems: list[str] = []

    def worker(*args: Any) -> None:
        problems.extend(hammer(*args))

    threads = [threading.Thread(target=worker, args=(cookie, f"t{i}", ROUNDS)) for i in range(4)]
    threads.append(threading.Thread(target=worker, args=(cookie, "list", ROUNDS, True)))
    process = multiprocessing.get_context("fork").Process(target=_child, args=(cookie,))
    process.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    process.join(60)
    assert problems == []
    assert process.exitcode == 0
    final = client.get("/get/").json()
    expected_last = str(ROUNDS - 1)
    assert {k: final[k] for k in ("t0", "t1", "t2", "t3", "process")} == dict.fromkeys(
        ("t0", "t1", "t2", "t3", "process"), expected_last
    )
    assert final["list"] == [str(n) for n in range(ROUNDS)]
    assert final["visits"] == 1


def test_conflict_with_an_expired_newer_version_deletes(ops: Ops, r: redis.Redis) -> None:
    key = saved(ops, a=1)
    a = loaded(ops, key)
    # Another app server, its clock ahead, wrote an expiry that is already past here.
    r.set(
        codec.redis_key("session:", key),
        b'j1:9:{"a":1,"_session_expiry":"2000-01-01T00:00:00+00:00"}',
        px=60_000,
    )
    ops.setitem(a, "b", 2)
    ops.save(a)
    assert r.dbsize() == 0


@pytest.mark.plaintext_values
def test_conflict_with_a_corrupt_newer_body_keeps_our_data(ops: Ops, r: redis.Redis) -> None:
    key = saved(ops, a=1)
    a = loaded(ops, key)
    r.set(codec.redis_key("session:", key), b'j1:9:{"trunc', px=60_000)
    ops.setitem(a, "b", 2)
    ops.save(a)
    assert r.get(codec.redis_key("session:", key)) == b'j1:10:{"b":2}'


def test_a_key_only_we_added_survives_their_deletion_of_others(ops: Ops) -> None:
    key = saved(ops, a=1, b=2)
    a, b = loaded(ops, key), loaded(ops, key)
    ops.pop(b, "a")
    ops.save(b)
    ops.setitem(a, "c", 3)
    ops.save(a)
    assert read(ops, key) == {"b": 2, "c": 3}
