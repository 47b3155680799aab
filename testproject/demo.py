"""Run the demo: one Redis and several gunicorn app servers sharing it.

    python -m testproject.demo [--ports 8001,8002] [--redis-url URL] [...]
    python -m testproject.demo setup    # migrate the SQLite database, create the demo user

``scripts/demo`` prepares a virtualenv and runs this. The end-to-end tests start
their app servers with :class:`AppServer` and :func:`setup_database` from here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DEFAULT_PORTS = (8001, 8002)
SERVER_NAMES = "ABCDEFGHIJ"
DEFAULT_USERNAME = "demo"
DEFAULT_PASSWORD = "demo-password"
# Inside the demo's git-ignored virtualenv, so a demo run leaves the checkout clean.
DEFAULT_DB = ROOT / ".venv-demo" / "demo.sqlite3"

# Loopback only: a proxy from the environment must never see these requests.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DemoError(RuntimeError):
    pass


def project_env(
    *, redis_url: str | None = None, db: Path | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a testproject process: settings module, Redis, database."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    if db is not None:
        env["DEMO_DB"] = str(db)
    env.update(extra)
    return env


def setup_database(
    db: Path,
    *,
    username: str = DEFAULT_USERNAME,
    password: str = DEFAULT_PASSWORD,
    python: str = sys.executable,
    timeout: float = 120.0,
) -> None:
    """Migrate the SQLite database at ``db`` and create the demo user in it."""
    env = project_env(db=db, DEMO_USERNAME=username, DEMO_PASSWORD=password)
    try:
        done = subprocess.run(
            [python, "-m", "testproject.demo", "setup"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise DemoError(f"Setting up the database took over {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise DemoError(f"Setting up the database failed:\n{done.stdout}{done.stderr}")


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _gunicorn_has(option: str) -> bool:
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:
        return False
    return any(option in setting.cli for setting in KNOWN_SETTINGS if setting.cli)


class AppServer:
    """One gunicorn master (and its workers) serving the testproject on loopback."""

    def __init__(
        self,
        name: str,
        port: int,
        *,
        redis_url: str,
        db: Path,
        servers: Sequence[tuple[str, str]] = (),
        workers: int = 2,
        threads: int = 4,
        log: Path | None = None,
        python: str = sys.executable,
        session_redis: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.redis_url = redis_url
        self.db = db
        self.servers = list(servers)
        self.workers = workers
        self.threads = threads
        self.log = log
        self.python = python
        # A full SESSION_REDIS (Sentinel, Cluster, ...); else redis_url alone says where.
        self.session_redis = dict(session_redis) if session_redis is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        command = [
            self.python, "-m", "gunicorn", "testproject.wsgi:application",
            "--bind", f"{HOST}:{self.port}",
            "--worker-class", "gthread",
            "--workers", str(self.workers),
            "--threads", str(self.threads),
            "--graceful-timeout", "5",
            "--timeout", "30",
            # Short, so a graceful stop need not wait long for idle keep-alive connections.
            "--keep-alive", "1",
            "--access-logfile", "-",
            "--access-logformat", f'{self.name} %(h)s "%(r)s" %(s)s %(M)sms',
            "--error-logfile", "-",
            "--log-level", "warning",
        ]  # fmt: skip
        # gunicorn 25+ opens a control socket at one fixed path per user, which
        # two servers on one machine would fight over; the demo has no use for it.
        if _gunicorn_has("--no-control-socket"):
            command.append("--no-control-socket")
        return command

    def env(self) -> dict[str, str]:
        return project_env(
            redis_url=self.redis_url,
            db=self.db,
            DEMO_SERVER_NAME=self.name,
            DEMO_SERVERS=",".join(f"{name}={url}" for name, url in self.servers),
            DEMO_SESSION_REDIS=json.dumps(self.session_redis) if self.session_redis else "",
        )

    def start(self, timeout: float = 30.0) -> AppServer:
        self.spawn()
        self.wait_ready(timeout)
        return self

    def spawn(self) -> None:
        """Start the process without waiting for it to serve (see wait_ready)."""
        if self.running():
            return
        if self.log is not None:
            self._log_file = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT if self._log_file else None,
            # Its own process group: a terminal's Ctrl-C reaches the launcher,
            # which then stops the servers in order.
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoError(
                    f"App server {self.name} exited with {self.process.returncode}"
                    f" on port {self.port}.{self._log_tail()}"
                )
            try:
                with _opener.open(f"{self.url}/healthz", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise DemoError(f"App server {self.name} did not answer on {self.url}.{self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log is None:
            return ""
        with contextlib.suppress(OSError):
            return "\n" + self.log.read_text(errors="replace")[-3000:]
        return ""

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0, *, graceful: bool = True) -> None:
        """Stop the server and its workers; nothing of it is left running.

        Graceful (SIGTERM) lets requests in flight finish, up to the graceful
        timeout; otherwise (SIGQUIT) the workers exit at once, like a crash.
        """
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM if graceful else signal.SIGQUIT)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    _kill_group(process.pid)
                    process.wait(timeout)
            # Workers of a master that died abruptly would be orphans: end them too.
            _kill_group(process.pid)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self, timeout: float = 30.0, *, graceful: bool = True) -> AppServer:
        self.stop(graceful=graceful)
        return self.start(timeout)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# The launcher ----------------------------------------------------------------------


def _ports(text: str) -> list[int]:
    try:
        ports = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ports like 8001,8002, got {text!r}") from None
    if not 1 <= len(ports) <= len(SERVER_NAMES) or len(set(ports)) != len(ports):
        raise argparse.ArgumentTypeError(f"expected 1 to {len(SERVER_NAMES)} different ports")
    if any(not 0 < port < 65536 for port in ports):
        raise argparse.ArgumentTypeError("ports go from 1 to 65535")
    return ports


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="scripts/demo",
        description="Two Django app servers sharing their sessions through one Redis.",
    )
    p.add_argument(
        "command",
        nargs="?",
        choices=["run", "setup"],
        default="run",
        help="run the demo (default), or only migrate and create the demo user",
    )
    p.add_argument(
        "--ports",
        type=_ports,
        default=env("DEMO_PORTS", "8001,8002"),
        help="app server ports, comma-separated (env DEMO_PORTS; default 8001,8002)",
    )
    p.add_argument(
        "--redis-url",
        default=env("REDIS_URL") or None,
        help="use this Redis instead of starting one (env REDIS_URL)",
    )
    p.add_argument(
        "--workers",
        type=_positive,
        default=env("DEMO_WORKERS", "2"),
        help="gunicorn worker processes per server (env DEMO_WORKERS; default 2)",
    )
    p.add_argument(
        "--threads",
        type=_positive,
        default=env("DEMO_THREADS", "4"),
        help="threads per worker (env DEMO_THREADS; default 4)",
    )
    p.add_argument(
        "--db",
        type=Path,
        default=env("DEMO_DB", str(DEFAULT_DB)),
        help="the SQLite database the servers share (env DEMO_DB)",
    )
    p.add_argument(
        "--username",
        default=env("DEMO_USERNAME", DEFAULT_USERNAME),
        help=f"demo user (env DEMO_USERNAME; default {DEFAULT_USERNAME})",
    )
    p.add_argument(
        "--password",
        default=env("DEMO_PASSWORD", DEFAULT_PASSWORD),
        help="demo user's password (env DEMO_PASSWORD)",
    )
    p.add_argument(
        "--reinstall",
        action="store_true",
        help="rebuild the .venv-demo virtualenv first (read by scripts/demo)",
    )
    return p


def _setup_in_process() -> None:
    import django
    from django.core.management import call_command

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("create_demo_user")


class _Stop(Exception):
    pass


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_stop(signum: int, frame: object) -> None:
    # One stop is enough: a second Ctrl-C must not cut the shutdown short.
    for other in STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


@contextlib.contextmanager
def _redis(url: str | None) -> Iterator[str]:
    if url:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise DemoError(f"No Redis answers at {url}: {exc}") from exc
        finally:
            client.close()
        print(f"Using the Redis at {url}")
        yield url
        return
    from testproject.redis_server import RedisServer, RedisServerError

    try:
        server = RedisServer()
    except RedisServerError as exc:
        raise DemoError(str(exc)) from exc
    try:
        try:
            server.start()
        except RedisServerError as exc:
            raise DemoError(str(exc)) from exc
        print(f"Started redis-server ({server.binary}) at {server.url}")
        yield server.url
    finally:
        # Also when a stop signal arrives while it is still starting.
        server.close()
        print("Stopped redis-server.")


def run(args: argparse.Namespace) -> None:
    busy = [port for port in args.ports if not port_is_free(port)]
    if busy:
        raise DemoError(
            f"Port(s) {', '.join(map(str, busy))} already in use: "
            "pass --ports (or set DEMO_PORTS), e.g. --ports 8011,8012."
        )
    args.db.parent.mkdir(parents=True, exist_ok=True)
    setup_database(args.db, username=args.username, password=args.password)
    names = SERVER_NAMES[: len(args.ports)]
    links = [(name, f"http://{HOST}:{port}") for name, port in zip(names, args.ports, strict=True)]
    servers: list[AppServer] = []
    with _redis(args.redis_url) as redis_url:
        try:
            for name, port in zip(names, args.ports, strict=True):
                servers.append(
                    AppServer(
                        name, port, redis_url=redis_url, db=args.db, servers=links,
                        workers=args.workers, threads=args.threads,
                    )
                )  # fmt: skip
            # Start them side by side: each takes about a second to import Django.
            for server in servers:
                server.spawn()
            for server in servers:
                server.wait_ready()
            _banner(servers, redis_url, args)
            # Runs until a signal (see main) or until a server dies on its own.
            while all(server.running() for server in servers):
                time.sleep(0.5)
            dead = ", ".join(server.name for server in servers if not server.running())
            raise DemoError(f"App server {dead} stopped unexpectedly; stopping the demo.")
        finally:
            for server in servers:
                server.stop()
            if servers:
                print("Stopped the app servers.")


def _banner(servers: Sequence[AppServer], redis_url: str, args: argparse.Namespace) -> None:
    lines = [
        "",
        "The demo is running: sessions in Redis, shared by every app server.",
        *(f"  server {server.name}: {server.url}/" for server in servers),
        f"  Redis:    {redis_url} (session keys start with 'demo:session:')",
        f"  Log in as {args.username!r} with password {args.password!r}.",
        "  Pages: / (visit counter), /login/, /items/ (concurrent requests), /session/,",
        "         /account/sessions/ (Devices: your sessions, once logged in)",
        "Press Ctrl-C to stop everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "setup":
        _setup_in_process()
        return 0
    # Ctrl-C, kill, or a closed terminal all end in the same orderly shutdown.
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stop)
    try:
        run(args)
    except _Stop as stop:
        print(f"Got {stop}: everything the demo started is stopped.")
        return 0
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    return 0  # not reached: run() ends by a signal or an error


if __name__ == "__main__":
    sys.exit(main())
