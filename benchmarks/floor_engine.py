"""The floor as a Django session engine: the least a Redis session store can do.

GET and ``json.loads`` to load; ``json.dumps`` and one ``SET ... EX`` to save
(``NX`` when creating), natively on ``redis.asyncio`` for the async methods. No
versioning, no merging, no key hashing, no size or failure policy: nothing the
real engines add for safety. Used for the middleware and HTTP rows, where a
Django engine is needed; the per-operation floor calls redis-py directly (see
``worker.py``).
"""

from __future__ import annotations

import asyncio
import json
import weakref
from typing import Any

import redis
import redis.asyncio
from django.conf import settings
from django.contrib.sessions.backends.base import (
    VALID_KEY_CHARS,
    CreateError,
    SessionBase,
    UpdateError,
)
from django.utils.crypto import get_random_string

PREFIX = "session:"
_client: redis.Redis | None = None
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
    weakref.WeakKeyDictionary()
)


def client() -> redis.Redis:
    global _client
    if _client is None:
        # redis-py picks the hiredis parser when it is installed.
        _client = redis.Redis.from_url(settings.BENCH_REDIS_URL)
    return _client


def async_client() -> redis.asyncio.Redis:
    loop = asyncio.get_running_loop()
    found = _async_clients.get(loop)
    if found is None:
        found = _async_clients[loop] = redis.asyncio.Redis.from_url(settings.BENCH_REDIS_URL)
    return found


def dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


class SessionStore(SessionBase):
    def _get_new_session_key(self) -> str:
        # SET NX guarantees uniqueness: no EXISTS round trip first.
        return get_random_string(32, VALID_KEY_CHARS)

    async def _aget_new_session_key(self) -> str:
        return self._get_new_session_key()

    def _decoded(self, raw: bytes | None) -> dict[str, Any]:
        if raw is None:
            self._session_key = None
            return {}
        data: dict[str, Any] = json.loads(raw)
        return data

    def load(self) -> dict[str, Any]:
        key = self.session_key
        return self._decoded(client().get(PREFIX + key) if key else None)

    async def aload(self) -> dict[str, Any]:
        key = self.session_key
        return self._decoded(await async_client().get(PREFIX + key) if key else None)

    def exists(self, session_key: str | None) -> bool:
        return bool(session_key) and bool(client().exists(PREFIX + session_key))

    async def aexists(self, session_key: str | None) -> bool:
        return bool(session_key) and bool(await async_client().exists(PREFIX + session_key))

    def create(self) -> None:
        while True:
            self._session_key = self._get_new_session_key()
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return

    async def acreate(self) -> None:
        while True:
            self._session_key = self._get_new_session_key()
            try:
                await self.asave(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return

    def _check(self, stored: Any, must_create: bool) -> None:
        if not stored:
            raise CreateError if must_create else UpdateError

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        body = dumps(self._get_session(no_load=must_create))
        stored = client().set(
            PREFIX + self.session_key, body, ex=self.get_expiry_age(), nx=must_create
        )
        self._check(stored, must_create)
        return None

    async def asave(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return await self.acreate()
        body = dumps(await self._aget_session(no_load=must_create))
        stored = await async_client().set(
            PREFIX + self.session_key, body, ex=self.get_expiry_age(), nx=must_create
        )
        self._check(stored, must_create)
        return None

    def delete(self, session_key: str | None = None) -> None:
        session_key = session_key or self.session_key
        if session_key:
            client().delete(PREFIX + session_key)

    async def adelete(self, session_key: str | None = None) -> None:
        session_key = session_key or self.session_key
        if session_key:
            await async_client().delete(PREFIX + session_key)

    @classmethod
    def clear_expired(cls) -> None:
        pass

    @classmethod
    async def aclear_expired(cls) -> None:
        pass
