"""Run the same test through the sync API and through the native async API.

``ops.save(store)`` calls ``store.save()`` in sync mode and
``async_to_sync(store.asave)()`` in async mode; each async call runs in a fresh
event loop, as Django's test client does, which also exercises the per-loop
clients.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import override_settings

from django_redis_sessions.session import SessionStore


class Ops:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.is_async = mode == "async"

    def __repr__(self) -> str:
        return f"Ops({self.mode})"

    def __getattr__(self, name: str) -> Any:
        def call(store: SessionStore, *args: Any, **kwargs: Any) -> Any:
            if self.is_async:
                return async_to_sync(getattr(store, "a" + name))(*args, **kwargs)
            return getattr(store, name)(*args, **kwargs)

        return call

    # Mapping access, which has different names in the two APIs.
    def getitem(self, store: SessionStore, key: str) -> Any:
        if self.is_async:
            sentinel = object()

            async def get() -> Any:
                return await store.aget(key, sentinel)

            value = async_to_sync(get)()
            if value is sentinel:
                raise KeyError(key)
            return value
        return store[key]

    def setitem(self, store: SessionStore, key: str, value: Any) -> None:
        if self.is_async:
            async_to_sync(store.aset)(key, value)
        else:
            store[key] = value

    def items(self, store: SessionStore) -> dict[str, Any]:
        if self.is_async:
            return dict(async_to_sync(store.aitems)())
        return dict(store.items())

    def cycle_key(self, store: SessionStore) -> None:
        if self.is_async:
            async_to_sync(store.acycle_key)()
        else:
            store.cycle_key()


@pytest.fixture(params=["sync", "async"])
def ops(request: pytest.FixtureRequest) -> Ops:
    """Every storage test runs twice: through the sync API and the native async API."""
    return Ops(request.param)


def new_session(ops: Ops, **data: Any) -> SessionStore:
    """A saved session holding ``data``, written through ``ops``."""
    store = SessionStore()
    for key, value in data.items():
        ops.setitem(store, key, value)
    ops.save(store)
    return store


# Every data command the engine can send, and those its scripts run server-side.
ENGINE_COMMANDS = (
    "get", "getrange", "set", "del", "exists", "evalsha", "eval", "pexpire", "wait",
    "hset", "hget", "hgetall", "hdel", "hexists", "pttl", "type",
)  # fmt: skip


def command_calls(client: redis.Redis) -> int:
    """Data commands the server ran since its stats were reset.

    Connection handshakes and a topology's own chatter (replication, sentinel
    pings, cluster discovery) are not counted.
    """
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ENGINE_COMMANDS)


OURS = "django_redis_sessions.middleware.SessionMiddleware"
DJANGOS = "django.contrib.sessions.middleware.SessionMiddleware"


@pytest.fixture(params=[OURS, DJANGOS], ids=["ours", "djangos"])
def middleware(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test with our middleware, then with Django's (the engine must serve both)."""
    stack = [request.param if m == OURS else m for m in settings.MIDDLEWARE]
    with override_settings(MIDDLEWARE=stack):
        yield request.param


def session_keys(r: Any) -> list[bytes]:
    """The sessions' keys, without the per-user indexes (tests/test_users.py)."""
    keys: list[bytes] = r.keys("session:*")
    return sorted(key for key in keys if not key.startswith(b"session:u:"))


# A connection's own chatter (its handshake, a cluster's discovery), and the
# tests' own server queries: not the engine's round trips.
CHATTER = frozenset(
    {b"HELLO", b"CLIENT", b"PING", b"AUTH", b"SELECT", b"READONLY", b"CLUSTER", b"COMMAND",
     b"INFO", b"CONFIG", b"SENTINEL", b"SCRIPT", b"ROLE"}
)  # fmt: skip


class Sends:
    """Round trips: every batch a redis-py connection writes (one command, or a
    whole pipeline), sync or async, counted on its way to the socket; batches
    that start with connection chatter (``CHATTER``) are not counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        sync_send = redis.connection.AbstractConnection.send_packed_command
        async_send = redis.asyncio.connection.AbstractConnection.send_packed_command

        def send(conn: Any, command: Any, check_health: bool = True) -> None:
            self.note(command)
            sync_send(conn, command, check_health)

        async def asend(conn: Any, command: Any, check_health: bool = True) -> None:
            self.note(command)
            await async_send(conn, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", send)
        monkeypatch.setattr(
            redis.asyncio.connection.AbstractConnection, "send_packed_command", asend
        )

    def note(self, packed: Any) -> None:
        head = packed if isinstance(packed, (bytes, str)) else b"".join(packed)
        head = head.encode() if isinstance(head, str) else head
        # RESP: *<count>, $<length>, then the command's name.
        name = head.split(b"\r\n", 3)[2].upper()
        if name not in CHATTER:
            self.count += 1
