"""Event loops come and go (asyncio.run, async_to_sync, test suites); their connections go too.

Each test records every ResourceWarning (an unclosed connection, transport or
socket) and collects garbage so that any leak surfaces, and counts the server's
clients (CLIENT LIST) before and after.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync

from django_redis_sessions import connection
from django_redis_sessions.session import SessionStore

LOOPS = 20


def client_count(r: redis.Redis) -> int:
    return len(r.client_list())


def settled_count(r: redis.Redis) -> int:
    """The client count once the server has seen the last closes (it sees them a bit later)."""
    last = client_count(r)
    for _ in range(50):
        threading.Event().wait(0.02)
        now = client_count(r)
        if now == last:
            return now
        last = now
    return last


async def roundtrip() -> str | None:
    store = SessionStore()
    await store.aset("n", 1)
    await store.asave()
    assert await SessionStore(store.session_key).aget("n") == 1
    return store.session_key


@pytest.fixture
def resource_warnings() -> Iterator[list[warnings.WarningMessage]]:
    connection.reset()
    gc.collect()  # what earlier tests left behind is theirs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield caught
    connection.reset()


def unclosed(caught: list[warnings.WarningMessage]) -> list[str]:
    gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return True
        done.wait(0.01)
    return condition()


RUNNERS: dict[str, Callable[[], Any]] = {
    "asyncio.run": lambda: asyncio.run(roundtrip()),
    "async_to_sync": lambda: async_to_sync(roundtrip)(),
}


@pytest.mark.parametrize("run", RUNNERS.values(), ids=RUNNERS.keys())
def test_loops_leave_no_connection_open(
    r: redis.Redis, resource_warnings: list[warnings.WarningMessage], run: Callable[[], Any]
) -> None:
    before = settled_count(r)
    for _ in range(LOOPS):
        run()
    # Closed as each loop shut down, not later by the garbage collector (the
    # server may take a moment to notice the last one).
    assert wait_for(lambda: client_count(r) <= before)
    assert unclosed(resource_warnings) == []


def test_reset_closes_the_client_of_a_running_loop(
    r: redis.Redis, resource_warnings: list[warnings.WarningMessage]
) -> None:
    before = settled_count(r)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(roundtrip(), loop).result(5)
        assert wait_for(lambda: client_count(r) == before + 1)
        connection.reset()  # from another thread: the close runs on the loop
        assert wait_for(lambda: client_count(r) <= before)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    assert unclosed(resource_warnings) == []


def test_reset_inside_the_loop_closes_its_client(
    r: redis.Redis, resource_warnings: list[warnings.WarningMessage]
) -> None:
    before = settled_count(r)

    async def main() -> int:
        await roundtrip()
        connection.reset()
        for _ in range(100):  # the close is scheduled on this very loop
            await asyncio.sleep(0.01)
            if client_count(r) <= before:
                break
        return client_count(r)

    assert asyncio.run(main()) <= before
    assert unclosed(resource_warnings) == []


def closed_loop_with_client(r: redis.Redis) -> asyncio.AbstractEventLoop:
    """A loop closed without shutdown_asyncgens(): its client was never told."""
    loop = asyncio.new_event_loop()
    loop.run_until_complete(roundtrip())
    loop.close()
    return loop


def test_reset_releases_clients_of_closed_loops(
    r: redis.Redis, resource_warnings: list[warnings.WarningMessage]
) -> None:
    before = settled_count(r)
    closed_loop_with_client(r)
    assert wait_for(lambda: client_count(r) == before + 1)
    connection.reset()  # closes the sockets itself: no loop is left to do it
    assert wait_for(lambda: client_count(r) <= before)
    assert unclosed(resource_warnings) == []


def test_a_new_loop_releases_clients_of_closed_ones(
    r: redis.Redis, resource_warnings: list[warnings.WarningMessage]
) -> None:
    before = settled_count(r)
    for _ in range(3):
        closed_loop_with_client(r)  # each one releases the one before
        assert wait_for(lambda: client_count(r) == before + 1)
    asyncio.run(roundtrip())
    assert wait_for(lambda: client_count(r) <= before)
    assert unclosed(resource_warnings) == []
