"""The benchmark run: started by ``benchmarks/run.py`` inside the bench virtualenv.

Starts a throwaway redis-server (and a valkey-server) on free loopback ports, one
worker process per engine, and interleaves the measurements across them (A B C,
B C A, C A B ...), then writes the medians and their ratios to the floor to
``benchmarks/RESULTS.md``.

The servers and the workers share one CPU, the one other jobs used least just
before the run (``--no-pin`` leaves them to the scheduler): a round trip is then
a switch between two processes on one core.
Left alone, the kernel puts a worker on the same core as the server or on the
other, and moves it; across cores each round trip waits for the other core to
wake (an inter-processor interrupt; slow in a VM when that core idles), so the
same command took 42 µs in one worker and 118 µs in another.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis

from benchmarks import engines
from benchmarks.chart import write_chart
from benchmarks.engines import ENGINES, PEER_VERSION, Engine
from benchmarks.payload import USER_AGENT
from benchmarks.report import update_readme, write_report
from testproject.redis_server import RedisServer, RedisServerError, find_redis_server, free_port

ROOT = Path(__file__).resolve().parent.parent
PEER_DIR = Path(sys.prefix) / f"peer-{PEER_VERSION}"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
RESULTS_JSON = ROOT / "benchmarks" / "results" / "latest.json"

SYNC_OPS = ["load", "cycle", "create", "exists", "delete", "cycle_key", "middleware"]
ASYNC_OPS = ["aget", "acycle", "amiddleware"]
SERVERS = {"gunicorn": "/", "uvicorn": "/async"}


@dataclass(frozen=True)
class Plan:
    rounds: int  # interleaved rounds of every operation on every engine
    n: int  # timed iterations per operation per round (at most)
    max_s: float  # ... or this many seconds, whichever comes first
    warmup: int
    memory_n: int  # sessions created for the memory section
    http_rounds: int
    http_seconds: int
    http_connections: int
    http_sessions: int  # distinct sessions the load cycles through


# Many short rounds rather than a few long ones: a burst of other work on the
# machine spoils a few rounds' cells, and the median over 30 rounds ignores them.
FULL = Plan(30, 50, 0.025, 5, 5_000, 4, 2, 8, 500)
QUICK = Plan(9, 40, 0.02, 5, 2_000, 1, 2, 8, 200)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# Workers ---------------------------------------------------------------------------


class Worker:
    """One engine's ``benchmarks.worker`` process, spoken to in JSON lines."""

    def __init__(
        self, engine: Engine, env: dict[str, str], log_path: Path, cpus: set[int] | None
    ) -> None:
        self.engine = engine
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        if cpus:
            os.sched_setaffinity(self.proc.pid, cpus)
        self._buffer = b""
        self.hello = self._read(timeout=120)

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.engine.name}: no answer in {timeout} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"{self.engine.name} worker exited: {self.tail()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, command: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()
        return self._read(timeout)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-1500:]
        return ""

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b'{"cmd": "quit"}\n')
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def engine_env(engine: Engine, redis_base: str, tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT)]
    if engine.peer:
        paths.append(str(PEER_DIR))
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        DJANGO_SETTINGS_MODULE="benchmarks.settings",
        BENCH_ENGINE=engine.name,
        BENCH_REDIS_BASE=redis_base,
        BENCH_TMP=str(tmp),
    )
    return env


# PostgreSQL ------------------------------------------------------------------------


def postgres_version() -> tuple[str | None, str]:
    """The server's version when one is reachable, else None and why not."""
    try:
        import psycopg
    except ImportError as exc:
        return None, f"psycopg is not installed ({exc})"
    params = engines.pg_params()
    try:
        with psycopg.connect(**params, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except Exception as exc:
        return None, f"not reachable at {params['host']}:{params['port']} ({type(exc).__name__})"
    return (str(row[0]) if row else "?"), ""


def drop_pg_schemas(used: list[Engine]) -> None:
    import psycopg

    with psycopg.connect(**engines.pg_params(), connect_timeout=3, autocommit=True) as conn:
        for engine in used:
            conn.execute(f"DROP SCHEMA IF EXISTS {engines.pg_schema(engine)} CASCADE")


# Sections --------------------------------------------------------------------------

T = TypeVar("T")


def rotated(items: dict[str, T] | list[T], by: int) -> list[Any]:
    """Round ``by`` starts one engine later: no engine always follows the same one
    (a database's background writes after its turn would always land on the next)."""
    seq: list[Any] = list(items.items()) if isinstance(items, dict) else list(items)
    by %= len(seq) or 1
    return seq[by:] + seq[:by]


class OtherLoad:
    """The share of the measured CPUs that processes other than the run's own (its
    servers and workers) used: other jobs of a shared machine, and the hypervisor's
    steal; and how busy the other CPUs were (``rest``: they share caches, memory and,
    in a VM, the host with the run's). Read from ``/proc/stat`` and
    ``/proc/<pid>/stat``; None where there is none."""

    def __init__(self, cpus: set[int] | None, pids: list[int]) -> None:
        self.names = {"cpu"} if cpus is None else {f"cpu{cpu}" for cpu in cpus}
        self.count = len(os.sched_getaffinity(0)) if cpus is None else len(cpus)
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._start: tuple[int, int, int, int, int, float] | None = None

    def _read(self) -> tuple[int, int, int, int, int, float] | None:
        busy = steal = own = rest = rest_count = 0
        try:
            for line in Path("/proc/stat").read_text().splitlines():
                name, *fields = line.split()
                if not name.startswith("cpu") or (name == "cpu" and "cpu" not in self.names):
                    continue
                user, nice, system, _, _, irq, softirq, stolen = map(int, fields[:8])
                if name in self.names:
                    busy += user + nice + system + irq + softirq
                    steal += stolen
                elif name != "cpu" and "cpu" not in self.names:  # pinned: the other CPUs
                    rest += user + nice + system + irq + softirq
                    rest_count += 1
            for pid in self.pids:
                with contextlib.suppress(OSError):  # an exited process: nothing more
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    own += int(stat[11]) + int(stat[12])  # utime, stime
        except (OSError, ValueError):
            return None
        return busy, steal, own, rest, rest_count, time.monotonic()

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> dict[str, float] | None:
        end = self._read()
        if self._start is None or end is None:
            return None
        busy, steal, own, rest, _, at = (b - a for a, b in zip(self._start, end, strict=True))
        capacity = at * self.tick * self.count
        if capacity <= 0:
            return None
        found = {"others": max(busy - own, 0) / capacity, "steal": steal / capacity}
        if end[4]:  # CPUs outside the run's
            found["rest"] = rest / (at * self.tick * end[4])
        return found


def quietest_cpu(seconds: float = 1.0) -> int:
    """The CPU of ours that other jobs used least over ``seconds``: another run of this
    benchmark pins itself too, and two runs on one CPU each get half of it."""

    def busy() -> dict[int, int]:
        found: dict[int, int] = {}
        with contextlib.suppress(OSError, ValueError):
            for line in Path("/proc/stat").read_text().splitlines():
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    user, nice, system, _, _, irq, softirq = map(int, fields[:7])
                    found[int(name[3:])] = user + nice + system + irq + softirq
        return found

    ours = os.sched_getaffinity(0)
    before = busy()
    time.sleep(seconds)
    after = busy()
    used = {cpu: after.get(cpu, 0) - before.get(cpu, 0) for cpu in ours}
    # The least used; among equals the highest-numbered, as before (CPU 0 takes interrupts).
    return min(sorted(ours, reverse=True), key=lambda cpu: used[cpu])


def run_ops(
    workers: dict[str, Worker],
    ops: list[str],
    plan: Plan,
    failures: dict[str, str],
    load: OtherLoad | None = None,
) -> tuple[dict[str, dict[str, dict[str, list[Any]]]], list[dict[str, float] | None]]:
    """Interleaved rounds; ``[field][engine][op]`` holds µs/op per round (None:
    failed): ``us`` wall-clock (the median operation), ``cpu_us`` the worker's
    CPU, ``server_us`` the server's command time (INFO commandstats),
    ``server_commands`` the same per command and ``server_cpu_us`` its main
    thread's CPU (INFO cpu), each a mean. Then, per round, other jobs' share of
    the CPUs (``OtherLoad``)."""
    fields = ("us", "cpu_us", "server_us", "server_cpu_us", "server_commands")
    series: dict[str, dict[str, dict[str, list[Any]]]] = {
        field: {name: {op: [] for op in ops} for name in workers} for field in fields
    }
    command = {"cmd": "op", "n": plan.n, "max_s": plan.max_s, "warmup": plan.warmup}
    others: list[dict[str, float] | None] = []
    for round_no in range(plan.rounds):
        started = time.monotonic()
        if load is not None:
            load.start()
        for op in ops:
            for name, worker in rotated(workers, round_no):
                cell = f"{name}/{op}"
                reply = {"error": "failed before"} if cell in failures else None
                reply = reply or worker.ask({**command, "op": op})
                if "error" in reply:
                    if cell not in failures:
                        failures[cell] = reply["error"].strip().splitlines()[-1]
                        log(f"{cell} failed: {reply['error']}")
                    reply = {}
                for field in fields:
                    series[field][name][op].append(reply.get(field))
        other = load.stop() if load is not None else None
        others.append(other)
        if round_no % 5 == 4 or round_no + 1 == plan.rounds:
            busy = f"; other jobs {other['others']:.0%} of the CPU" if other else ""
            log(f"  round {round_no + 1}/{plan.rounds} in {time.monotonic() - started:.1f} s{busy}")
    return series, others


def redis_memory(
    workers: dict[str, Worker], servers: dict[str, RedisServer], n: int
) -> dict[str, dict[str, Any]]:
    admins = {kind: redis.Redis.from_url(server.url) for kind, server in servers.items()}
    results: dict[str, dict[str, Any]] = {}
    for name, worker in workers.items():
        engine = worker.engine
        if not engine.memory:
            continue
        admin = admins[engine.server]
        # Twice, keeping the second: the first fill after other work also grows
        # buffers and tables that stay (up to 10 % more on Redis 7 in quick runs).
        for _ in range(2):
            admin.flushall()
            before = settled_memory(admin)
            reply = worker.ask({"cmd": "fill", "n": n}, timeout=900)
            if "error" in reply:
                break
            after = settled_memory(admin)
        if "error" in reply:
            results[name] = {"error": reply["error"].strip().splitlines()[-1]}
            continue
        db = redis.Redis.from_url(engines.redis_url(engine, base_url(servers[engine.server])))
        # Sessions are strings; the per-user index (on by default) adds a hash per user.
        keys = db.dbsize()
        sample: list[bytes] = []
        for key in db.scan_iter(count=1000, _type="string"):
            sample.append(key)
            if len(sample) == 200:
                break
        usage = [db.memory_usage(key, samples=0) or 0 for key in sample]
        lengths = [db.strlen(key) for key in sample]
        db.close()
        results[name] = {
            "keys": keys,
            "per_session": (after - before) / n,
            "memory_usage": statistics.mean(usage),
            "value_bytes": statistics.mean(lengths),
            "key_bytes": statistics.mean(len(key) for key in sample),
        }
        log(f"  {name}: {results[name]['per_session']:.0f} B/session")
    for admin in admins.values():
        admin.flushall()
        admin.close()
    return results


def settled_memory(admin: redis.Redis, timeout: float = 10.0) -> int:
    """``used_memory`` once it stops moving: Redis shrinks idle clients' query
    buffers (every worker has one) and finishes rehashing its key tables in the
    background, which moved the first reading after other work by up to 20 %."""
    last = int(admin.info("memory")["used_memory"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = int(admin.info("memory")["used_memory"])
        if abs(now - last) < 4096:
            return now
        last = now
    return last


def base_url(server: RedisServer) -> str:
    return f"redis://127.0.0.1:{server.port}"


def ensure_wrk() -> tuple[str | None, str]:
    found = shutil.which("wrk")
    if found:
        return found, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "wrk is not installed and cannot be installed here (needs root and apt-get)"
    log("installing wrk with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
        done = subprocess.run(cmd, env=env, capture_output=True, timeout=600, check=False)
        if done.returncode != 0:
            return None, f"`{' '.join(cmd)}` failed: {done.stderr.decode()[-300:]}"
    found = shutil.which("wrk")
    return found, "" if found else "wrk still missing after apt-get install"


WRK_SCRIPT = """\
local keys = {%s}
local i = 0
request = function()
  i = i %% #keys + 1
  return wrk.format("GET", "%s", {["Cookie"] = "sessionid=" .. keys[i], ["User-Agent"] = "%s"})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"non2xx": %%d, "socket_errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def server_command(kind: str, port: int) -> list[str]:
    bindir = Path(sys.executable).parent
    if kind == "gunicorn":
        return [
            str(bindir / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}",
            "--log-level", "warning", "testproject.wsgi:application",
        ]  # fmt: skip
    return [
        str(bindir / "uvicorn"), "--workers", "2", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log", "--lifespan", "off",
        "testproject.asgi:application",
    ]  # fmt: skip


@contextlib.contextmanager
def app_servers(
    kind: str, chosen: list[Engine], redis_base: str, tmp: Path
) -> Iterator[dict[str, int]]:
    """One server (2 workers) per engine, each on a free loopback port."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    logs = []
    try:
        for engine in chosen:
            port = free_port()
            log_file = (tmp / f"{kind}-{engine.name}.log").open("wb")
            logs.append(log_file)
            procs[engine.name] = subprocess.Popen(
                server_command(kind, port),
                cwd=ROOT,
                env=engine_env(engine, redis_base, tmp),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
            ports[engine.name] = port
        deadline = time.monotonic() + 60
        for name, port in ports.items():
            while True:
                if procs[name].poll() is not None:
                    raise RuntimeError(f"{kind} for {name} exited; see {tmp}/{kind}-{name}.log")
                with contextlib.suppress(OSError):
                    url = f"http://127.0.0.1:{port}/ping"
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{kind} for {name} did not answer in 60 s")
                time.sleep(0.2)
        yield ports
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for log_file in logs:
            log_file.close()


def run_wrk(wrk: str, script: Path, port: int, seconds: int, connections: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/"
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script)]
    done = subprocess.run(
        [*cmd, url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            result: dict[str, Any] = json.loads(line[len("BENCH ") :])
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            return result
    raise RuntimeError(f"wrk printed no result: {done.stdout[-500:]} {done.stderr[-500:]}")


def run_http(
    workers: dict[str, Worker], plan: Plan, redis_base: str, tmp: Path, wrk: str
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    chosen = [worker.engine for worker in workers.values() if worker.engine.http]
    scripts: dict[str, dict[str, Path]] = {kind: {} for kind in SERVERS}
    for engine in chosen:
        reply = workers[engine.name].ask({"cmd": "seed", "n": plan.http_sessions}, timeout=600)
        if "error" in reply:
            raise RuntimeError(f"seeding {engine.name}: {reply['error']}")
        quoted = ",".join(f'"{key}"' for key in reply["keys"])
        for kind, path in SERVERS.items():
            script = tmp / f"wrk-{kind}-{engine.name}.lua"
            # A browser's user agent, as the index stores on a last_seen stamp.
            script.write_text(WRK_SCRIPT % (quoted, path, USER_AGENT))
            scripts[kind][engine.name] = script
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for kind in SERVERS:
        log(f"HTTP under {kind}: starting {len(chosen)} servers")
        results[kind] = {engine.name: [] for engine in chosen}
        with app_servers(kind, chosen, redis_base, tmp) as ports:
            for engine in chosen:  # warm-up: imports, connections, both workers
                run_wrk(wrk, scripts[kind][engine.name], ports[engine.name], 1, 4)
            for round_no in range(plan.http_rounds):
                for engine in rotated(chosen, round_no):
                    result = run_wrk(
                        wrk,
                        scripts[kind][engine.name],
                        ports[engine.name],
                        plan.http_seconds,
                        plan.http_connections,
                    )
                    results[kind][engine.name].append(result)
                log(f"  round {round_no + 1}/{plan.http_rounds}")
    return results


# Machine notes -----------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "django_redis_sessions"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{rev} (engine has uncommitted changes)" if dirty else rev


def wrk_version(wrk: str | None) -> str:
    if not wrk:
        return "not available"
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0].split(" [")[0] if text else "?"


# Main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 benchmarks/run.py", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (~2 min)")
    parser.add_argument("--no-http", action="store_true", help="skip the wrk section")
    parser.add_argument(
        "--engines", help="comma-separated engine names (the floor is always included)"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="leave the servers and workers to the scheduler instead of one CPU",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_MD, help="Markdown report path")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    chosen = list(ENGINES)
    if args.engines:
        wanted = {"floor", *args.engines.split(",")}
        unknown = wanted - set(engines.BY_NAME)
        if unknown:
            parser.error(f"unknown engines: {', '.join(sorted(unknown))}")
        wanted |= {engines.BY_NAME[name].floor for name in wanted}  # each server's floor
        chosen = [engine for engine in ENGINES if engine.name in wanted]

    started = time.time()
    notes: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "load_before": os.getloadavg(),
        "revision": git_revision(),
        "plan": asdict(plan),
        "quick": args.quick,
    }
    skipped: dict[str, str] = {}
    pg_version, why = postgres_version()
    notes["postgres"] = pg_version or f"skipped: {why}"
    if pg_version is None:
        for engine in chosen:
            if engine.postgres:
                skipped[engine.name] = f"PostgreSQL {why}"
        chosen = [engine for engine in chosen if not engine.postgres]

    tmp = Path(tempfile.mkdtemp(prefix="drs-bench-"))
    servers: dict[str, RedisServer] = {}
    for kind in engines.SERVERS:
        if not any(engine.server == kind for engine in chosen):
            continue
        try:
            binary = find_redis_server(kind)
        except RedisServerError as exc:
            for engine in chosen:
                if engine.server == kind:
                    skipped[engine.name] = str(exc)
            continue
        servers[kind] = RedisServer(args=["--databases", "16"], binary=binary)
    chosen = [engine for engine in chosen if engine.server in servers]
    # One CPU for every server and worker (see the module's docstring).
    cpus = None if args.no_pin else {quietest_cpu()}
    notes["pinned"] = sorted(cpus) if cpus else None
    workers: dict[str, Worker] = {}
    failures: dict[str, str] = {}
    data: dict[str, Any] = {"notes": notes, "skipped": skipped, "failures": failures}
    try:
        notes["servers"] = {}
        for kind, server in servers.items():
            server.start()
            if cpus:
                os.sched_setaffinity(server.process.pid, cpus)  # type: ignore[union-attr]
            with redis.Redis.from_url(server.url) as admin:
                info = admin.info("server")
            version = info.get(f"{kind}_version", info["redis_version"])
            notes["servers"][kind] = f"{kind}-server {version}"
            log(f"{kind}-server {version} on {server.url}; logs in {tmp}")
        notes["redis_server"] = notes["servers"].get("redis", "?")
        redis_base = base_url(servers["redis"])
        for engine in chosen:
            env = engine_env(engine, base_url(servers[engine.server]), tmp)
            worker = Worker(engine, env, tmp / f"{engine.name}.log", cpus)
            if not worker.hello.get("ok"):
                reason = worker.hello.get("error", "?").strip().splitlines()[-1]
                skipped[engine.name] = f"failed to start: {reason}"
                log(f"{engine.name} failed to start:\n{worker.hello.get('error')}")
                worker.close()
                continue
            workers[engine.name] = worker
        if "floor" not in workers:
            raise RuntimeError("the floor engine failed to start; nothing to compare with")
        notes["versions"] = workers["floor"].hello["versions"]
        notes["middleware"] = {name: w.hello["middleware"] for name, w in workers.items()}

        micro = {name: w for name, w in workers.items() if w.engine.micro}
        own = [w.proc.pid for w in workers.values()]
        own += [server.process.pid for server in servers.values() if server.process]
        load = OtherLoad(cpus, own)
        log(f"session operations: {len(micro)} engines, {plan.rounds} rounds")
        for section, ops in (("sync", SYNC_OPS), ("async", ASYNC_OPS)):
            log(f"{section} operations")
            series, others = run_ops(micro, ops, plan, failures, load)
            data[f"{section}_other_load"] = others
            data[section] = series["us"]
            data[f"{section}_cpu"] = series["cpu_us"]
            data[f"{section}_server"] = series["server_us"]
            data[f"{section}_server_cpu"] = series["server_cpu_us"]
            data[f"{section}_server_commands"] = series["server_commands"]
        log(f"Redis memory: {plan.memory_n} sessions (one user each) per engine")
        data["memory"] = redis_memory(workers, servers, plan.memory_n)
        data["memory_n"] = plan.memory_n
        if cpus:  # the app servers and wrk need both cores
            for server in servers.values():
                os.sched_setaffinity(server.process.pid, os.sched_getaffinity(0))  # type: ignore[union-attr]

        wrk, why = (None, "--no-http given") if args.no_http else ensure_wrk()
        notes["wrk"] = wrk_version(wrk)
        if wrk is None:
            data["http_skipped"] = why
        else:
            try:
                data["http"] = run_http(workers, plan, redis_base, tmp, wrk)
            except Exception as exc:
                log(f"HTTP section failed: {exc}")
                data["http_skipped"] = f"failed: {exc}"
    finally:
        for worker in workers.values():
            worker.close()
        for server in servers.values():
            server.close()
        used_pg = [engine for engine in chosen if engine.postgres]
        if used_pg:
            with contextlib.suppress(Exception):
                drop_pg_schemas(used_pg)
    notes["load_after"] = os.getloadavg()
    notes["seconds"] = round(time.time() - started)
    RESULTS_JSON.parent.mkdir(exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(data, indent=1))
    write_report(data, args.output)
    write_chart(data, args.output.with_name("chart.svg"))
    if args.output == RESULTS_MD and not args.quick and not args.engines:
        # A full run of every engine: the manual's key rows come from it too.
        update_readme(data, ROOT / "docs" / "benchmarks.rst")
    http_errors = any(
        run["non2xx"] + run["socket_errors"]
        for by_engine in data.get("http", {}).values()
        for runs in by_engine.values()
        for run in runs
    )
    if failures or skipped or http_errors or "http_skipped" in data:
        log(f"something failed or was skipped: logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"done in {notes['seconds']} s: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
