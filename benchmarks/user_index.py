"""What the per-user session index costs a request, and what listing/ending costs.

Requests go through the real middleware stack (our SessionMiddleware and
Django's AuthenticationMiddleware) with Django's test client, against a
redis-server of our own on loopback. Each case runs in interleaved rounds
(the cases rotate their order every round) and reports the median time per
request and the Redis commands one request sends (INFO commandstats, the
server-side commands of scripts included).

Cases, for a signed-in user unless said otherwise:

- "read": a request that reads request.user (loads the session) and changes nothing;
- "write": a request that changes the session;
- "refresh": a read whose last_seen stamp is due (activity_interval = 0 makes
  every request one; with the default 60 s it is at most one per minute);
- "login + logout": a new client signs in, then out (django.contrib.auth);
- each with the index on (the default) and off (``user_index: False``).

Run: python benchmarks/user_index.py [--rounds 15] [--batch 200]
(needs the project's dependencies: e.g. inside a scripts/test tox env).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

from testproject.redis_server import RedisServer  # noqa: E402

ENGINE_COMMANDS = (
    "get", "getrange", "set", "del", "exists", "evalsha", "eval", "pexpire",
    "hset", "hget", "hgetall", "hdel", "hexists", "pttl", "type",
)  # fmt: skip


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
        MIDDLEWARE=[
            "django_redis_sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        SESSION_ENGINE="django_redis_sessions.session",
        SESSION_REDIS={"url": url, "prefix": "bench:"},
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        USE_TZ=True,
    )
    django.setup()


def read(request):  # type: ignore[no-untyped-def]
    from django.http import HttpResponse

    return HttpResponse(request.user.get_username())


def write(request):  # type: ignore[no-untyped-def]
    from django.http import HttpResponse

    request.session["n"] = request.session.get("n", 0) + 1
    return HttpResponse("ok")


def login_view(request):  # type: ignore[no-untyped-def]
    from django.contrib.auth import login
    from django.contrib.auth.models import User
    from django.http import HttpResponse

    login(request, User.objects.get(username="ada"))
    return HttpResponse("ok")


def logout_view(request):  # type: ignore[no-untyped-def]
    from django.contrib.auth import logout
    from django.http import HttpResponse

    logout(request)
    return HttpResponse("ok")


def _urls() -> list[Any]:
    from django.urls import path

    return [
        path("read/", read),
        path("write/", write),
        path("login/", login_view),
        path("logout/", logout_view),
    ]


urlpatterns: list[Any] = []


def use(url: str, **index: Any) -> None:
    from django_redis_sessions import conf, connection

    settings.SESSION_REDIS = {"url": url, "prefix": "bench:", **index}
    conf.get_config.cache_clear()
    connection.reset()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()

    with RedisServer() as server:
        configure(server.url)
        urlpatterns.extend(_urls())
        import redis
        from django.contrib.auth.models import User
        from django.core.management import call_command
        from django.test import Client

        from django_redis_sessions import users

        call_command("migrate", verbosity=0)
        ada = User.objects.create_user("ada", password="pw")
        r = redis.Redis.from_url(server.url)

        def signed_in(**index: Any) -> Client:
            use(server.url, **index)
            client = Client(HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux x86_64) Firefox/135.0")
            client.get("/login/")
            return client

        clients = {"on": signed_in(), "off": signed_in(user_index=False)}
        settings_of: dict[str, dict[str, Any]] = {
            "on": {},
            "off": {"user_index": False},
            "refresh": {"activity_interval": 0},
        }
        clients["refresh"] = clients["on"]

        def request_case(index: str, url: str) -> Callable[[], None]:
            def run() -> None:
                clients[index].get(url)

            return run

        def login_case() -> None:
            client = Client(HTTP_USER_AGENT="Mozilla/5.0 Firefox/135.0")
            client.get("/login/")
            client.get("/logout/")

        cases: dict[str, tuple[str, Callable[[], None]]] = {
            "read, index on": ("on", request_case("on", "/read/")),
            "read, index off": ("off", request_case("off", "/read/")),
            "write, index on": ("on", request_case("on", "/write/")),
            "write, index off": ("off", request_case("off", "/write/")),
            "read with a due refresh": ("refresh", request_case("refresh", "/read/")),
            "login + logout, index on": ("on", login_case),
            "login + logout, index off": ("off", login_case),
        }
        commands: dict[str, dict[str, int]] = {}
        timings: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for round_no in range(args.rounds):
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                index, run = cases[name]
                use(server.url, **settings_of[index])
                run()  # warm: clients, scripts
                if name not in commands:
                    r.config_resetstat()
                    run()
                    stats = r.info("commandstats")
                    commands[name] = {
                        c: int(stats[f"cmdstat_{c}"]["calls"])
                        for c in ENGINE_COMMANDS
                        if f"cmdstat_{c}" in stats
                    }
                for _ in range(args.batch):
                    started = time.perf_counter()
                    run()
                    timings[name].append(time.perf_counter() - started)

        print(f"{args.rounds} rounds x {args.batch} requests per case, median per request\n")
        print("| case | median µs | vs index off | Redis commands (per request or pair) |")
        print("|------|----------:|-------------:|----------------------------|")
        medians = {name: statistics.median(values) * 1e6 for name, values in timings.items()}
        for name in names:
            base = name.split(",")[0].replace(" with a due refresh", "")
            off = medians.get(f"{base}, index off")
            ratio = f"{medians[name] / off:.2f}x" if off else "-"
            sent = ", ".join(f"{c} {n}" for c, n in sorted(commands[name].items()))
            print(f"| {name} | {medians[name]:.0f} | {ratio} | {sent} |")

        # The index layer's own CPU time on an ordinary request (no I/O): its
        # ``loaded`` hook after a load (no stamp due: returns None) and its
        # ``around_save`` deciding whether a save needs an index write (builds the
        # generator of the write's commands, runs none of them).
        from django_redis_sessions import plan, userindex
        from django_redis_sessions.session import SessionStore

        use(server.url)
        index = next(
            layer for layer in plan.get_plan().layers if isinstance(layer, userindex.Index)
        )
        store = SessionStore(clients["on"].cookies["sessionid"].value)
        signed = dict(store.load())
        key = store.session_key or ""
        if index.loaded(store, key, signed) is not None:
            sys.exit("the session's last_seen stamp is due: this is not an ordinary request")
        anonymous = {"n": 1}
        print("\n| index hook, ordinary request | ns per call (median of 7 x 100,000) |")
        print("|------------------------------|-----------------------------------:|")

        def write_steps() -> Any:
            yield from ()

        write = write_steps()  # the save's own commands: never run here
        for label, data in (("signed in", signed), ("anonymous", anonymous)):
            for hook, call in (
                ("loaded", lambda d=data: index.loaded(store, key, d)),
                ("around_save", lambda d=data: index.around_save(store, key, d, False, write)),
            ):
                runs = []
                for _ in range(7):
                    started = time.perf_counter()
                    for _ in range(100_000):
                        call()
                    runs.append((time.perf_counter() - started) / 100_000 * 1e9)
                print(f"| {hook}, {label} | {statistics.median(runs):.0f} |")

        # Listing and ending, by number of sessions of the user.
        use(server.url)
        users.end_sessions(ada)
        print("\n| sessions of the user | get_sessions µs | end_sessions µs |")
        print("|---------------------:|----------------:|----------------:|")
        for count in (1, 10, 100):
            listing: list[float] = []
            ending: list[float] = []
            for _ in range(5):
                for _ in range(count):
                    Client().get("/login/")
                started = time.perf_counter()
                assert len(users.get_sessions(ada)) == count
                listing.append(time.perf_counter() - started)
                started = time.perf_counter()
                users.end_sessions(ada)
                ending.append(time.perf_counter() - started)
            print(
                f"| {count} | {statistics.median(listing) * 1e6:.0f} "
                f"| {statistics.median(ending) * 1e6:.0f} |"
            )


if __name__ == "__main__":
    main()
