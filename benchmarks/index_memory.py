"""What the per-user session index costs in Redis memory, per session.

Fills a fresh server of its own (on a free loopback port) with N users, one
session each, signed in through the engine with an IP and a user agent, and
reports ``INFO memory``'s ``used_memory`` growth per session for:

- floor: the session's JSON, raw, one ``SET EX`` (the least a store can keep);
- index off: this engine with ``user_index: False``;
- index on, previous format: entries as the previous release wrote them
  (``<until>|<seen>|<created>|<JSON>``);
- index on: this release's entries (format "A", see ``userindex``).

Sessions are ``payload(i)`` (about 1 KB, as in the main benchmark). User
agents rotate through a table of common browsers; IPs are IPv4 with one user
in five on IPv6. It also times ``userindex.decode_entry`` (what
``get_sessions`` pays per entry to read it) for both formats.

Run: python benchmarks/index_memory.py [--users 5000] [--server redis valkey]
(inside a tox env: e.g. ``.tox/py312-django61/bin/python benchmarks/index_memory.py``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

from benchmarks.harness import settled_memory  # noqa: E402
from benchmarks.payload import payload  # noqa: E402
from testproject.redis_server import RedisServer, find_redis_server  # noqa: E402

#: Common user agents (2025-2026 browsers), as servers receive them.
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:135.0) Gecko/20100101 Firefox/135.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
)
TTL = 14 * 24 * 3600


def ip_of(i: int) -> str:
    if i % 5 == 4:
        return f"2001:db8:{i % 65536:x}::{(i * 7919) % 65536:x}"
    return f"{10 + i % 200}.{(i >> 8) % 256}.{(i >> 3) % 256}.{1 + i % 254}"


def old_entry(until: int, last_seen: int, created: int, ip: str | None, ua: str | None) -> str:
    """An entry as the previous release wrote it."""
    meta = {k: v for k, v in (("ip", ip), ("ua", ua)) if v}
    return f"{until}|{last_seen}|{created}|" + json.dumps(meta, separators=(",", ":"))


def configure(url: str) -> None:
    settings.configure(
        SECRET_KEY="bench",
        INSTALLED_APPS=["django.contrib.sessions", "django_redis_sessions"],
        DATABASES={},
        SESSION_ENGINE="django_redis_sessions.session",
        SESSION_REDIS={"url": url, "prefix": "session:"},
        SESSION_COOKIE_AGE=TTL,
        USE_TZ=True,
    )
    django.setup()


def use(url: str, **index: Any) -> None:
    from django_redis_sessions import conf, connection

    settings.SESSION_REDIS = {"url": url, "prefix": "session:", **index}
    conf.get_config.cache_clear()
    connection.reset()


@contextmanager
def previous_format() -> Iterator[None]:
    """Entries written in the previous release's format (the numbers and the tail)."""
    from django_redis_sessions import userindex

    saved = userindex.numbers_of, userindex.encode_meta
    userindex.numbers_of = lambda until, seen, created: f"{until}|{seen}|{created}|"  # type: ignore[assignment]
    userindex.encode_meta = lambda ip, ua: old_entry(0, 0, 0, ip, ua)[6:]  # type: ignore[assignment]
    try:
        yield
    finally:
        userindex.numbers_of, userindex.encode_meta = saved


def fill_engine(n: int) -> None:
    from django.http import HttpRequest

    from django_redis_sessions import users
    from django_redis_sessions.session import SessionStore

    for i in range(n):
        request = HttpRequest()
        request.META.update(REMOTE_ADDR=ip_of(i), HTTP_USER_AGENT=USER_AGENTS[i % len(USER_AGENTS)])
        store = SessionStore()
        request.session = store  # type: ignore[assignment]
        users.attach(request)
        store.update({**payload(i), "_auth_user_id": str(100_000 + i)})
        store.save()
        del request


def fill_floor(client: Any, n: int) -> None:
    from django.utils.crypto import get_random_string

    for i in range(n):
        data = {**payload(i), "_auth_user_id": str(100_000 + i)}
        client.set(
            "session:" + get_random_string(32), json.dumps(data, separators=(",", ":")), ex=TTL
        )


def per_session(admin: Any, n: int, fill: Callable[[], None]) -> float:
    # Twice, keeping the second: the first fill also grows tables that stay.
    for _ in range(2):
        admin.flushall()
        before = settled_memory(admin)
        fill()
        after = settled_memory(admin)
    return (after - before) / n


def hash_encodings(admin: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in admin.scan_iter(match="session:u:*", count=1000):
        kind = admin.object("encoding", key).decode()
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def sizes(admin: Any) -> tuple[float, float]:
    """Mean MEMORY USAGE of 200 index hashes and mean length of 200 session values."""
    hashes = list(itertools.islice(admin.scan_iter(match="session:u:*", count=1000), 200))
    strings = list(
        itertools.islice(admin.scan_iter(match="session:*", _type="string", count=1000), 200)
    )
    usage = statistics.mean(admin.memory_usage(k, samples=0) for k in hashes) if hashes else 0.0
    return usage, statistics.mean(admin.strlen(k) for k in strings)


def decode_us(entries: list[str]) -> float:
    from django_redis_sessions import userindex

    rounds = []
    for _ in range(7):
        started = time.perf_counter()
        for value in entries:
            userindex.decode_entry(value)
        rounds.append((time.perf_counter() - started) / len(entries) * 1e6)
    return statistics.median(rounds)


def measure(kind: str, n: int) -> dict[str, Any]:
    import redis

    from django_redis_sessions import userindex

    with RedisServer(binary=find_redis_server(kind)) as server:
        if not settings.configured:
            configure(server.url)
        admin = redis.Redis.from_url(server.url)
        version = (
            admin.info("server").get("valkey_version") or admin.info("server")["redis_version"]
        )
        rows: dict[str, Any] = {"server": f"{kind} {version}"}
        rows["floor"] = per_session(admin, n, lambda: fill_floor(admin, n))
        use(server.url, user_index=False)
        rows["index off"] = per_session(admin, n, lambda: fill_engine(n))
        rows["session bytes off"] = sizes(admin)[1]
        use(server.url)
        with previous_format():
            rows["index on, previous format"] = per_session(admin, n, lambda: fill_engine(n))
        rows["previous encodings"] = hash_encodings(admin)
        rows["previous hash usage"] = sizes(admin)[0]
        old_values = [
            v.decode() for k in admin.scan_iter(match="session:u:*") for v in admin.hvals(k)
        ]
        rows["index on"] = per_session(admin, n, lambda: fill_engine(n))
        values = [v.decode() for k in admin.scan_iter(match="session:u:*") for v in admin.hvals(k)]
        rows["encodings"] = hash_encodings(admin)
        rows["hash usage"], rows["session bytes"] = sizes(admin)
        # What the hashes themselves hold (key, object, listpack, expiry): deleted, the
        # rest of the difference to "index off" is the stamp in the session.
        before = settled_memory(admin)
        for key in list(admin.scan_iter(match="session:u:*", count=1000)):
            admin.delete(key)
        rows["hash freed"] = (before - settled_memory(admin)) / n
        rows["entry bytes"] = statistics.mean(len(v) for v in values)
        rows["previous entry bytes"] = statistics.mean(len(v) for v in old_values)
        rows["decode µs"] = decode_us(values)
        rows["previous decode µs"] = decode_us(old_values)
        assert all(userindex.decode_entry(v) for v in values + old_values)
        admin.close()
        use(server.url)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--server", nargs="+", default=["redis", "valkey"])
    args = parser.parse_args()
    for kind in args.server:
        rows = measure(kind, args.users)
        floor = rows["floor"]
        print(f"\n{rows['server']}, {args.users} users, one session each")
        print("| store | bytes per session | vs floor |")
        print("|-------|------------------:|---------:|")
        for name in ("floor", "index off", "index on, previous format", "index on"):
            print(f"| {name} | {rows[name]:,.0f} | {rows[name] / floor:.2f}x |")
        print(
            f"entry: {rows['entry bytes']:.0f} B (previous {rows['previous entry bytes']:.0f} B); "
            f"hash encodings {rows['encodings']} (previous {rows['previous encodings']}); "
            f"decode {rows['decode µs']:.2f} µs/entry (previous {rows['previous decode µs']:.2f})"
        )
        print(
            f"deleting the index hashes frees {rows['hash freed']:.0f} B per user; "
            f"MEMORY USAGE of an index hash: {rows['hash usage']:.0f} B "
            f"(previous {rows['previous hash usage']:.0f} B); session value "
            f"{rows['session bytes']:.0f} B with the index, "
            f"{rows['session bytes off']:.0f} B without"
        )


if __name__ == "__main__":
    main()
