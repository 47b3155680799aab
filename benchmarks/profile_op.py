"""Profile one operation of one engine with cProfile, to see where its time goes.

    .venv-bench/bin/python -m benchmarks.profile_op ours cycle [--n 5000] [--top 25]

Run ``benchmarks/run.py`` once first (it builds ``.venv-bench``). Starts its own
redis-server on a free loopback port, runs the operation ``n`` times in this
process under cProfile and prints the functions that cost the most, sorted by
their own time, plus the CPU time per operation.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.engines import BY_NAME, PEER_VERSION
from testproject.redis_server import RedisServer


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_op")
    parser.add_argument("engine", choices=sorted(BY_NAME))
    parser.add_argument("op", help="load, cycle, create, exists, delete, cycle_key, ...")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    engine = BY_NAME[args.engine]
    if engine.postgres or engine.sql:
        parser.error("profile the Redis engines; database engines need the harness's setup")
    if engine.peer:
        sys.path.append(str(Path(sys.prefix) / f"peer-{PEER_VERSION}"))
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(
            BENCH_ENGINE=engine.name,
            BENCH_REDIS_BASE=f"redis://127.0.0.1:{server.port}",
            BENCH_TMP=tmp,
            DJANGO_SETTINGS_MODULE="benchmarks.settings",
        )
        from benchmarks import worker  # sets Django up for the engine

        bench = worker.Bench()
        if hasattr(bench, f"aop_{args.op}"):
            parser.error("async operations run on an event loop: profile their sync twin")
        step = getattr(bench, f"op_{args.op}")(args.n + 100)
        for i in range(100):  # warm-up: connection, script cache, imports
            step(args.n + i)
        profiler = cProfile.Profile()
        cpu = time.process_time()
        wall = time.perf_counter()
        profiler.enable()
        for i in range(args.n):
            step(i)
        profiler.disable()
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
    print(
        f"{args.engine} {args.op}: {wall / args.n * 1e6:.0f} µs wall, "
        f"{cpu / args.n * 1e6:.0f} µs CPU per op (with profiling overhead)"
    )
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
