"""What a cookie costs before it is a session: the key rule, and a load of each kind.

The key rule (8 to 256 printable ASCII characters, Django's 8+ with a bound) is
timed against the former 32-characters-of-[a-z0-9] rule, on a genuine key and on
junk; then SessionStore.load() for a refused cookie (no Redis command) and for a
well-formed unknown key (one GET), against a throwaway redis-server.

Run: python benchmarks/session_keys.py
(needs the project's dependencies: e.g. inside scripts/test's tox env or .venv).
"""

from __future__ import annotations

import re
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

from testproject.redis_server import RedisServer  # noqa: E402

FORMER_RULE = re.compile(r"[a-z0-9]{32}")

COOKIES = {
    "Django's 32 [a-z0-9]": "k" * 16 + "0123456789abcdef",
    "40 mixed case": "AbCdEfGhIj" * 4,
    "10 KB of junk": "x" * 10_000,
    "8 KB non-ASCII": "é" * 8_000,
    "7 characters": "1234567",
}


def median_ns(call: Callable[[], object], number: int, repeat: int = 9) -> float:
    times = timeit.repeat(call, number=number, repeat=repeat)
    return statistics.median(times) / number * 1e9


def main() -> None:
    with RedisServer() as server:
        settings.configure(
            INSTALLED_APPS=["django.contrib.sessions", "django_redis_sessions"],
            SESSION_ENGINE="django_redis_sessions.session",
            SESSION_REDIS={"url": server.url},
            SECRET_KEY="bench",
        )
        django.setup()
        from django_redis_sessions import codec
        from django_redis_sessions.session import SessionStore

        print("| cookie | key rule (ns) | former rule (ns) |")
        print("|---|---:|---:|")
        for name, cookie in COOKIES.items():
            new = median_ns(lambda c=cookie: codec.is_valid_session_key(c), 20_000)
            old = median_ns(lambda c=cookie: FORMER_RULE.fullmatch(c) is not None, 20_000)
            print(f"| {name} | {new:,.0f} | {old:,.0f} |")

        SessionStore().load()  # connect once
        refused = median_ns(lambda: SessionStore("x" * 10_000).load(), 2_000) / 1000
        unknown = median_ns(lambda: SessionStore("12345678-unknown").load(), 2_000) / 1000
        print()
        print(f"load(), refused cookie (no command): {refused:.1f} µs (median)")
        print(f"load(), well-formed unknown key (one GET): {unknown:.1f} µs (median)")


if __name__ == "__main__":
    main()
