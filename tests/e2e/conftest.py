"""Two real gunicorn app servers of the testproject, sharing the suite's Redis.

The servers (and the SQLite database they share for users) live for the whole
run; each test gets its own cookie jar, and the suite's autouse fixture empties
Redis before every test, so no session outlives its test.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from testproject.demo import DEFAULT_PASSWORD, DEFAULT_USERNAME, AppServer, setup_database
from testproject.redis_server import free_port

CHROMIUM_NAMES = ("chromium", "chromium-browser")
APT_TIMEOUT = 900

# Screenshots and other files a person may want to look at after the run.
artifacts: list[Path] = []


@dataclass
class Servers:
    a: AppServer
    b: AppServer
    username: str = DEFAULT_USERNAME
    password: str = DEFAULT_PASSWORD


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def servers(e2e_dir: Path, redis_deployment: Any) -> Iterator[Servers]:
    db = e2e_dir / "demo.sqlite3"
    ports = {"A": free_port(), "B": free_port()}
    links = [(name, f"http://127.0.0.1:{port}") for name, port in ports.items()]
    # One worker process with eight threads each: real concurrency inside a server,
    # and half the start-up cost of two workers on a two-core machine.
    a, b = (
        AppServer(
            name, port, redis_url=redis_deployment.url, db=db, servers=links,
            workers=1, threads=8, log=e2e_dir / f"gunicorn-{name}.log",
            # The suite's own SESSION_REDIS: a single server, a Sentinel group or a Cluster.
            session_redis=redis_deployment.settings,
        )
        for name, port in ports.items()
    )  # fmt: skip
    try:
        a.spawn()
        b.spawn()
        # The servers touch the database only on requests: migrate while they boot.
        setup_database(db)
        a.wait_ready()
        b.wait_ready()
        yield Servers(a, b)
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """A real HTTP client with its own cookie jar; never goes through a proxy."""
    with httpx.Client(trust_env=False, timeout=15.0) as http:
        yield http


# Reading the pages ------------------------------------------------------------------


def text_of(html: str, element_id: str) -> str | None:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', html)
    return match.group(1).strip() if match else None


def user_on(html: str) -> str:
    """The logged-in username the page shows, or "anonymous"."""
    name = text_of(html, "user")
    if name:
        return name
    assert 'id="user-anonymous"' in html, html
    return "anonymous"


def login(client: httpx.Client, server: AppServer, username: str, password: str) -> None:
    page = client.get(f"{server.url}/login/")
    assert page.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None
    reply = client.post(
        f"{server.url}/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token[1]},
    )
    assert reply.status_code == 302, reply.text
    assert reply.headers["location"] == "/"


def csrf_headers(client: httpx.Client) -> dict[str, str]:
    # Django takes the cookie's own value as a token too.
    return {"X-CSRFToken": client.cookies["csrftoken"]}


# Chromium from the OS packages ---------------------------------------------------------

# Installing a system package is only done where it was asked for: in CI, or with this.
INSTALL_OPT_IN = "DRS_INSTALL_BROWSER"
# What the run installed, for the summary at its end.
installed: list[str] = []


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def install_allowed() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get(INSTALL_OPT_IN) == "1"


def announce(config: pytest.Config, line: str) -> None:
    """A line in pytest's output now, whatever the capture mode."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.ensure_newline()
        reporter.write_line(line, yellow=True, bold=True)


def install_chromium(config: pytest.Config) -> str:
    """Install the OS chromium package, saying so first; return why not, or ''."""
    if not install_allowed():
        return (
            "Chromium is not installed. Install it (apt-get install chromium), or set "
            f"{INSTALL_OPT_IN}=1 to let the suite install it (apt-based Linux, as root); "
            "CI=true does too."
        )
    if sys.platform != "linux" or not shutil.which("apt-get"):
        return "Chromium is not installed and this is no apt-based Linux to install it on."
    if os.geteuid() != 0:
        return "Chromium is not installed; installing it needs root (apt-get install chromium)."
    # Parallel runs of this checkout (tox envs) queue on this very file, which
    # outlives the run as it is: no lock file is left behind. apt waits for its
    # own locks against other installers.
    with Path(__file__).open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if find_chromium():
                return ""
            announce(
                config,
                "e2e: installing the OS package chromium (apt-get update; apt-get install -y "
                "chromium) for the browser tests in tests/e2e/, as "
                + ("CI=true" if os.environ.get("CI") == "true" else f"{INSTALL_OPT_IN}=1")
                + " allows",
            )
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            deadline = time.monotonic() + APT_TIMEOUT
            wait = ["-o", f"DPkg::Lock::Timeout={APT_TIMEOUT}"]
            for command in (
                ["apt-get", *wait, "update"],
                ["apt-get", *wait, "install", "-y", "chromium"],
            ):
                try:
                    done = subprocess.run(
                        command,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        text=True,
                        timeout=max(deadline - time.monotonic(), 1),
                    )
                except subprocess.TimeoutExpired:
                    return f"Installing Chromium timed out ({' '.join(command)})."
                if done.returncode != 0:
                    tail = (done.stderr or done.stdout)[-500:].strip()
                    return f"Could not install Chromium ({' '.join(command)}): {tail}"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    found = find_chromium()
    if found is None:
        return "apt-get installed chromium, yet no chromium is on PATH."
    installed.append(f"chromium ({found}), with apt-get, for the browser tests")
    return ""


@pytest.fixture(scope="session")
def chromium(pytestconfig: pytest.Config) -> str:
    found = find_chromium()
    if found is None:
        reason = install_chromium(pytestconfig)
        found = find_chromium()
        if found is None:
            pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def results_dir(pytestconfig: pytest.Config) -> Path:
    path = pytestconfig.rootpath / "test-results" / "e2e"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if installed:
        terminalreporter.section("installed for the end-to-end tests")
        for line in installed:
            terminalreporter.write_line(f"installed: {line}")
    if artifacts:
        terminalreporter.section("end-to-end artifacts")
        for path in artifacts:
            with contextlib.suppress(ValueError):
                path = path.relative_to(Path.cwd())
            terminalreporter.write_line(f"screenshot: {path}")
