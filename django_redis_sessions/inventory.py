"""What the store holds, for operators: ``manage.py sessions_report``.

The keyspace is walked with ``SCAN`` (never ``KEYS``), node by node on a Cluster,
in batches: one pipeline per batch reads each key's value and remaining time to
live, and ``MEMORY USAGE`` for a sample of them. Values are parsed with
``codec``; what it cannot read (another format, corrupt data, another type) is
counted as unreadable. Sessions appear by their digest only: the store never
holds the cookie's key.
"""

from __future__ import annotations

import heapq
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import redis
import redis.cluster
from redis.exceptions import AskError, MovedError

from django_redis_sessions import codec, plan, scripts
from django_redis_sessions.connection import SyncClient

# django.contrib.auth's SESSION_KEY: present in the session of a logged-in user.
AUTH_KEY = "_auth_user_id"
# A session's key is the prefix and a 32-character BLAKE2b digest (codec.digest).
DIGEST_RE = re.compile(r"[0-9a-f]{32}")
# Values kept for percentiles; past this a uniform sample (reservoir) stands in.
RESERVOIR = 100_000
PERCENTILES = (50, 90, 99)
# codec's formats, and the encrypted one a later version may write.
KNOWN_FORMATS = (*codec.FORMATS, b"e1")

# (keys scanned so far, keys the nodes hold in all, node number from 1, nodes)
Progress = Callable[[int, int, int, int], None]


class ReportError(Exception):
    """Redis could not be read: unreachable, or the user lacks a permission."""


class Reservoir:
    """Up to ``size`` values, a uniform sample of all those added."""

    def __init__(self, size: int = RESERVOIR, seed: int = 0) -> None:
        self.size = size
        self.seen = 0
        self.values: list[float] = []
        self._random = random.Random(seed)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = self._random.randrange(self.seen)
        if slot < self.size:
            self.values[slot] = value

    def summary(self) -> dict[str, float] | None:
        if not self.values:
            return None
        ordered = sorted(self.values)
        result = {f"p{p}": percentile(ordered, p) for p in PERCENTILES}
        result.update(min=ordered[0], max=ordered[-1])
        return result


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class NodeStats:
    node: str
    keys_scanned: int = 0
    sessions: int = 0
    authenticated: int = 0
    stored_bytes: int = 0
    memory_sampled: int = 0
    memory_sampled_bytes: int = 0

    def memory_bytes(self, fallback_mean: float | None = None) -> int | None:
        """Measured or extrapolated; a node without a sample uses the others' mean."""
        if self.memory_sampled:
            return round(self.memory_sampled_bytes / self.memory_sampled * self.sessions)
        return None if fallback_mean is None else round(fallback_mean * self.sessions)

    def to_dict(self, fallback_mean: float | None = None) -> dict[str, Any]:
        return {
            "node": self.node,
            "sessions": self.sessions,
            "authenticated": self.authenticated,
            "stored_bytes": self.stored_bytes,
            "memory_bytes": self.memory_bytes(fallback_mean),
        }


@dataclass
class Report:
    prefix: str
    topology: str
    memory_sample_size: int
    top: int
    complete: bool = True
    elapsed_seconds: float = 0.0
    sessions: int = 0
    authenticated: int = 0
    unreadable: int = 0
    no_expiry: int = 0
    other_keys: int = 0
    formats: dict[str, int] = field(default_factory=dict)
    memory_error: str | None = None
    nodes: list[NodeStats] = field(default_factory=list)
    sizes: Reservoir = field(default_factory=Reservoir)
    ttls: Reservoir = field(default_factory=lambda: Reservoir(seed=1))
    _largest: list[tuple[int, str, float | None, str]] = field(default_factory=list)

    def note_size(self, size: int, digest: str, ttl: float | None, node: str) -> None:
        entry = (size, digest, ttl, node)
        if len(self._largest) < self.top:
            heapq.heappush(self._largest, entry)
        elif self.top:
            heapq.heappushpop(self._largest, entry)

    def _mean_memory(self) -> float | None:
        sampled = sum(n.memory_sampled for n in self.nodes)
        return sum(n.memory_sampled_bytes for n in self.nodes) / sampled if sampled else None

    def memory(self) -> dict[str, Any]:
        sampled = sum(n.memory_sampled for n in self.nodes)
        mean = self._mean_memory()
        total = None if mean is None else sum(n.memory_bytes(mean) or 0 for n in self.nodes)
        return {
            "bytes": total,
            "sampled_sessions": sampled,
            "estimated": sampled < self.sessions,
            "error": self.memory_error,
        }

    def to_dict(self) -> dict[str, Any]:
        largest = sorted(self._largest, reverse=True)
        return {
            "prefix": self.prefix,
            "topology": self.topology,
            "complete": self.complete,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "sessions": self.sessions,
            "authenticated": self.authenticated,
            "unreadable": self.unreadable,
            "no_expiry": self.no_expiry,
            "other_keys": self.other_keys,
            "formats": dict(sorted(self.formats.items())),
            "memory": self.memory(),
            "stored_bytes": {
                "total": sum(n.stored_bytes for n in self.nodes),
                **(self.sizes.summary() or {}),
            },
            "ttl_seconds": self.ttls.summary(),
            "largest": [
                {"digest": digest, "stored_bytes": size, "ttl_seconds": ttl, "node": node}
                for size, digest, ttl, node in largest
            ],
            "nodes": [n.to_dict(self._mean_memory()) for n in self.nodes],
        }


def glob_escape(text: str) -> str:
    """``text`` matched literally by SCAN's MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def nodes_of(client: SyncClient) -> list[tuple[str, redis.Redis]]:
    """Each primary's name and a client for it (one, unless on a Cluster)."""
    if isinstance(client, redis.cluster.RedisCluster):
        primaries = sorted(cast(Any, client).get_primaries(), key=lambda n: (n.host, n.port))
        return [(f"{n.host}:{n.port}", client.get_redis_connection(n)) for n in primaries]
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        name = str(kwargs["path"])
    elif "host" in kwargs:
        name = f"{kwargs['host']}:{kwargs.get('port', 6379)}"
    else:  # a Sentinel-managed pool: the sentinels know the address
        name = str(getattr(pool, "service_name", "primary"))
    return [(name, client)]


def _scan(node: redis.Redis, pattern: str, batch: int) -> Iterator[list[Any]]:
    cursor: Any = 0
    while True:
        cursor, keys = cast(Any, node).execute_command(
            scripts.SCAN, cursor, "MATCH", pattern, "COUNT", batch
        )
        if keys:
            yield keys
        if int(cursor) == 0:
            return


def collect(
    client: SyncClient,
    prefix: str,
    *,
    topology: str = "single",
    batch: int = 1000,
    max_seconds: float = 60.0,
    memory_samples: int = 10_000,
    top: int = 10,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Report:
    """Walk every session under ``prefix``.

    Past ``max_seconds`` it stops after the current batch, with ``complete`` False.
    """
    report = Report(prefix, topology, memory_samples, top)
    started = clock()
    try:
        nodes = nodes_of(client)
        sizes = [int(cast(Any, node).execute_command(scripts.DBSIZE)) for _, node in nodes]
        stride = max(1, math.ceil(sum(sizes) / memory_samples)) if memory_samples else 0
        pattern = glob_escape(prefix) + "*"
        scanned = 0
        for number, (name, node) in enumerate(nodes, 1):
            stats = NodeStats(name)
            report.nodes.append(stats)
            for keys in _scan(node, pattern, batch):
                _read_batch(report, stats, node, keys, stride)
                scanned += len(keys)
                if progress is not None:
                    progress(scanned, max(sum(sizes), scanned), number, len(nodes))
                if clock() - started > max_seconds:
                    report.complete = False
                    break
            if not report.complete:
                break
    except redis.RedisError as exc:
        raise ReportError(f"{type(exc).__name__}: {exc}") from exc
    report.elapsed_seconds = clock() - started
    return report


def _read_batch(
    report: Report, stats: NodeStats, node: redis.Redis, keys: list[Any], stride: int
) -> None:
    sessions: list[tuple[bytes | str, str, bool]] = []
    for key in keys:
        stats.keys_scanned += 1
        # str from a client made with decode_responses=True
        name = key if isinstance(key, str) else key.decode("utf-8", "replace")
        digest = name[len(report.prefix) :]
        if not DIGEST_RE.fullmatch(digest):
            report.other_keys += 1  # another feature's key under the prefix
            continue
        sample = bool(stride) and stats.keys_scanned % stride == 0
        sessions.append((key, digest, sample))
    if not sessions:
        return
    with node.pipeline(transaction=False) as pipe:
        for key, _, sample in sessions:
            cast(Any, pipe).execute_command(scripts.GET, key)
            cast(Any, pipe).execute_command(scripts.PTTL, key)
            if sample:
                cast(Any, pipe).execute_command(*scripts.MEMORY_USAGE, key, "SAMPLES", "0")
        replies = iter(pipe.execute(raise_on_error=False))
    for _key, digest, sample in sessions:
        value, ttl_ms = next(replies), next(replies)
        usage = next(replies) if sample else None
        if value is None or ttl_ms == -2:
            continue  # expired or deleted since SCAN saw it
        if isinstance(value, (MovedError, AskError)):
            continue  # its slot moved to another node during the walk
        if isinstance(value, Exception) and not str(value).startswith("WRONGTYPE"):
            raise value  # a refusal (NOPERM, ...) that every key would meet
        _count(report, stats, digest, value, ttl_ms, usage)


def _count(
    report: Report, stats: NodeStats, digest: str, value: Any, ttl_ms: Any, usage: Any
) -> None:
    report.sessions += 1
    stats.sessions += 1
    ttl = None
    if isinstance(ttl_ms, int) and ttl_ms >= 0:
        ttl = ttl_ms / 1000
        report.ttls.add(ttl)
    else:  # -1: no expiry (-2, gone, was skipped)
        report.no_expiry += 1
    if isinstance(usage, int):
        stats.memory_sampled += 1
        stats.memory_sampled_bytes += usage
    elif isinstance(usage, Exception) and report.memory_error is None:
        report.memory_error = str(usage)
    if isinstance(value, Exception):  # WRONGTYPE: some other structure under our name
        report.unreadable += 1
        report.formats["other"] = report.formats.get("other", 0) + 1
        return
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    size = len(value)
    stats.stored_bytes += size
    report.sizes.add(size)
    report.note_size(size, digest, ttl, stats.node)
    kind = value.split(b":", 1)[0]
    name = kind.decode() if kind in KNOWN_FORMATS else "other"
    report.formats[name] = report.formats.get(name, 0) + 1
    try:
        fmt_bytes, _, body = codec.split(value)
        # Encrypted sessions open with the configured keys, as the engine reads them.
        data = codec.loads(plan.get_plan().codec.open(digest, fmt_bytes, body))
    except codec.CorruptSession:
        report.unreadable += 1
        return
    if data.get(AUTH_KEY) is not None:
        report.authenticated += 1
        stats.authenticated += 1
