"""Native compare-and-set (``SET key value IFEQ expected GET PX ms``): Valkey 8.1+, Redis 8.4+.

The primitive the save path can use instead of the SAVE script where the server
has it: the command's shape, what its reply means, and the once-per-pool check
of whether the server takes it. Each test that needs IFEQ runs where the server
has it (``--redis-server=valkey``); on older servers their twins check that
detection says no and that the server refuses the command.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.contrib.sessions.backends.base import UpdateError
from django.test import override_settings

from django_redis_sessions import codec, connection, driver, scripts, signals
from django_redis_sessions.connection import Server, server_of
from django_redis_sessions.scripts import Swap, set_ifeq, swap_outcome
from django_redis_sessions.session import SessionStore
from testproject.redis_server import HOST, RedisServer, find_redis_server, free_port
from tests.conftest import session_redis
from tests.topology import client_for, wait_for
from tests.twins import ENGINE_COMMANDS, Ops

KEY = "session:ifeq"


def ask() -> Generator[tuple[Any, ...], Any, bool]:
    """A one-step operation: does the server take IFEQ?"""
    supported: bool = yield (scripts.IFEQ_SUPPORTED,)
    return supported


def detect(is_async: bool, times: int = 1) -> list[bool]:
    """Ask ``times`` times; async ones in one event loop (one client, one pool)."""
    if is_async:

        async def asks() -> list[bool]:
            return [await driver.arun(ask()) for _ in range(times)]

        return async_to_sync(asks)()
    return [driver.run(ask()) for _ in range(times)]


def info_calls(r: Any) -> int:
    return int(r.info("commandstats").get("cmdstat_info", {}).get("calls", 0))


@pytest.fixture
def ifeq(redis_server: Server) -> None:
    if not redis_server.has_ifeq:
        pytest.skip(
            f"{redis_server.name} {redis_server.version} has no SET IFEQ (--redis-server=valkey)"
        )


# What the reply means -------------------------------------------------------------


def test_the_expected_value_back_means_written() -> None:
    assert swap_outcome(b"j1:3:{}", b"j1:3:{}") == (Swap.WRITTEN, None)


def test_another_value_back_is_the_one_to_merge_with() -> None:
    assert swap_outcome(b"j1:4:{}", b"j1:3:{}") == (Swap.CONFLICT, b"j1:4:{}")


def test_nil_means_nothing_written_and_no_value() -> None:
    assert swap_outcome(None, b"j1:3:{}") == (Swap.NO_VALUE, None)


def test_a_decoded_reply_compares_as_bytes() -> None:
    assert swap_outcome("j1:3:{}", b"j1:3:{}") == (Swap.WRITTEN, None)
    assert swap_outcome("j1:4:é", b"j1:3:{}") == (Swap.CONFLICT, "j1:4:é".encode())


def test_the_command_shape() -> None:
    assert set_ifeq(KEY, b"new", b"old", 5000) == (
        "SET", KEY, b"new", "IFEQ", b"old", "GET", "PX", 5000,
    )  # fmt: skip


# Which servers have it ------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "expected", "has_ifeq"),
    [
        ({"redis_version": "7.0.15"}, Server("redis", (7, 0, 15)), False),
        ({"redis_version": "8.2.1"}, Server("redis", (8, 2, 1)), False),
        ({"redis_version": "8.4.0"}, Server("redis", (8, 4, 0)), True),
        ({"redis_version": "7.2.4", "valkey_version": "8.0.2"}, Server("valkey", (8, 0, 2)), False),
        ({"redis_version": "7.2.4", "valkey_version": "8.1.8"}, Server("valkey", (8, 1, 8)), True),
        ({"redis_version": "7.2.4", "valkey_version": "9.0.0"}, Server("valkey", (9, 0, 0)), True),
        ({"redis_version": "255.255.255-rc"}, Server("redis", (255, 255)), True),
        ({}, Server("redis", ()), False),
    ],
)
def test_server_of_reads_info_server(
    info: dict[str, str], expected: Server, has_ifeq: bool
) -> None:
    assert server_of(info) == expected
    assert expected.has_ifeq is has_ifeq


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_detection_asks_once_per_pool(is_async: bool, redis_server: Server, r: Any) -> None:
    connection.reset()
    r.config_resetstat()
    assert detect(is_async, times=3) == [redis_server.has_ifeq] * 3
    # One INFO server per pool (one per primary on a Cluster), not one per operation.
    primaries = 3 if isinstance(r, redis.cluster.RedisCluster) else 1
    assert info_calls(r) == primaries


def test_detection_says_no_without_ifeq(redis_server: Server) -> None:
    if redis_server.has_ifeq:
        pytest.skip(f"{redis_server.name} {redis_server.version} has IFEQ")
    connection.reset()
    assert detect(False) == [False]
    assert detect(True) == [False]


@pytest.mark.single_only
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_detection_says_no_when_info_is_refused(is_async: bool, r: redis.Redis) -> None:
    r.acl_setuser(
        "noinfo", enabled=True, passwords=["+pw"], commands=["+@all", "-info"], keys=["~*"]
    )
    try:
        url = session_redis()["url"].replace("redis://", "redis://noinfo:pw@")
        with override_settings(SESSION_REDIS=session_redis(url=url)):
            connection.reset()
            assert detect(is_async) == [False]
    finally:
        connection.reset()
        r.acl_deluser("noinfo")


def test_a_server_without_ifeq_refuses_the_command(redis_server: Server, r: Any) -> None:
    if redis_server.has_ifeq:
        pytest.skip(f"{redis_server.name} {redis_server.version} has IFEQ")
    r.set(KEY, b"old")
    with pytest.raises(redis.ResponseError) as refused:
        r.execute_command(*set_ifeq(KEY, b"new", b"old", 5000))
    assert scripts.ifeq_refused(refused.value)
    assert r.get(KEY) == b"old"


# On a server that has it: one command, counted server-side -------------------------


def swap(value: bytes, expected: bytes, ttl: int) -> Generator[tuple[Any, ...], Any, Any]:
    reply = yield set_ifeq(KEY, value, expected, ttl)
    return reply


def run_ifeq(r: Any, value: bytes, expected: bytes, ttl: int = 50_000) -> list[Any]:
    """The reply through the sync and the async driver (the second sees the first's write)."""
    replies = []
    for is_async in (False, True):
        r.config_resetstat()
        steps = swap(value, expected, ttl)
        replies.append(async_to_sync(driver.arun)(steps) if is_async else driver.run(steps))
        stats = r.info("commandstats")
        # The whole compare-and-set is one SET: no script, no GET before it.
        assert stats["cmdstat_set"]["calls"] == 1
        assert not {"cmdstat_evalsha", "cmdstat_eval", "cmdstat_get"} & stats.keys()
    return replies


@pytest.mark.usefixtures("ifeq")
def test_ifeq_writes_when_the_value_is_the_expected_one(r: Any) -> None:
    r.set(KEY, b"j1:1:{}", px=100_000)
    first, second = run_ifeq(r, b"j1:2:{}", b"j1:1:{}", ttl=50_000)
    assert swap_outcome(first, b"j1:1:{}") == (Swap.WRITTEN, None)
    assert r.get(KEY) == b"j1:2:{}"
    # The same save again, from a request that read version 1 too: it lost the race.
    assert swap_outcome(second, b"j1:1:{}") == (Swap.CONFLICT, b"j1:2:{}")
    assert 45_000 < r.pttl(KEY) <= 50_000


@pytest.mark.usefixtures("ifeq")
def test_ifeq_hands_back_the_newer_value_and_writes_nothing(r: Any) -> None:
    r.set(KEY, b"j1:2:{}", px=100_000)
    for reply in run_ifeq(r, b"j1:2:{}", b"j1:1:{}"):
        assert swap_outcome(reply, b"j1:1:{}") == (Swap.CONFLICT, b"j1:2:{}")
    assert r.get(KEY) == b"j1:2:{}"
    assert r.pttl(KEY) > 95_000  # the expiry is the newer write's


@pytest.mark.usefixtures("ifeq")
def test_ifeq_never_recreates_an_ended_session(r: Any) -> None:
    for reply in run_ifeq(r, b"j1:2:{}", b"j1:1:{}"):
        assert swap_outcome(reply, b"j1:1:{}") == (Swap.NO_VALUE, None)
    assert r.exists(KEY) == 0


@pytest.mark.usefixtures("ifeq")
def test_ifeq_on_another_type_is_wrongtype(r: Any) -> None:
    r.hset(KEY, "field", "value")
    # The driver hands the operation a WrongType (someone else's key): never a 500.
    assert isinstance(driver.run(swap(b"j1:2:{}", b"j1:1:{}", 5000)), driver.WrongType)
    assert r.type(KEY) == b"hash"


@pytest.mark.usefixtures("ifeq")
def test_ifeq_compares_every_byte(r: Any) -> None:
    # Sealed or compressed values are binary: the comparison is on bytes, not text.
    stored = b"e1:7:\x00\xff\x80binary"
    r.set(KEY, stored)
    for reply in run_ifeq(r, b"x", stored[:-1] + b"Y"):
        assert swap_outcome(reply, stored[:-1] + b"Y") == (Swap.CONFLICT, stored)
    written, _ = run_ifeq(r, b"e1:8:\x00", stored)
    assert swap_outcome(written, stored) == (Swap.WRITTEN, None)
    assert r.get(KEY) == b"e1:8:\x00"


@contextlib.contextmanager
def streaming_replica(r: Any, redis_url: str) -> Iterator[RedisServer]:
    """A replica of the suite's server, in sync before the test goes on."""
    port = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs["port"]
    with RedisServer(args=["--replicaof", HOST, str(port)]) as replica:

        def streaming() -> bool:
            with r.pipeline(transaction=False) as pipe:
                pipe.set("session:sync", 1).wait(1, 100)
                return bool(pipe.execute()[1] >= 1)

        wait_for(streaming, 30, "the replica to sync")
        yield replica


@pytest.mark.single_only
@pytest.mark.usefixtures("ifeq")
def test_ifeq_then_wait_for_replicas(r: Any, redis_url: str) -> None:
    # With wait_replicas, the SET and its WAIT go as one pipeline: the reply keeps its value.
    with streaming_replica(r, redis_url) as replica:
        r.set(KEY, b"j1:1:{}")
        with override_settings(SESSION_REDIS=session_redis(wait_replicas=1, wait_timeout=500)):
            connection.reset()
            first, second = run_ifeq(r, b"j1:2:{}", b"j1:1:{}")
        assert swap_outcome(first, b"j1:1:{}") == (Swap.WRITTEN, None)
        assert swap_outcome(second, b"j1:1:{}") == (Swap.CONFLICT, b"j1:2:{}")
        assert client_for(replica).get(KEY) == b"j1:2:{}"
    connection.reset()


def test_forgetting_asks_again(redis_server: Server, r: Any) -> None:
    # After a refused IFEQ (a failover to an older server) the store asks again.
    connection.reset()
    r.config_resetstat()
    assert detect(False) == [redis_server.has_ifeq]
    connection.forget_capabilities(connection.get_client())
    assert detect(False, times=2) == [redis_server.has_ifeq] * 2
    primaries = 3 if isinstance(r, redis.cluster.RedisCluster) else 1
    assert info_calls(r) == 2 * primaries


def test_only_a_syntax_error_means_no_ifeq() -> None:
    assert scripts.ifeq_refused(redis.ResponseError("syntax error"))
    assert scripts.ifeq_refused(redis.ResponseError("ERR syntax error"))
    assert not scripts.ifeq_refused(redis.ResponseError("WRONGTYPE Operation against a key"))


# The store's save: native where the server has it, the script elsewhere ----------------

NATIVE_SAVE = {"cmdstat_set": 1}
SCRIPT_SAVE = {"cmdstat_evalsha": 1, "cmdstat_getrange": 1, "cmdstat_set": 1}


def engine_calls(r: Any) -> dict[str, int]:
    """What the server ran since its stats were reset, connection chatter left out."""
    stats = r.info("commandstats")
    return {k: int(v["calls"]) for k, v in stats.items() if k[8:] in ENGINE_COMMANDS}


def loaded_store(ops: Ops, **data: Any) -> SessionStore:
    """A session saved once, then loaded by another store (a new request)."""
    first = SessionStore()
    for name, value in data.items():
        ops.setitem(first, name, value)
    ops.save(first)
    store = SessionStore(first.session_key)
    ops.items(store)
    return store


@pytest.mark.parametrize(
    "features",
    [{}, {"compress_min_bytes": 1}, {"encryption_keys": ["k1:" + "B" * 43]}],
    ids=["plain", "compressed", "encrypted"],
)
def test_a_save_is_one_native_set_where_the_server_has_it(
    ops: Ops, r: Any, redis_server: Server, features: dict[str, Any]
) -> None:
    with override_settings(SESSION_REDIS=session_redis(**features)):
        store = loaded_store(ops, a="x" * 200)
        ops.setitem(store, "b", 2)
        r.script_load(scripts.SAVE.source)
        r.config_resetstat()
        ops.save(store)
        assert engine_calls(r) == (NATIVE_SAVE if redis_server.has_ifeq else SCRIPT_SAVE)
        # Its expected value is the one it wrote: the next save is native too, with no read.
        ops.setitem(store, "c", 3)
        r.config_resetstat()
        ops.save(store)
        assert engine_calls(r) == (NATIVE_SAVE if redis_server.has_ifeq else SCRIPT_SAVE)
        assert ops.items(SessionStore(store.session_key)) == {"a": "x" * 200, "b": 2, "c": 3}


def test_a_conflict_merges_with_the_value_handed_back(
    ops: Ops, r: Any, redis_server: Server
) -> None:
    seen: list[int] = []

    def conflict(sender: Any, attempt: int, **kwargs: Any) -> None:
        seen.append(attempt)

    ours = loaded_store(ops, shared=0)
    theirs = SessionStore(ours.session_key)
    ops.setitem(theirs, "theirs", 1)
    ops.save(theirs)
    ops.setitem(ours, "ours", 1)
    r.script_load(scripts.SAVE.source)
    r.config_resetstat()
    signals.save_conflict.connect(conflict)
    try:
        ops.save(ours)
    finally:
        signals.save_conflict.disconnect(conflict)
    calls = engine_calls(r)
    assert seen == [1]
    assert ops.items(SessionStore(ours.session_key)) == {"shared": 0, "theirs": 1, "ours": 1}
    if redis_server.has_ifeq:  # the SET that found their value handed it back: no GET
        assert calls == {"cmdstat_set": 2}
    else:  # the script's own GET hands it back
        assert calls == {
            "cmdstat_evalsha": 2, "cmdstat_getrange": 2, "cmdstat_get": 1, "cmdstat_set": 1,
        }  # fmt: skip


def test_a_save_after_an_end_does_not_bring_it_back(ops: Ops, r: Any, redis_server: Server) -> None:
    store = loaded_store(ops, a=1)
    ops.delete(SessionStore(), store.session_key)
    ops.setitem(store, "b", 2)
    r.script_load(scripts.SAVE.source)
    r.config_resetstat()
    with pytest.raises(UpdateError):
        ops.save(store)
    assert r.dbsize() == 0
    if redis_server.has_ifeq:  # nil from SET IFEQ GET, then one GET that confirms it is gone
        assert engine_calls(r) == {"cmdstat_set": 1, "cmdstat_get": 1}
    else:
        assert engine_calls(r) == {"cmdstat_evalsha": 1, "cmdstat_getrange": 1}


@pytest.mark.parametrize(
    "foreign",
    [b"not a session", b"t1", b"j1:007:{}", b"x1:2:{}", None],
    ids=["text", "tombstone", "bad-version", "bad-format", "hash"],
)
def test_a_value_not_ours_is_never_overwritten(ops: Ops, r: Any, foreign: bytes | None) -> None:
    # As the SAVE script does: such a value means the session is gone (UpdateError).
    store = loaded_store(ops, a=1)
    redis_key = codec.redis_key("session:", store.session_key or "")
    r.delete(redis_key)
    if foreign is None:
        r.hset(redis_key, "field", "value")
    else:
        r.set(redis_key, foreign)
    ops.setitem(store, "b", 2)
    with pytest.raises(UpdateError):
        ops.save(store)
    if foreign is None:
        assert r.hgetall(redis_key) == {b"field": b"value"}
    else:
        assert r.get(redis_key) == foreign


@pytest.mark.usefixtures("ifeq")
@pytest.mark.parametrize(
    ("features", "data", "native"),
    [
        ({"idle_timeout": 600}, {"a": 1}, True),
        ({"absolute_timeout": 600}, {"a": 1}, True),  # nobody signed in: no deadline
        ({"absolute_timeout": 600}, {"_auth_user_id": "7"}, False),
    ],
    ids=["idle", "absolute-anonymous", "absolute-signed-in"],
)
def test_a_deadline_keeps_the_script(
    ops: Ops, r: Any, features: dict[str, Any], data: dict[str, Any], native: bool
) -> None:
    # The deadlined script measures the time left on Redis's clock and ends the
    # session past it; IFEQ cannot, so a session with a deadline keeps the script.
    with override_settings(SESSION_REDIS=session_redis(**features)):
        store = loaded_store(ops, **data)
        ops.setitem(store, "b", 2)
        r.config_resetstat()
        ops.save(store)
        calls = engine_calls(r)
        assert ("cmdstat_evalsha" not in calls) is native
        assert calls.get("cmdstat_set") == 1
        saved = ops.items(SessionStore(store.session_key))
        assert saved.items() >= {**data, "b": 2}.items()


async def refused_then_script(is_async: bool) -> None:
    """One event loop (one async client) for the whole story, as a worker has."""

    async def save(store: SessionStore, **data: Any) -> None:
        store.update(data)
        await store.asave() if is_async else store.save()

    port = free_port()
    # The same address throughout: the pool (and what it learnt) stays.
    with override_settings(SESSION_REDIS=session_redis(url=f"redis://{HOST}:{port}/0")):
        connection.reset()
        with RedisServer(port=port, binary=find_redis_server("valkey")) as valkey:
            store = SessionStore()
            await save(store, a=1)
            await save(store, b=2)  # a native save: the pool knows IFEQ
            redis_key = codec.redis_key("session:", store.session_key or "")
            stored = client_for(valkey).get(redis_key)
            assert stored is not None
        with RedisServer(port=port, binary=find_redis_server("redis")) as old:
            client = client_for(old)
            client.set(redis_key, stored, px=60_000)
            client.config_resetstat()
            await save(store, c=3)
            stats = client.info("commandstats")
            # The SET ... IFEQ was refused; the script wrote instead.
            refused = stats["cmdstat_set"]
            assert refused["failed_calls"] + refused.get("rejected_calls", 0) == 1
            assert stats["cmdstat_evalsha"]["calls"] == 1
            # Asked again (one INFO): this server says no, the next save takes the script.
            await save(store, d=4)
            stats = client.info("commandstats")
            assert stats["cmdstat_evalsha"]["calls"] == 2
            assert stats["cmdstat_info"]["calls"] == 2  # the detection and our first look
            assert codec.split(client.get(redis_key) or b"")[1] == b"4"
            assert SessionStore(store.session_key).load() == {"a": 1, "b": 2, "c": 3, "d": 4}
        connection.reset()


@pytest.mark.single_only
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_refused_ifeq_falls_back_to_the_script(is_async: bool) -> None:
    # The pool learnt IFEQ from a Valkey; then an older Redis answers at the same
    # address (a downgrade, a failover behind a proxy). The save that meets the
    # refusal runs the script; the next one asks the server again.
    async_to_sync(refused_then_script)(is_async)


@pytest.mark.single_only
@pytest.mark.usefixtures("ifeq")
def test_a_native_save_waits_for_replicas(ops: Ops, r: Any, redis_url: str) -> None:
    with streaming_replica(r, redis_url) as replica:
        with override_settings(SESSION_REDIS=session_redis(wait_replicas=1, wait_timeout=500)):
            connection.reset()
            store = loaded_store(ops, a=1)
            ops.setitem(store, "b", 2)
            r.config_resetstat()
            ops.save(store)
            assert engine_calls(r) == {"cmdstat_set": 1, "cmdstat_wait": 1}
            redis_key = codec.redis_key("session:", store.session_key or "")
            # WAIT came back with the replica's acknowledgement: it has the write.
            assert client_for(replica).get(redis_key) == r.get(redis_key)
        connection.reset()


@pytest.mark.single_only
@pytest.mark.parametrize("allowed", [True, False], ids=["info", "no-info"])
def test_the_documented_acl_user_takes_the_native_save(
    r: redis.Redis, redis_server: Server, allowed: bool
) -> None:
    # docs/failure.rst's user has +info: detection works, saves are native where
    # the server has IFEQ; without it, the scripts.
    from tests.test_faults import ACL_RULES

    rules = ACL_RULES if allowed else [rule for rule in ACL_RULES if rule != "+info"]
    r.execute_command("ACL", "SETUSER", "sessions", "reset", *rules)
    try:
        url = session_redis()["url"].replace("redis://", "redis://sessions:s3cret@")
        with override_settings(SESSION_REDIS=session_redis(url=url, user_index=False)):
            connection.reset()
            store = loaded_store(Ops("sync"), a=1)
            store["b"] = 2
            r.script_load(scripts.SAVE.source)
            r.config_resetstat()
            store.save()
            native = allowed and redis_server.has_ifeq
            assert engine_calls(r) == (NATIVE_SAVE if native else SCRIPT_SAVE)
    finally:
        connection.reset()
        r.acl_deluser("sessions")


@pytest.mark.parametrize("after", ["clear", "unchanged"])
def test_clear_and_the_expiry_refresh_keep_their_scripts(ops: Ops, r: Any, after: str) -> None:
    # After clear() no version is known (REPLACE); an unchanged session only has
    # its TTL moved (TOUCH): both stay scripts, on every server.
    store = loaded_store(ops, a=1)
    if after == "clear":
        store.clear()
        ops.setitem(store, "b", 2)
    else:
        store.modified = True
    script = scripts.REPLACE if after == "clear" else scripts.TOUCH
    r.script_load(script.source)
    r.config_resetstat()
    ops.save(store)
    calls = engine_calls(r)
    assert calls["cmdstat_evalsha"] == 1
    assert ops.items(SessionStore(store.session_key)) == (
        {"b": 2} if after == "clear" else {"a": 1}
    )


def as_redis_84_may(steps: Generator[tuple[Any, ...], Any, Any]) -> Any:
    """Drive ``steps`` on the real server, but answer a SET ... IFEQ ... GET whose
    condition failed with nil, as parts of Redis 8.4's documentation describe."""
    client = connection.get_client()
    command = next(steps)
    try:
        while True:
            reply = driver.execute(client, command)
            if command[0] == scripts.SET and scripts.IFEQ in command and reply != command[4]:
                reply = None
            command = steps.send(reply)
    except StopIteration as stop:
        return stop.value


@pytest.mark.usefixtures("ifeq")
def test_nil_for_a_failed_condition_is_told_from_a_gone_session_by_one_get(r: Any) -> None:
    ours = loaded_store(Ops("sync"), shared=0)
    theirs = SessionStore(ours.session_key)
    theirs["theirs"] = 1
    theirs.save()
    ours["ours"] = 1
    r.config_resetstat()
    as_redis_84_may(ours._save(must_create=False))
    # nil, then the GET found their newer session: merged onto it, not taken for gone.
    assert engine_calls(r) == {"cmdstat_set": 2, "cmdstat_get": 1}
    assert SessionStore(ours.session_key).load() == {"shared": 0, "theirs": 1, "ours": 1}
    # And nil with no key behind it is the end it looks like.
    SessionStore().delete(ours.session_key)
    ours["more"] = 2
    with pytest.raises(UpdateError):
        as_redis_84_may(ours._save(must_create=False))
    assert r.dbsize() == 0
