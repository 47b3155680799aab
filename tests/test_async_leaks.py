"""Event loops come and go (asyncio.run, async_to_sync, test suites); their connections go too.

Each test records every ResourceWarning (an unclosed connection, transport or
socket) and collects garbage so that any leak surfaces, and counts the server's
clients (CLIENT LIST) before and after.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.test import override_settings

from django_redis_sessions import connection
from django_redis_sessions.session import SessionStore
from testproject.redis_server import RedisServer
from tests.conftest import Deployment, session_redis
from tests.test_faults import tls_server  # noqa: F401 (a fixture)
from tests.topology import Cluster, SentinelGroup

LOOPS = 20
ROOT = Path(__file__).resolve().parent.parent


Count = Callable[[], int]
Counts = Callable[[], dict[str, int]]


@pytest.fixture
def client_counts(redis_deployment: Deployment) -> Iterator[Counts]:
    """Clients connected to each server of the topology (sentinels included), by URL.

    Replication links and the sentinels' own connections are left out: they
    come and go on their own.
    """
    group = redis_deployment.servers
    if isinstance(group, SentinelGroup):
        urls = [server.url for server in [*group.servers, *group.sentinels]]
    elif isinstance(group, Cluster):
        urls = [node.url for node in group.nodes]
    else:
        urls = [redis_deployment.url]
    watchers = {url: redis.Redis.from_url(url) for url in urls}

    def counts() -> dict[str, int]:
        return {
            url: sum(
                1
                for entry in watcher.client_list()
                if not set(entry["flags"]) & {"S", "M"} and not entry["name"].startswith("sentinel")
            )
            for url, watcher in watchers.items()
        }

    yield counts
    for watcher in watchers.values():
        watcher.close()


@pytest.fixture
def client_count(client_counts: Counts) -> Count:
    """Clients connected to all the topology's servers together."""
    return lambda: sum(client_counts().values())


def settled(count: Count) -> int:
    """The count once the servers have seen the last closes (they see them a bit later)."""
    last = count()
    for _ in range(50):
        threading.Event().wait(0.02)
        now = count()
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
    client_count: Count, resource_warnings: list[warnings.WarningMessage], run: Callable[[], Any]
) -> None:
    before = settled(client_count)
    for _ in range(LOOPS):
        run()
    # Closed as each loop shut down, not later by the garbage collector (the
    # server may take a moment to notice the last one).
    assert wait_for(lambda: client_count() <= before)
    assert unclosed(resource_warnings) == []


def test_reset_closes_the_client_of_a_running_loop(
    client_count: Count, resource_warnings: list[warnings.WarningMessage]
) -> None:
    before = settled(client_count)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(roundtrip(), loop).result(5)
        assert wait_for(lambda: client_count() > before)
        connection.reset()  # from another thread: the close runs on the loop
        assert wait_for(lambda: client_count() <= before)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    assert unclosed(resource_warnings) == []


def test_reset_inside_the_loop_closes_its_client(
    client_count: Count, resource_warnings: list[warnings.WarningMessage]
) -> None:
    before = settled(client_count)

    async def main() -> int:
        await roundtrip()
        connection.reset()
        for _ in range(100):  # the close is scheduled on this very loop
            await asyncio.sleep(0.01)
            if client_count() <= before:
                break
        return client_count()

    assert asyncio.run(main()) <= before
    assert unclosed(resource_warnings) == []


def closed_loop_with_client() -> asyncio.AbstractEventLoop:
    """A loop closed without shutdown_asyncgens(): its client was never told."""
    loop = asyncio.new_event_loop()
    loop.run_until_complete(roundtrip())
    loop.close()
    return loop


def test_reset_releases_clients_of_closed_loops(
    client_count: Count, resource_warnings: list[warnings.WarningMessage]
) -> None:
    before = settled(client_count)
    closed_loop_with_client()
    assert wait_for(lambda: client_count() > before)
    connection.reset()  # closes the sockets itself: no loop is left to do it
    assert wait_for(lambda: client_count() <= before)
    assert unclosed(resource_warnings) == []


def test_a_new_loop_releases_clients_of_closed_ones(
    client_count: Count, resource_warnings: list[warnings.WarningMessage]
) -> None:
    before = settled(client_count)
    for _ in range(3):
        closed_loop_with_client()  # each one releases the one before
        assert wait_for(lambda: client_count() > before)
    asyncio.run(roundtrip())
    assert wait_for(lambda: client_count() <= before)
    assert unclosed(resource_warnings) == []


def test_closed_loops_leave_no_connection_on_any_node(
    client_counts: Counts, resource_warnings: list[warnings.WarningMessage]
) -> None:
    """On a Cluster each loop's client talks to every node: none may keep one."""
    settled(lambda: sum(client_counts().values()))
    before = client_counts()
    for _ in range(LOOPS // 4):
        closed_loop_with_client()  # each one releases the one before
    asyncio.run(roundtrip())

    def none_grew() -> bool:
        now = client_counts()
        return all(now[url] <= count for url, count in before.items())

    assert wait_for(none_grew), (before, client_counts())
    assert unclosed(resource_warnings) == []


SCRIPT = """
import asyncio, gc
import django
django.setup()
from asgiref.sync import async_to_sync
from tests.test_async_leaks import roundtrip
for _ in range(10):
    asyncio.run(roundtrip())
    async_to_sync(roundtrip)()
gc.collect()
print("done")
"""


def test_warnings_as_errors_in_a_fresh_process(redis_deployment: Deployment) -> None:
    # As a user's WSGI app or test run would meet it: any unclosed connection,
    # transport or socket is reported on stderr ("Exception ignored ...").
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TEST_SESSION_REDIS": json.dumps(redis_deployment.settings),
    }
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
    assert "Warning" not in done.stderr, done.stderr


def test_reset_releases_a_tls_client_of_a_closed_loop(
    request: pytest.FixtureRequest, resource_warnings: list[warnings.WarningMessage]
) -> None:
    server: RedisServer
    server, ca_file = request.getfixturevalue("tls_server")  # skips without TLS
    watcher = redis.Redis.from_url(server.url, ssl_ca_certs=str(ca_file))
    try:
        with override_settings(
            SESSION_REDIS=session_redis(url=server.url, options={"ssl_ca_certs": str(ca_file)})
        ):
            before = len(watcher.client_list())
            closed_loop_with_client()
            assert len(watcher.client_list()) > before
            connection.reset()  # TLS wraps the socket's transport: both layers let go
            assert wait_for(lambda: len(watcher.client_list()) <= before)
    finally:
        watcher.close()
    assert unclosed(resource_warnings) == []
