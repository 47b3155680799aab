"""What idle and absolute timeouts cost per request: commands, round trips, time.

For each configuration (off, idle only, idle + absolute) it drives the real
middleware through Django's test client on one signed-in session and counts,
from Redis's own ``INFO commandstats``, the commands each kind of request
sends: an ordinary read (session loaded, nothing changed), a read once the idle
window's refresh is due, and a write. Then it times the ordinary read, the
configurations interleaved round by round, and reports medians and the ratio
to "off" measured in the same run.

Run: python benchmarks/timeouts_cost.py [--rounds 2000]
(needs the project's dependencies: e.g. inside scripts/test's tox env).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import django  # noqa: E402
import redis  # noqa: E402
from django.conf import settings  # noqa: E402

from testproject.redis_server import RedisServer  # noqa: E402

CONFIGS: dict[str, dict[str, int]] = {
    "off": {},
    "idle 1800 s": {"idle_timeout": 1800},
    "idle 1800 s + absolute 43200 s": {"idle_timeout": 1800, "absolute_timeout": 43200},
}
# Every data command, whether the client sent it or a script ran it.
CLIENT_COMMANDS = ("get", "set", "del", "evalsha", "eval")
SCRIPT_COMMANDS = ("getrange", "pttl", "time", "pexpire")


def configure(url: str) -> None:
    settings.configure(
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django_redis_sessions",
        ],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["django_redis_sessions.middleware.SessionMiddleware"],
        SESSION_ENGINE="django_redis_sessions.session",
        SESSION_REDIS={"url": url},
        DATABASES={},
        USE_TZ=True,
    )


def read_view(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse(str(request.session.get("n", 0)))


def write_view(request: Any) -> Any:
    from django.http import HttpResponse

    request.session["n"] = request.session.get("n", 0) + 1
    return HttpResponse("ok")


def sign_in_view(request: Any) -> Any:
    from django.http import HttpResponse

    request.session.cycle_key()  # what login() does first
    request.session["_auth_user_id"] = "1"
    return HttpResponse("ok")


urlpatterns: list[Any] = []


sent: list[str] = []
_execute = redis.Redis.execute_command


def _counting(self: redis.Redis, *args: Any, **options: Any) -> Any:
    if getattr(self, "counted", True):  # the raw client below is not the engine's
        sent.append(str(args[0]))
    return _execute(self, *args, **options)


redis.Redis.execute_command = _counting  # type: ignore[method-assign]


def counts(client: redis.Redis) -> tuple[int, int, str]:
    """Round trips the engine sent; commands Redis ran for them; writes among those."""
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]

    def calls(name: str) -> int:
        return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))

    ran = sum(calls(name) for name in (*CLIENT_COMMANDS, *SCRIPT_COMMANDS))
    writes = calls("set") + calls("pexpire")
    return len(sent), ran, f"{writes} (set {calls('set')}, pexpire {calls('pexpire')})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    with RedisServer() as server:
        configure(server.url)
        django.setup()
        from django.test import Client, override_settings
        from django.urls import path

        urlpatterns.extend(
            [path("read/", read_view), path("write/", write_view), path("in/", sign_in_view)]
        )
        raw = redis.Redis.from_url(server.url)
        raw.counted = False  # type: ignore[attr-defined]
        clients: dict[str, Client] = {}
        print("| configuration | request | round trips | commands run | writes |")
        print("|---|---|---|---|---|")
        for name, keys in CONFIGS.items():
            with override_settings(SESSION_REDIS={"url": server.url, **keys}):
                client = clients[name] = Client()
                client.get("/write/")
                rows = []
                for pass_ in range(3):  # the first passes also load the scripts
                    for label, url, refresh_due in (
                        ("sign-in (cycle_key + save)", "/in/", False),
                        ("ordinary read", "/read/", False),
                        ("read, idle refresh due", "/read/", True),
                        ("write", "/write/", False),
                    ):
                        if refresh_due and "idle_timeout" not in keys:
                            continue
                        if refresh_due:  # 200 s idle: past the refresh threshold
                            for key in raw.keys("session:*"):
                                raw.pexpire(key, (keys["idle_timeout"] - 200) * 1000)
                        raw.config_resetstat()
                        sent.clear()
                        client.get(url)
                        if pass_ == 2:
                            rows.append((label, counts(raw)))
                for label, (trips, commands, writes) in rows:
                    print(f"| {name} | {label} | {trips} | {commands} | {writes} |")
        timings: dict[str, list[float]] = {name: [] for name in CONFIGS}
        order = list(CONFIGS)
        for round_ in range(args.rounds):
            for name in order[round_ % 3 :] + order[: round_ % 3]:
                with override_settings(SESSION_REDIS={"url": server.url, **CONFIGS[name]}):
                    started = time.perf_counter()
                    clients[name].get("/read/")
                    timings[name].append(time.perf_counter() - started)
        base = statistics.median(timings["off"])
        print(f"\nOrdinary read through the middleware, median of {args.rounds}:")
        for name, values in timings.items():
            median = statistics.median(values)
            print(f"  {name:32s} {median * 1e6:7.0f} µs  {median / base:.2f} x")


if __name__ == "__main__":
    main()
