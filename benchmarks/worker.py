"""One engine's benchmark process: reads JSON commands on stdin, answers on stdout.

Started by the harness with ``BENCH_ENGINE`` and the ``BENCH_*`` locations set;
it stays up for the whole run so that rounds can be interleaved across engines
(A B C, B C A, C A B ...) without paying for process start-up each time.

Commands (one JSON object a line): ``hello``, ``op`` (time one operation),
``seed`` (create sessions for the HTTP load), ``fill`` (create N sessions for the
memory section), ``quit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import itertools
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django

django.setup()

import redis  # noqa: E402
import redis.asyncio  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.sessions.backends.base import VALID_KEY_CHARS  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from django.utils.crypto import get_random_string  # noqa: E402
from django.utils.module_loading import import_string  # noqa: E402

from benchmarks import engines, floor_engine, urls  # noqa: E402
from benchmarks.payload import USER_AGENT, payload  # noqa: E402
from benchmarks.serverstats import by_command, top_level_shares  # noqa: E402

ENGINE = engines.BY_NAME[os.environ["BENCH_ENGINE"]]
TTL = settings.SESSION_COOKIE_AGE
COOKIE = settings.SESSION_COOKIE_NAME

# A browser's request headers (the sign-ins change the address per user).
BROWSER = {"HTTP_USER_AGENT": USER_AGENT, "REMOTE_ADDR": "198.51.100.23"}

Step = Callable[[int], Any]
AStep = Callable[[int], Awaitable[Any]]


def _versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for dist in ("django", "redis", "hiredis", "django-redis", "psycopg", "gunicorn", "uvicorn"):
        with contextlib.suppress(PackageNotFoundError):
            found[dist] = version(dist)
    from redis.utils import HIREDIS_AVAILABLE

    found["hiredis parser"] = "yes" if HIREDIS_AVAILABLE else "no"
    return found


def _prepare_database() -> None:
    if not ENGINE.sql:
        return
    from django.core.management import call_command
    from django.db import connection

    if ENGINE.postgres:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {engines.pg_schema(ENGINE)}")
    call_command("migrate", "sessions", verbosity=0)


def _summary(
    times: list[float], elapsed: float, cpu: float, server: dict[str, Any]
) -> dict[str, Any]:
    # The median operation: a preempted one (the machine is shared) moves it little.
    # CPU time is this process's only: it leaves out waiting on Redis, and on other jobs.
    return {
        "us": statistics.median(times) * 1e6,
        "mean_us": elapsed / len(times) * 1e6,
        "cpu_us": cpu / len(times) * 1e6,
        "count": len(times),
        "server_us": server["server_us"] / len(times),
        "server_cpu_us": server["server_cpu_us"] / len(times),
        # µs per operation in each command: which command a save is (SET, EVALSHA ...).
        "server_commands": {
            name: usec / len(times) for name, usec in server["server_commands"].items()
        },
    }


def _server_cpu_us(admin: redis.Redis) -> float:
    """The server's main-thread CPU (user + system) so far, in µs: parsing,
    replies and event loop included, which commandstats leaves out."""
    cpu = admin.info("cpu")
    user = cpu.get("used_cpu_user_main_thread", cpu["used_cpu_user"])
    system = cpu.get("used_cpu_sys_main_thread", cpu["used_cpu_sys"])
    return float(user + system) * 1e6


class Bench:
    """The operations, each as ``prepare(n) -> step`` where ``step(i)`` is one timed op."""

    def __init__(self) -> None:
        self.Store = importlib.import_module(settings.SESSION_ENGINE).SessionStore
        self.loop = asyncio.new_event_loop()
        self.rf = RequestFactory()
        middleware = import_string(settings.MIDDLEWARE[0])
        self.middleware = middleware(urls.counter)
        self.amiddleware = middleware(urls.acounter)
        # A sign-in's request: the engine's middleware gives it its store, as in
        # production (ours attaches the request, for the index's IP and user agent).
        self.login_request = self.rf.post("/login/", **BROWSER)
        # Seven digits each: every session's value has the same size.
        self.users = itertools.count(1_000_000)
        self.raw: redis.Redis | None = None
        self.araw: redis.asyncio.Redis | None = None
        self.admin = redis.Redis.from_url(settings.BENCH_REDIS_URL)
        # op -> {command: share of its calls sent by the client, not by a script}
        self.top_level: dict[str, dict[str, float]] = {}
        if ENGINE.name == "floor":
            self.raw = floor_engine.client()
            self.araw = redis.asyncio.Redis.from_url(settings.BENCH_REDIS_URL)

    # Sessions ------------------------------------------------------------

    def session_data(self, i: int = 0) -> dict[str, Any]:
        """``payload(i)`` signed in as a user of its own: one session per user, as in
        production (the per-user index then holds one entry per user)."""
        return {**payload(i), "_auth_user_id": str(next(self.users))}

    def signing_in(self, user: str) -> Any:
        """A new store for a sign-in request from the user's own address, made by the
        middleware (``process_request``) as in production."""
        request, n = self.login_request, int(user)
        # Each user's own IPv4 address, all of the longest form (15 characters).
        request.META["REMOTE_ADDR"] = f"10.{100 + n % 150}.{100 + n // 150 % 150}.{100 + n % 7}"
        self.middleware.process_request(request)
        return request.session

    def new_session(self, i: int = 0) -> str:
        return self.save_new(self.session_data(i))

    def save_new(self, data: dict[str, Any]) -> str:
        store = self.signing_in(data["_auth_user_id"])
        store.update(data)
        store.save()
        key: str = store.session_key
        return key

    def new_sessions(self, n: int) -> list[str]:
        return [self.new_session() for _ in range(n)]

    def visits(self, key: str) -> int:
        data = self.Store(key).load()
        visits: int = data["visits"]
        return visits

    # Operations ------------------------------------------------------------

    def op_load(self, n: int) -> Step:
        data = self.session_data()
        key = self.save_new(data)
        loaded = self.Store(key).load()
        if {name: loaded.get(name) for name in data} != data:
            raise AssertionError(f"load returned {loaded!r}")
        if self.raw is not None:
            raw, name = self.raw, floor_engine.PREFIX + key
            return lambda i: json.loads(raw.get(name))  # type: ignore[arg-type]
        store = self.Store
        return lambda i: store(key).load()

    def op_cycle(self, n: int) -> Step:
        key = self.new_session()
        if self.raw is not None:
            raw, name = self.raw, floor_engine.PREFIX + key

            def step(i: int) -> None:
                data = json.loads(raw.get(name))  # type: ignore[arg-type]
                data["visits"] = data.get("visits", 0) + 1
                raw.set(name, floor_engine.dumps(data), ex=TTL)

            return step
        store = self.Store

        def step(i: int) -> None:
            session = store(key)
            session["visits"] = session.get("visits", 0) + 1
            session.save()

        return step

    def op_create(self, n: int) -> Step:
        # A sign-in: every new session is a new user's (the floor builds the same dict).
        fresh = self.session_data
        if self.raw is not None:
            raw = self.raw

            def step(i: int) -> None:
                name = floor_engine.PREFIX + get_random_string(32, VALID_KEY_CHARS)
                data = fresh()
                if not raw.set(name, floor_engine.dumps(data), ex=TTL, nx=True):
                    raise AssertionError("key collision")

            return step
        signing_in = self.signing_in

        def step(i: int) -> None:
            data = fresh()
            session = signing_in(data["_auth_user_id"])
            session.update(data)
            session.save()

        return step

    def op_exists(self, n: int) -> Step:
        key = self.new_session()
        if self.raw is not None:
            raw, name = self.raw, floor_engine.PREFIX + key
            return lambda i: raw.exists(name)
        store = self.Store()
        if not store.exists(key):
            raise AssertionError("exists() is False for a live session")
        return lambda i: store.exists(key)

    def op_delete(self, n: int) -> Step:
        keys = self.new_sessions(n)
        if self.raw is not None:
            raw, names = self.raw, [floor_engine.PREFIX + key for key in keys]
            return lambda i: raw.delete(names[i])
        store = self.Store
        return lambda i: store(keys[i]).delete()

    def op_cycle_key(self, n: int) -> Step:
        keys = self.new_sessions(n)
        if self.raw is not None:
            raw, names = self.raw, [floor_engine.PREFIX + key for key in keys]

            def step(i: int) -> None:
                data = json.loads(raw.get(names[i]))  # type: ignore[arg-type]
                new = floor_engine.PREFIX + get_random_string(32, VALID_KEY_CHARS)
                raw.set(new, floor_engine.dumps(data), ex=TTL, nx=True)
                raw.delete(names[i])

            return step
        store = self.Store

        def step(i: int) -> None:
            store(keys[i]).cycle_key()

        return step

    def op_middleware(self, n: int) -> Step:
        key = self.new_session()
        rf, middleware, cookie = self.rf, self.middleware, f"{COOKIE}={key}"
        before = self.visits(key)
        response = middleware(rf.get("/", HTTP_COOKIE=cookie, **BROWSER))
        if response.status_code != 200 or self.visits(key) != before + 1:
            raise AssertionError("the middleware did not save the session")
        return lambda i: middleware(rf.get("/", HTTP_COOKIE=cookie, **BROWSER))

    # Async operations --------------------------------------------------------

    def aop_aget(self, n: int) -> AStep:
        key = self.new_session()
        if self.araw is not None:
            araw, name = self.araw, floor_engine.PREFIX + key

            async def step(i: int) -> Any:
                return json.loads(await araw.get(name))  # type: ignore[arg-type]

            return step
        store = self.Store

        async def step(i: int) -> Any:
            return await store(key).aget("visits")

        return step

    def aop_acycle(self, n: int) -> AStep:
        key = self.new_session()
        if self.araw is not None:
            araw, name = self.araw, floor_engine.PREFIX + key

            async def step(i: int) -> None:
                data = json.loads(await araw.get(name))  # type: ignore[arg-type]
                data["visits"] = data.get("visits", 0) + 1
                await araw.set(name, floor_engine.dumps(data), ex=TTL)

            return step
        store = self.Store

        async def step(i: int) -> None:
            session = store(key)
            await session.aset("visits", await session.aget("visits", 0) + 1)
            await session.asave()

        return step

    def aop_amiddleware(self, n: int) -> AStep:
        key = self.new_session()
        rf, middleware, cookie = self.rf, self.amiddleware, f"{COOKIE}={key}"

        async def step(i: int) -> Any:
            return await middleware(rf.get("/", HTTP_COOKIE=cookie, **BROWSER))

        before = self.visits(key)
        response = self.loop.run_until_complete(step(0))
        if response.status_code != 200 or self.visits(key) != before + 1:
            raise AssertionError("the async middleware did not save the session")
        return step

    # Timing ------------------------------------------------------------------

    def time_op(self, op: str, n: int, max_s: float, warmup: int) -> dict[str, Any]:
        """Run ``op`` up to ``n`` times (or ``max_s`` seconds); return µs per op."""
        if hasattr(self, f"aop_{op}"):
            astep = getattr(self, f"aop_{op}")(n + warmup)
            return self.loop.run_until_complete(self._atime(op, astep, n, max_s, warmup))
        step = getattr(self, f"op_{op}")(n + warmup)
        check = self._check_cycle(op)
        with self._monitored(op):
            for i in range(warmup):
                step(n + i)
        gc.collect()
        clock = time.perf_counter
        times: list[float] = []
        self._server_start()
        cpu = time.process_time()
        start = clock()
        deadline = start + max_s
        while len(times) < n:
            before = clock()
            step(len(times))
            after = clock()
            times.append(after - before)
            if after > deadline:
                break
        elapsed, cpu = clock() - start, time.process_time() - cpu
        server = self._server_stop(op)
        check()
        return _summary(times, elapsed, cpu, server)

    async def _atime(
        self, op: str, step: AStep, n: int, max_s: float, warmup: int
    ) -> dict[str, Any]:
        with self._monitored(op):
            for i in range(warmup):
                await step(n + i)
        gc.collect()
        clock = time.perf_counter
        times: list[float] = []
        self._server_start()
        cpu = time.process_time()
        start = clock()
        deadline = start + max_s
        while len(times) < n:
            before = clock()
            await step(len(times))
            after = clock()
            times.append(after - before)
            if after > deadline:
                break
        elapsed, cpu = clock() - start, time.process_time() - cpu
        return _summary(times, elapsed, cpu, self._server_stop(op))

    # Server-side cost ----------------------------------------------------------
    # Only this worker talks to its server while it times a cell (the harness
    # runs one cell at a time), so the server's counters are this cell's.

    @contextlib.contextmanager
    def _monitored(self, op: str) -> Iterator[None]:
        """Watch the warm-up with MONITOR, once per op, to learn which commands
        the client sends and which its scripts run (see ``command_us``)."""
        if op in self.top_level:
            yield
            return
        marker = f"bench-monitor-end-{op}"
        with self.admin.monitor() as monitor:
            yield
            self.admin.echo(marker)
            lines = []
            while True:
                line = monitor.next_command()
                if line["command"] == f"ECHO {marker}":
                    break
                lines.append(line)
        self.top_level[op] = top_level_shares(lines)

    def _server_start(self) -> None:
        self.admin.config_resetstat()
        self._server_cpu = _server_cpu_us(self.admin)

    def _server_stop(self, op: str) -> dict[str, Any]:
        cpu = _server_cpu_us(self.admin) - self._server_cpu
        commands = by_command(self.admin.info("commandstats"), self.top_level[op])
        return {
            "server_us": sum(commands.values()),
            "server_cpu_us": cpu,
            "server_commands": commands,
        }

    def _check_cycle(self, op: str) -> Callable[[], None]:
        # A cheap guard that the timed steps really stored something.
        if op != "create":
            return lambda: None
        client = redis.Redis.from_url(settings.BENCH_REDIS_URL)
        before = client.dbsize()

        def check() -> None:
            if not ENGINE.sql and client.dbsize() <= before:
                raise AssertionError("create stored nothing in Redis")
            client.close()

        return check

    # Other commands ------------------------------------------------------------

    def seed(self, n: int) -> list[str]:
        """Sessions for the HTTP load, each with the payload."""
        return [self.new_session(i) for i in range(n)]

    def fill(self, n: int) -> int:
        """N sessions with slightly varying payloads, for the memory section."""
        for i in range(n):
            self.new_session(i)
        return n


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the protocol stream
    try:
        _prepare_database()
        bench: Bench | None = Bench()
        ready: dict[str, Any] = {"ok": True}
    except Exception:
        bench = None
        ready = {"ok": False, "error": traceback.format_exc(limit=4)}
    ready["versions"] = _versions()
    ready["middleware"] = settings.MIDDLEWARE[0]
    out.write(json.dumps(ready) + "\n")
    out.flush()
    for line in sys.stdin:
        command = json.loads(line)
        cmd = command["cmd"]
        if cmd == "quit":
            break
        try:
            if bench is None:
                raise RuntimeError("engine failed to start")
            if cmd == "op":
                reply: dict[str, Any] = bench.time_op(
                    command["op"], command["n"], command["max_s"], command["warmup"]
                )
            elif cmd == "seed":
                reply = {"keys": bench.seed(command["n"])}
            elif cmd == "fill":
                reply = {"created": bench.fill(command["n"])}
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception:
            reply = {"error": traceback.format_exc(limit=6)}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
