"""What SESSION_REDIS["migrate_from"] costs: hits, first requests, misses, bulk copy.

Sessions are made by Django's db engine in SQLite; our engine runs on a
redis-server of its own. For each case: the median time of one load, and the
Redis commands and SQL queries it sent (counted, not timed). Hits with and
without ``migrate_from`` are measured in alternating rounds.

Run: python benchmarks/migration.py [--sessions 2000] [--rounds 5]
(needs the project's dependencies: e.g. inside scripts/test's tox env).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import django  # noqa: E402
import redis  # noqa: E402
from django.conf import settings  # noqa: E402

from testproject.redis_server import RedisServer  # noqa: E402

DB_ENGINE = "django.contrib.sessions.backends.db"
COMMANDS = ("get", "set", "del", "exists", "evalsha", "eval")


def configure(url: str, db: str) -> None:
    settings.configure(
        SECRET_KEY="bench",
        INSTALLED_APPS=["django.contrib.sessions", "django_redis_sessions"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db}},
        SESSION_ENGINE="django_redis_sessions.session",
        SESSION_REDIS={"url": url},
        USE_TZ=True,
    )
    django.setup()


def commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in COMMANDS)


def per_load(loads: Callable[[], int]) -> tuple[float, int, int]:
    """(µs per load, Redis commands per load, SQL queries per load) of one batch."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = redis.Redis.from_url(settings.SESSION_REDIS["url"])
    client.config_resetstat()
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        count = loads()
        elapsed = time.perf_counter() - started
    return elapsed / count * 1e6, commands(client) // count, len(queries) // count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        configure(server.url, str(Path(tmp) / "old.sqlite3"))
        run(server.url, args.sessions, args.rounds)


def run(url: str, sessions: int, rounds: int) -> None:
    from django.contrib.sessions.backends.db import SessionStore as DbStore
    from django.core.management import call_command
    from django.test import override_settings

    from django_redis_sessions.session import SessionStore

    call_command("migrate", verbosity=0)
    client = redis.Redis.from_url(url)

    def make(n: int) -> list[str]:
        keys = []
        for i in range(n):
            store = DbStore()
            store.update({"_auth_user_id": str(i), "cart": list(range(10))})
            store.save()
            assert store.session_key is not None
            keys.append(store.session_key)
        return keys

    migrating = {"url": url, "migrate_from": DB_ENGINE}
    plain = {"url": url}
    keys = make(sessions)
    results: dict[str, list[tuple[float, int, int]]] = {}

    def load_all(batch: list[str]) -> Callable[[], int]:
        def loads() -> int:
            for key in batch:
                SessionStore(key).load()
            return len(batch)

        return loads

    # First requests: each imports one session (a query, a GET, a SET NX).
    chunk = max(1, sessions // rounds)
    with override_settings(SESSION_REDIS=migrating):
        for r in range(rounds):
            batch = keys[r * chunk : (r + 1) * chunk]
            results.setdefault("first request (import)", []).append(per_load(load_all(batch)))
    # Hits, alternating with and without migrate_from.
    for _ in range(rounds):
        for label, config in (
            ("hit, migrate_from set", migrating),
            ("hit, no migrate_from", plain),
        ):
            with override_settings(SESSION_REDIS=config):
                results.setdefault(label, []).append(per_load(load_all(keys[:chunk])))
    # Misses: a cookie nobody knows (the old store is asked once).
    unknown = [f"{i:032d}" for i in range(chunk)]
    for _ in range(rounds):
        for label, config in (
            ("unknown cookie, migrate_from set", migrating),
            ("unknown cookie, no migrate_from", plain),
        ):
            with override_settings(SESSION_REDIS=config):
                results.setdefault(label, []).append(per_load(load_all(unknown)))

    print(f"{sessions} sessions of Django's db engine (SQLite), {rounds} rounds; medians")
    print(f"{'case':36} {'µs/load':>9} {'Redis cmds':>11} {'SQL queries':>12}")
    for label, rows in results.items():
        micros = statistics.median(row[0] for row in rows)
        print(f"{label:36} {micros:9.0f} {rows[0][1]:11d} {rows[0][2]:12d}")

    # Bulk: everything anew, through manage.py migrate_sessions.
    client.flushdb()
    with override_settings(SESSION_REDIS=migrating):
        started = time.perf_counter()
        call_command("migrate_sessions", stdout=io.StringIO())
        elapsed = time.perf_counter() - started
    print(f"migrate_sessions: {sessions} sessions in {elapsed:.2f} s ({sessions / elapsed:.0f}/s)")


if __name__ == "__main__":
    main()
