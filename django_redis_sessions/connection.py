"""Redis clients: one per process for sync code, one per event loop for async code.

redis-py's pools notice a fork and start afresh in the child, so a client made
before gunicorn forks its workers is safe to keep. Async clients are bound to the
loop that made them and are dropped with it.

The topology follows ``SESSION_REDIS``: one server (``url``), a Sentinel group
(``sentinels``: the client always talks to the primary the sentinels name) or a
Cluster (``cluster``: redis-py routes each single-key command to its slot's
primary and follows MOVED/ASK and failovers).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import weakref
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from django.utils.module_loading import import_string
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import parse_url
from redis.exceptions import ResponseError
from redis.retry import Retry

from django_redis_sessions import conf

# redis-py leaves these unannotated; mypy strict refuses untyped calls.
_parse_url: Any = parse_url
_Sentinel: Any = redis.sentinel.Sentinel
_AsyncSentinel: Any = redis.asyncio.sentinel.Sentinel
_SentinelConnectionPool: Any = redis.sentinel.SentinelConnectionPool
_ClusterNode: Any = redis.cluster.ClusterNode

SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

# Talking to sentinels is on the request path too (on each new connection).
DEFAULT_SENTINEL_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 1.0,
    "socket_timeout": 1.0,
}

_lock = threading.Lock()
_client: SyncClient | None = None
# Clients made alongside _client that reset() must close too (a Sentinel's own).
_client_extras: list[redis.Redis] = []
# The closer is kept alive here: a collected async generator would close its client early.
_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[AsyncClient, AsyncGenerator[None, None]]
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
            retry._backoff, retry.get_retries(), cast(Any, retry._supported_errors)
        )
    return async_options


def build_pool(config: conf.Config) -> redis.ConnectionPool:
    return redis.ConnectionPool.from_url(config.url, **pool_options(config))


# Sentinel ------------------------------------------------------------------------


def sentinel_options(config: conf.Config) -> dict[str, Any]:
    """Connection arguments for the sentinels themselves (redis-py's ``sentinel_kwargs``)."""
    return {**DEFAULT_SENTINEL_OPTIONS, **config.sentinel_options}


def primary_options(config: conf.Config) -> dict[str, Any]:
    """Connection arguments for the primary the sentinels name: the URL's, then ours."""
    from_url: dict[str, Any] = _parse_url(config.url)
    for key in ("host", "port"):  # the sentinels give the address
        from_url.pop(key, None)
    if from_url.pop("connection_class", None) is not None:  # only rediss:// sets one
        from_url["ssl"] = True
    return {**from_url, **pool_options(config)}


def _sentinel_client(config: conf.Config) -> tuple[redis.Redis, list[redis.Redis]]:
    sentinel = _Sentinel(list(config.sentinels), sentinel_kwargs=sentinel_options(config))
    client: redis.Redis = sentinel.master_for(config.service_name, **primary_options(config))
    return client, list(sentinel.sentinels)


def _async_sentinel_client(
    config: conf.Config,
) -> tuple[redis.asyncio.Redis, list[redis.asyncio.Redis]]:
    sentinel = _AsyncSentinel(
        list(config.sentinels), sentinel_kwargs=_async_options(sentinel_options(config))
    )
    client: redis.asyncio.Redis = sentinel.master_for(
        config.service_name, **_async_options(primary_options(config))
    )
    return client, list(sentinel.sentinels)


# Cluster -------------------------------------------------------------------------


def _parameters(function: Any) -> set[str]:
    return {
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    } - {"self"}


def cluster_option_names() -> set[str]:
    """What sync RedisCluster takes: its own arguments, and those it passes to each node.

    It drops any other keyword silently, so check_options() refuses the rest.
    """
    return (
        _parameters(redis.cluster.RedisCluster.__init__) | set(redis.cluster.REDIS_ALLOWED_KEYS)
    ) - {"host", "port", "url", "startup_nodes", "db", "connection_pool"}


def _cluster_client(config: conf.Config) -> redis.cluster.RedisCluster:
    nodes = [_ClusterNode(host, port) for host, port in config.startup_nodes]
    # Connects at once to read the slot map; a failure surfaces as a RedisError
    # or RedisClusterException, which the driver turns into SessionUnavailable.
    return redis.cluster.RedisCluster.from_url(
        config.url, startup_nodes=nodes, **pool_options(config)
    )


def _async_cluster_client(config: conf.Config) -> redis.asyncio.cluster.RedisCluster:
    nodes = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in config.startup_nodes]
    accepted = _parameters(redis.asyncio.cluster.RedisCluster.__init__)
    # The asyncio class names every argument it takes; ours may carry sync-only
    # ones (health_check_interval on old redis-py), which it would reject.
    options = {
        key: value for key, value in _async_options(pool_options(config)).items() if key in accepted
    }
    return redis.asyncio.cluster.RedisCluster.from_url(config.url, startup_nodes=nodes, **options)


# Checks and clients ------------------------------------------------------------------


def check_options(config: conf.Config) -> None:
    """Raise ImproperlyConfigured if the pool arguments cannot build a connection."""
    if config.client is not None:
        _import(config.client, "client")
    if config.async_client is not None:
        _import(config.async_client, "async_client")
    if config.topology == "cluster":
        _check_cluster_options(config)
        return
    if config.topology == "sentinel":
        try:
            sentinel = _Sentinel(list(config.sentinels), sentinel_kwargs=sentinel_options(config))
        except (TypeError, ValueError) as exc:
            raise conf._fail("sentinel_options", f"cannot build a connection: {exc}") from exc
        pool: redis.ConnectionPool = _SentinelConnectionPool(
            config.service_name, sentinel, **primary_options(config)
        )
    else:
        pool = build_pool(config)
    try:
        # Builds a connection object without connecting: unknown keyword
        # arguments surface here, at startup, rather than on the first request.
        pool.make_connection()
    except (TypeError, ValueError) as exc:
        raise conf._fail("options", f"cannot build a connection from these options: {exc}") from exc


def _check_cluster_options(config: conf.Config) -> None:
    # A cluster client connects as it is built, so only the names are checked
    # here; values are checked by the first connection.
    unknown = sorted(set(config.options) - cluster_option_names())
    if unknown:
        raise conf._fail(
            "options",
            f"{', '.join(map(repr, unknown))} not accepted by redis.cluster.RedisCluster "
            "(it would silently ignore them).",
        )


def _import(path: str, key: str) -> Any:
    try:
        return import_string(path)
    except ImportError as exc:
        raise conf._fail(key, f"cannot import {path!r}: {exc}") from exc


def build_client(config: conf.Config) -> tuple[SyncClient, list[redis.Redis]]:
    """A new sync client for ``config``, and the helper clients to close along with it."""
    if config.topology == "cluster":
        return _cluster_client(config), []
    if config.topology == "sentinel":
        return _sentinel_client(config)
    return redis.Redis(connection_pool=build_pool(config)), []


def get_client() -> SyncClient:
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
                _client, extras = build_client(config)
                _client_extras.extend(extras)
        return _client


def build_async_client(config: conf.Config) -> tuple[AsyncClient, list[redis.asyncio.Redis]]:
    """A new asyncio client for ``config``, and the helper clients to close along with it."""
    if config.topology == "cluster":
        return _async_cluster_client(config), []
    if config.topology == "sentinel":
        return _async_sentinel_client(config)
    pool = redis.asyncio.ConnectionPool.from_url(config.url, **_async_options(pool_options(config)))
    return redis.asyncio.Redis(connection_pool=pool), []


async def get_async_client() -> AsyncClient | None:
    """The running loop's client, or None when only a sync ``client`` is configured."""
    loop = asyncio.get_running_loop()
    entry = _async_clients.get(loop)
    if entry is not None:
        return entry[0]
    config = conf.get_config()
    client: AsyncClient
    extras: list[redis.asyncio.Redis] = []
    if config.async_client is not None:
        client = _import(config.async_client, "async_client")()
    elif config.client is not None:
        return None
    else:
        client, extras = build_async_client(config)
    closer = _close_at_loop_shutdown(loop, [client, *extras])
    # Running it once registers it with the loop, whose shutdown_asyncgens()
    # (asyncio.run, asgiref, uvicorn all call it) then closes the client in-loop.
    await closer.__anext__()
    for closed in [other for other in list(_async_clients) if other.is_closed()]:
        _discard(closed, *_async_clients.pop(closed))
    _async_clients[loop] = (client, closer)
    return client


async def _close_at_loop_shutdown(
    loop: asyncio.AbstractEventLoop, clients: Sequence[AsyncClient]
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if loop.is_closed():  # finished by _discard(), the loop gone without shutting us down
            for client in clients:
                _release_without_loop(client)
        else:
            for client in clients:
                await _aclose(client)


async def _aclose(client: AsyncClient) -> None:
    if isinstance(client, redis.asyncio.Redis):
        # A client handed a pool (ours, a user's factory's) leaves it open otherwise.
        await client.aclose(close_connection_pool=True)
    else:
        await client.aclose()


def _discard(
    loop: asyncio.AbstractEventLoop, client: AsyncClient, closer: AsyncGenerator[None, None]
) -> None:
    """Close a loop's client: on that loop if it can still run, else right here."""
    if cast(Any, closer).ag_frame is None:  # finished: the loop shut down properly
        return
    finish = _finish(closer)
    try:
        asyncio.run_coroutine_threadsafe(finish, loop)
        return
    except RuntimeError:  # the loop is closed
        finish.close()
    # The closer awaits nothing on a closed loop, so one step runs it to the end.
    with contextlib.suppress(StopIteration):
        closer.aclose().send(None)


async def _finish(closer: AsyncGenerator[None, None]) -> None:
    await closer.aclose()


def _async_connections(client: AsyncClient) -> list[Any]:
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        manager = client.nodes_manager
        nodes = [*manager.nodes_cache.values(), *manager.startup_nodes.values()]
        return [each for node in nodes for each in node._connections]
    pool: Any = client.connection_pool
    return [*pool._available_connections, *pool._in_use_connections]


def _release_without_loop(client: AsyncClient) -> None:
    """Close the sockets of a client whose event loop is closed.

    Closing a transport needs its loop, so this does what the loop would have
    done: mark the transport closing and close its socket. Without it the
    sockets stay open until garbage collection, which warns about each.
    """
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        # What aclose() records, which __del__ reads to warn: redis-py < 8.2
        # checks _initialize, 8.2 and later whether a default node is left.
        cast(Any, client)._initialize = True
        client.nodes_manager.default_node = cast(Any, None)
    connections = _async_connections(client)
    writers = [each._writer for each in connections if each._writer is not None]
    for each in connections:
        each._writer = each._reader = None  # else each warns when collected
    for writer in writers:
        transport: Any = writer.transport
        with contextlib.suppress(RuntimeError):  # "Event loop is closed", once marked
            transport.abort()
        if getattr(transport, "_closed", None) is False:
            transport._closed = True  # TLS on Python 3.10 marks it after the failing step
        # TLS wraps the socket's transport in another.
        inner: Any = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
        for layer in (transport, inner):
            sock = getattr(layer, "_sock", None)
            if sock is not None:
                layer._sock = None
                sock.close()


def _close(client: SyncClient) -> None:
    if isinstance(client, redis.cluster.RedisCluster):
        client.close()
    else:
        client.connection_pool.disconnect()


def reset() -> None:
    """Forget every client (settings changed), closing them; the next call builds new ones."""
    global _client
    with _lock:
        client, _client = _client, None
        extras = list(_client_extras)
        _client_extras.clear()
        loops = list(_async_clients.items())
        _async_clients.clear()
    for each in [client, *extras] if client is not None else extras:
        _close(each)
    for loop, (async_client, closer) in loops:
        _discard(loop, async_client, closer)


# What the server can do ---------------------------------------------------------------

# The first versions whose SET takes IFEQ (compare-and-set in one command).
IFEQ_SINCE = {"valkey": (8, 1), "redis": (8, 4)}


@dataclass(frozen=True)
class Server:
    """Which server answers (``redis`` or ``valkey``) and its version."""

    name: str
    version: tuple[int, ...]

    @property
    def has_ifeq(self) -> bool:
        return self.version >= IFEQ_SINCE[self.name]


def _version(text: object) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in str(text).split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def server_of(info: Mapping[str, Any]) -> Server:
    """The server an ``INFO server`` reply describes.

    Valkey reports ``redis_version:7.2.4`` for compatibility and its own
    version as ``valkey_version``; anything else is taken at its
    ``redis_version`` word (a missing or odd one reads as version ()).
    """
    if "valkey_version" in info:
        return Server("valkey", _version(info["valkey_version"]))
    return Server("redis", _version(info.get("redis_version", "")))


# Per connection pool (a Sentinel's pool follows the primary it names), or per
# Cluster client: one INFO per pool, not per request.
_ifeq: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


# redis-py's cluster classes are typing Protocols, whose isinstance() runs Python
# code: a client of one of these exact types is known to be none, without asking.
SINGLE_TYPES = frozenset({redis.Redis, redis.asyncio.Redis})


def is_cluster(client: SyncClient | AsyncClient) -> bool:
    return type(client) not in SINGLE_TYPES and isinstance(
        client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)
    )


def _capability_key(client: SyncClient | AsyncClient) -> Any:
    return client if is_cluster(client) else cast(Any, client).connection_pool


def _all_have_ifeq(infos: Sequence[Mapping[str, Any]]) -> bool:
    return bool(infos) and all(server_of(info).has_ifeq for info in infos)


def supports_ifeq(client: SyncClient) -> bool:
    """Whether ``SET ... IFEQ`` works on this client's server (every primary, on a
    Cluster). Asked once per pool; a refused INFO (ACL) counts as no. Connection
    errors propagate and nothing is remembered."""
    key = _capability_key(client)
    known = _ifeq.get(key)
    if known is None:
        try:
            if isinstance(client, redis.cluster.RedisCluster):
                nodes = cast(Any, client).get_primaries()
                infos = [client.info("server", target_nodes=node) for node in nodes]
            else:
                infos = [client.info("server")]
        except ResponseError:
            infos = []
        known = _ifeq[key] = _all_have_ifeq(infos)
    return known


async def asupports_ifeq(client: AsyncClient) -> bool:
    """supports_ifeq()'s async twin; the same cache."""
    key = _capability_key(client)
    known = _ifeq.get(key)
    if known is None:
        try:
            if isinstance(client, redis.asyncio.cluster.RedisCluster):
                await client.initialize()  # a no-op once the slot map is known
                nodes = client.get_primaries()
                infos = [await client.info("server", target_nodes=node) for node in nodes]
            else:
                infos = [await client.info("server")]
        except ResponseError:
            infos = []
        known = _ifeq[key] = _all_have_ifeq(infos)
    return known


def forget_capabilities(client: SyncClient | AsyncClient) -> None:
    """Ask again next time (the server refused IFEQ after all: a failover to an older one)."""
    _ifeq.pop(_capability_key(client), None)
