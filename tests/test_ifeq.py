"""Native compare-and-set (``SET key value IFEQ expected GET PX ms``): Valkey 8.1+, Redis 8.4+.

The primitive the save path can use instead of the SAVE script where the server
has it: the command's shape, what its reply means, and the once-per-pool check
of whether the server takes it. Each test that needs IFEQ runs where the server
has it (``--redis-server=valkey``); on older servers their twins check that
detection says no and that the server refuses the command.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.test import override_settings

from django_redis_sessions import connection, driver, scripts
from django_redis_sessions.connection import Server, server_of
from django_redis_sessions.scripts import Swap, set_ifeq, swap_outcome
from testproject.redis_server import HOST, RedisServer
from tests.conftest import session_redis
from tests.topology import client_for, wait_for

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


@pytest.mark.single_only
@pytest.mark.usefixtures("ifeq")
def test_ifeq_then_wait_for_replicas(r: Any, redis_url: str) -> None:
    # With wait_replicas, the SET and its WAIT go as one pipeline: the reply keeps its value.
    port = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs["port"]
    with RedisServer(args=["--replicaof", HOST, str(port)]) as replica:

        def streaming() -> bool:
            with r.pipeline(transaction=False) as pipe:
                pipe.set("session:sync", 1).wait(1, 100)
                return bool(pipe.execute()[1] >= 1)

        wait_for(streaming, 30, "the replica to sync")
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
