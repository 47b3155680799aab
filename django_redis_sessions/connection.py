"""Redis clients: one per process for sync code, one per event loop for async code.

redis-py's pools notice a fork and start afresh in the child, so a client made
before gunicorn forks its workers is safe to keep. Async clients are bound to the
loop that made them and are dropped with it.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
from django.utils.module_loading import import_string
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from django_redis_sessions import conf

_lock = threading.Lock()
_client: redis.Redis | None = None
# The closer is kept alive here: a collected async generator would close its client early.
_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[redis.asyncio.Redis, AsyncGenerator[None, None]]
] = weakref.WeakKeyDictionary()


def pool_options(config: conf.Config) -> dict[str, Any]:
    """The connection pool arguments: our request-friendly defaults, then the user's."""
    options: dict[str, Any] = {
        **conf.DEFAULT_OPTIONS,
        "retry": Retry(
            ExponentialWithJitterBackoff(
                cap=conf.DEFAULT_BACKOFF_CAP, base=conf.DEFAULT_BACKOFF_BASE
            ),
            conf.DEFAULT_RETRIES,
        ),
    }
    options.update(config.options)
    return options


def _async_options(options: Mapping[str, Any]) -> dict[str, Any]:
    async_options = dict(options)
    retry = async_options.get("retry")
    if isinstance(retry, Retry):
        # Users write redis.retry.Retry in settings; the asyncio pool needs its twin.
        async_options["retry"] = redis.asyncio.retry.Retry(
            retry._backoff, retry.get_retries(), retry._supported_errors
        )
    return async_options


def build_pool(config: conf.Config) -> redis.ConnectionPool:
    return redis.ConnectionPool.from_url(config.url, **pool_options(config))


def check_options(config: conf.Config) -> None:
    """Raise ImproperlyConfigured if the pool arguments cannot build a connection."""
    if config.client is not None:
        _import(config.client, "client")
    if config.async_client is not None:
        _import(config.async_client, "async_client")
    try:
        # Builds a connection object without connecting: unknown keyword
        # arguments surface here, at startup, rather than on the first request.
        build_pool(config).make_connection()
    except (TypeError, ValueError) as exc:
        raise conf._fail("options", f"cannot build a connection from these options: {exc}") from exc


def _import(path: str, key: str) -> Any:
    try:
        return import_string(path)
    except ImportError as exc:
        raise conf._fail(key, f"cannot import {path!r}: {exc}") from exc


def get_client() -> redis.Redis:
    global _client
    client = _client
    if client is not None:
        return client
    with _lock:
        if _client is None:
            config = conf.get_config()
            if config.client is not None:
                _client = _import(config.client, "client")()
            else:
                _client = redis.Redis(connection_pool=build_pool(config))
        return _client


async def get_async_client() -> redis.asyncio.Redis | None:
    """The running loop's client, or None when only a sync ``client`` is configured."""
    loop = asyncio.get_running_loop()
    entry = _async_clients.get(loop)
    if entry is not None:
        return entry[0]
    config = conf.get_config()
    if config.async_client is not None:
        client = _import(config.async_client, "async_client")()
    elif config.client is not None:
        return None
    else:
        pool = redis.asyncio.ConnectionPool.from_url(
            config.url, **_async_options(pool_options(config))
        )
        client = redis.asyncio.Redis(connection_pool=pool)
    closer = _close_at_loop_shutdown(client)
    # Running it once registers it with the loop, whose shutdown_asyncgens()
    # (asyncio.run, asgiref, uvicorn all call it) then closes the client in-loop.
    await closer.__anext__()
    for closed in [other for other in list(_async_clients) if other.is_closed()]:
        _async_clients.pop(closed, None)
    _async_clients[loop] = (client, closer)
    return client


async def _close_at_loop_shutdown(client: redis.asyncio.Redis) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await client.aclose()


def reset() -> None:
    """Forget every client (settings changed); the next call builds new ones."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.connection_pool.disconnect()
    _async_clients.clear()
