"""The demo launcher (what scripts/demo runs): starts everything, and Ctrl-C stops it all."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from testproject.demo import ROOT, project_env
from testproject.redis_server import free_port

pytestmark = pytest.mark.e2e


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _processes_with(marker: str, redis_port: int | None = None) -> list[int]:
    """PIDs of what the launcher started: its environment holds ``marker``.

    redis-server rewrites its environment for its process title, so it is found
    by that title (``redis-server 127.0.0.1:<port>``) instead.
    """
    title = f"redis-server 127.0.0.1:{redis_port}".encode() if redis_port else None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes() or (
                title is not None and title in (entry / "cmdline").read_bytes()
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find leftover processes")
def test_ctrl_c_stops_everything_the_launcher_started(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    db = tmp_path / "demo.sqlite3"
    env = project_env(db=db)
    env.pop("REDIS_URL", None)  # so it starts a redis-server of its own
    env.pop("DEMO_SESSION_REDIS", None)
    env.pop("DEMO_PORTS", None)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "testproject.demo", "--ports", ",".join(map(str, ports)),
         "--db", str(db), "--workers", "1", "--threads", "2"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    marker = f"DEMO_DB={db}"
    output: list[str] = []
    redis_port = None
    try:
        assert launcher.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = launcher.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        text = "".join(output)
        assert "Press Ctrl-C" in text, text
        assert f"server A: http://127.0.0.1:{ports[0]}/" in text
        assert f"server B: http://127.0.0.1:{ports[1]}/" in text
        assert "Log in as 'demo' with password 'demo-password'" in text
        assert "/account/sessions/ (Devices" in text  # every page of the nav bar
        match = re.search(r"redis://127\.0\.0\.1:(\d+)/", text)
        assert match, text
        redis_port = int(match[1])
        # The launcher, and per app server a master and a worker. (redis-server
        # rewrites its environment for its process title: its port is checked instead.)
        started = _processes_with(marker)
        assert len(started) >= 5, started

        with httpx.Client(trust_env=False, timeout=10) as client:
            for port, server, visits in [(ports[0], "A", 1), (ports[1], "B", 2)]:
                page = client.get(f"http://127.0.0.1:{port}/").text
                assert f'id="server">{server}<' in page
                assert f'id="visits">{visits}<' in page

        # What a terminal's Ctrl-C sends (SIGTERM and SIGHUP take the same path).
        launcher.send_signal(signal.SIGINT)
        rest, _ = launcher.communicate(timeout=30)
        assert launcher.returncode == 0, text + rest
        assert "Got SIGINT" in rest
    finally:
        if launcher.poll() is None:  # the test failed half way: still stop it all
            launcher.terminate()
            try:
                launcher.wait(30)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait(10)
        leftovers = _processes_with(marker, redis_port)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert leftovers == []
    assert redis_port is not None and not _answers(redis_port)
    assert not any(_answers(port) for port in ports)
    assert db.exists()  # migrated, with the demo user in it
