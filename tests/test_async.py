"""Native async: per-loop clients, and the test site served by a real ASGI server."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import httpx
import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings

from django_redis_sessions import connection
from django_redis_sessions.session import SessionStore
from testproject.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent


def client_count(r: redis.Redis) -> int:
    return len(r.client_list())


async def roundtrip(value: int) -> tuple[Any, object]:
    store = SessionStore()
    await store.aset("n", value)
    await store.asave()
    again = SessionStore(store.session_key)
    return await again.aget("n"), await connection.get_async_client()


def test_each_loop_gets_its_own_client() -> None:
    results = [asyncio.run(roundtrip(n)) for n in range(3)]
    assert [value for value, _ in results] == [0, 1, 2]
    clients = {id(client) for _, client in results}
    assert len(clients) == 3


def test_clients_of_finished_loops_are_closed(r: redis.Redis) -> None:
    before = client_count(r)
    for n in range(10):
        asyncio.run(roundtrip(n))
    gc.collect()
    # Every loop's connection was closed when that loop shut down.
    assert client_count(r) <= before + 1
    assert len(connection._async_clients) <= 1


def test_async_save_needs_no_sync_client() -> None:
    connection.reset()
    assert asyncio.run(roundtrip(7))[0] == 7
    assert connection._client is None


def test_async_methods_share_sync_rules() -> None:
    # A store driven by both APIs sees one consistent session.
    store = SessionStore()
    store["a"] = 1
    store.save()
    loaded = SessionStore(store.session_key)
    assert async_to_sync(loaded.aget)("a") == 1
    async_to_sync(loaded.aset)("b", 2)
    async_to_sync(loaded.asave)()
    assert SessionStore(store.session_key).load() == {"a": 1, "b": 2}


# A real ASGI server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def asgi_server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("asgi")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TEST_DATABASE": str(folder / "db.sqlite3"),
        "TEST_SESSION_REDIS": json.dumps(settings.SESSION_REDIS),
        "PYTHONPATH": str(ROOT),
    }
    prepare = (
        "import django; django.setup(); "
        "from django.core.management import call_command; "
        "call_command('migrate', verbosity=0); "
        "from django.contrib.auth.models import User; "
        "User.objects.create_user('ada', password='pw')"
    )
    subprocess.run([sys.executable, "-c", prepare], env=env, cwd=ROOT, check=True, timeout=60)
    port = free_port()
    log = (folder / "uvicorn.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--lifespan", "off"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/io-report/", trust_env=False, timeout=1)
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((folder / "uvicorn.log").read_text()) from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(10)
        log.close()


@pytest.mark.skipif(django.VERSION < (5, 0), reason="alogin/alogout/auser arrived in Django 5.0")
def test_asgi_login_counter_logout_without_thread_hops(asgi_server: str) -> None:
    async def flow() -> None:
        async with httpx.AsyncClient(base_url=asgi_server, trust_env=False, timeout=10) as http:
            assert (await http.get("/acounter/")).text == "1"
            anonymous_key = http.cookies["sessionid"]
            assert (await http.get("/alogin/?username=ada")).text == "logged in"
            assert http.cookies["sessionid"] != anonymous_key
            assert (await http.get("/awhoami/")).text == "ada"
            # Twenty concurrent requests, each setting its own key: all of them persist.
            responses = await asyncio.gather(*(http.get(f"/aset/k{n}/v{n}/") for n in range(20)))
            assert {r.status_code for r in responses} == {200}
            data = (await http.get("/aget/")).json()
            assert {f"k{n}": f"v{n}" for n in range(20)}.items() <= data.items()
            assert data["visits"] == 1
            assert (await http.get("/acounter/")).text == "2"
            assert (await http.get("/alogout/")).text == "logged out"
            assert (await http.get("/awhoami/")).text == "anonymous"
            report = (await http.get("/io-report/")).json()
        # Every session read and write ran on the event loop: the process never
        # even built the sync client that a thread hop would have used.
        assert report == {"sync_client_created": False, "async_clients": 1}

    asyncio.run(flow())
