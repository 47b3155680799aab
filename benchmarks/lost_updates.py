"""Lost updates under concurrency: our engine against Django's cache engine, same Redis.

The workload: several threads send requests through the real session middleware
on ONE session (one browser, many parallel AJAX calls). Each thread sets its own
key to each round's number; one thread appends each round's number to a list in
place. Afterwards every thread's key should hold its last round and the list
every round: whatever is missing was lost by a concurrent save.

Also times a save that meets no conflict and one that must merge a conflict.

Run: python benchmarks/lost_updates.py [--threads 6] [--rounds 200]
(needs the project's dependencies: e.g. inside scripts/test's tox env or .venv).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

from testproject.redis_server import RedisServer  # noqa: E402

ENGINES = {
    "django_redis_sessions": (
        "django_redis_sessions.session",
        "django_redis_sessions.middleware.SessionMiddleware",
    ),
    "Django cache engine (RedisCache)": (
        "django.contrib.sessions.backends.cache",
        "django.contrib.sessions.middleware.SessionMiddleware",
    ),
}


def configure(url: str) -> None:
    settings.configure(
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=["django.contrib.sessions", "django_redis_sessions"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        SESSION_REDIS={"url": url, "prefix": "ours:"},
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
                "KEY_PREFIX": "cache",
            }
        },
        USE_TZ=True,
    )
    django.setup()


def set_value(request, key, value):  # type: ignore[no-untyped-def]
    from django.http import HttpResponse

    request.session[key] = value
    return HttpResponse("ok")


def append_value(request, value):  # type: ignore[no-untyped-def]
    from django.http import HttpResponse

    request.session.setdefault("items", []).append(value)
    request.session.modified = True
    return HttpResponse("ok")


def start(request):  # type: ignore[no-untyped-def]
    from django.http import HttpResponse

    request.session["started"] = True
    return HttpResponse("ok")


def _urls() -> list[object]:
    from django.urls import path

    return [
        path("start/", start),
        path("set/<str:key>/<int:value>/", set_value),
        path("append/<int:value>/", append_value),
    ]


def run_workload(engine: str, middleware: str, threads: int, rounds: int) -> dict[str, int]:
    from django.test import Client, override_settings

    with override_settings(SESSION_ENGINE=engine, MIDDLEWARE=[middleware]):
        client = Client()
        client.get("/start/")
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        errors: list[int] = []

        def worker(index: int) -> None:
            http = Client()
            http.cookies[settings.SESSION_COOKIE_NAME] = cookie
            for n in range(rounds):
                url = f"/append/{n}/" if index == 0 else f"/set/t{index}/{n}/"
                if http.get(url).status_code != 200:
                    errors.append(n)

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        from importlib import import_module

        final = dict(import_module(engine).SessionStore(cookie).load())
    lost_keys = sum(final.get(f"t{i}") != rounds - 1 for i in range(1, threads))
    lost_items = rounds - len(set(final.get("items", [])))
    return {
        "updates": threads * rounds,
        "lost_keys": lost_keys,
        "lost_items": lost_items,
        "errors": len(errors),
    }


def save_costs(samples: int) -> tuple[float, float]:
    """Median µs of a plain save, and of a save that must merge a newer version."""
    from django_redis_sessions.session import SessionStore

    base = SessionStore()
    base.update({"user": "1", "cart": list(range(20)), "flag": True})
    base.save()
    plain, conflict = [], []
    for n in range(samples):
        a = SessionStore(base.session_key)
        a["n"] = n
        started = time.perf_counter()
        a.save()
        plain.append(time.perf_counter() - started)
        a, b = SessionStore(base.session_key), SessionStore(base.session_key)
        a._session_cache, b._session_cache = a.load(), b.load()
        b["other"] = n
        b.save()
        a["n"] = -n
        started = time.perf_counter()
        a.save()
        conflict.append(time.perf_counter() - started)
    return statistics.median(plain) * 1e6, statistics.median(conflict) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    with RedisServer() as server:
        configure(server.url)
        sys.modules[__name__].urlpatterns = _urls()  # type: ignore[attr-defined]
        print(f"{args.threads} threads x {args.rounds} requests on one session, real middleware\n")
        print("| engine | updates sent | keys lost | list items lost | failed requests |")
        print("|---|---:|---:|---:|---:|")
        for name, (engine, middleware) in ENGINES.items():
            result = run_workload(engine, middleware, args.threads, args.rounds)
            print(
                f"| {name} | {result['updates']} | {result['lost_keys']} of {args.threads - 1} "
                f"| {result['lost_items']} of {args.rounds} | {result['errors']} |"
            )
        plain, conflict = save_costs(args.samples)
        print(f"\nsave, no conflict: {plain:.0f} µs (median of {args.samples})")
        print(f"save that merges a conflict: {conflict:.0f} µs (median of {args.samples})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
