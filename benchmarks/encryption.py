"""What encryption at rest costs: the read-modify-save cycle with and without it.

One process, one redis-server of its own on loopback. For each session size
(1, 4, 16, 64 KB of JSON) the same cycle (load, change one key, save) runs on a
session stored plain and on one stored encrypted, alternating cycle by cycle
(plain first in even rounds, encrypted first in odd ones); each round's figure is
the median of its cycles, and the ratio is taken within each round. Also shown:
the sealing and opening alone (AES-256-GCM with the per-session subkey).

Run: python benchmarks/encryption.py [--rounds 15] [--cycles 200]
(needs the project's dependencies and ``cryptography``: e.g. inside scripts/test's
tox env, ``.tox/py312-django61/bin/python benchmarks/encryption.py``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

from benchmarks.payload import payload  # noqa: E402
from testproject.redis_server import RedisServer  # noqa: E402

SIZES_KB = (1, 4, 16, 64)
KEY = "bench:" + base64.urlsafe_b64encode(hashlib.sha256(b"bench").digest()).decode()


def session_data(size_kb: int) -> dict[str, Any]:
    """The usual shopper's session, padded with hex text to ``size_kb`` KB of JSON."""
    from django_redis_sessions import codec

    data = payload(0)
    missing = size_kb * 1024 - len(codec.dumps(data)) - len(',"blob":""')
    blob = "".join(hashlib.sha256(b"%d" % n).hexdigest() for n in range(missing // 64 + 1))
    data["blob"] = blob[: max(missing, 0)]
    return data


def cycle(session_key: str, config: Any) -> float:
    """Seconds of one load + change + save of a stored session."""
    from django_redis_sessions.session import SessionStore

    started = time.perf_counter()
    store = SessionStore(session_key)
    store._config, store._codec = config.config, config.codec  # this variant's plan
    store["visits"] = store.get("visits", 0) + 1
    store.save()
    return time.perf_counter() - started


def round_times(sessions: list[tuple[str, Any]], cycles: int, flip: bool) -> list[float]:
    """Median µs per variant, the variants alternating cycle by cycle (so load drifts hit both)."""
    times: list[list[float]] = [[] for _ in sessions]
    order = list(enumerate(sessions))
    if flip:
        order.reverse()
    for _ in range(cycles):
        for index, (session_key, config) in order:
            times[index].append(cycle(session_key, config))
    return [statistics.median(each) * 1e6 for each in times]


def crypto_times(config: Any, data: dict[str, Any], samples: int = 2000) -> tuple[float, float]:
    """Median µs of sealing and of opening one body alone."""
    from django_redis_sessions import codec

    keyring = config.encryption.encryption_keys
    body, digest = codec.dumps(data), codec.digest("a" * 32)
    seal, open_ = [], []
    for _ in range(samples):
        started = time.perf_counter()
        sealed = keyring.seal(digest, codec.PLAIN, body)
        seal.append(time.perf_counter() - started)
        started = time.perf_counter()
        keyring.open(digest, sealed)
        open_.append(time.perf_counter() - started)
    return statistics.median(seal) * 1e6, statistics.median(open_) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cycles", type=int, default=200)
    args = parser.parse_args()
    with RedisServer() as server:
        settings.configure(
            SECRET_KEY="bench",
            INSTALLED_APPS=["django.contrib.sessions", "django_redis_sessions"],
            SESSION_REDIS={"url": server.url, "prefix": "bench:"},
            USE_TZ=True,
        )
        django.setup()
        from django_redis_sessions import plan
        from django_redis_sessions.session import SessionStore

        plain = plan.parse({"url": server.url, "prefix": "bench:"})
        sealed = plan.parse({"url": server.url, "prefix": "bench:", "encryption_keys": [KEY]})
        print(
            f"read-modify-save cycle, median µs ({args.rounds} interleaved rounds "
            f"x {args.cycles} cycles), and sealing/opening alone\n"
        )
        print("| session | plain | encrypted | ratio (median of rounds) | seal | open |")
        print("|---:|---:|---:|---:|---:|---:|")
        for size in SIZES_KB:
            data = session_data(size)
            sessions = []
            for config in (plain, sealed):
                store = SessionStore()
                store._config, store._codec = config.config, config.codec
                store.update(data)
                store.save()
                assert store.session_key is not None
                sessions.append((store.session_key, config))
            rounds = [round_times(sessions, args.cycles, n % 2 == 1) for n in range(args.rounds)]
            seal_us, open_us = crypto_times(sealed, data)
            print(
                f"| {size} KB | {statistics.median(r[0] for r in rounds):.0f} "
                f"| {statistics.median(r[1] for r in rounds):.0f} "
                f"| {statistics.median(r[1] / r[0] for r in rounds):.3f} x "
                f"| {seal_us:.1f} | {open_us:.1f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
