"""Build the distributions once, and a virtualenv outside the checkout to install them in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What a fresh machine's environment would hold: nothing of ours on the path.
CLEAN_ENV = {
    key: value
    for key, value in os.environ.items()
    if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "DJANGO_SETTINGS_MODULE")
}


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path
    # The unpacked sdist: what a clone of the repository holds for building.
    source: Path


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; on failure, fail the test with its output."""
    result = subprocess.run(
        cmd, capture_output=True, text=True, env=kwargs.pop("env", CLEAN_ENV), **kwargs
    )  # type: ignore[call-overload]
    if result.returncode:
        pytest.fail(
            f"{' '.join(cmd)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the checkout."""
    path = tmp_path_factory.mktemp("outside")
    assert ROOT not in path.parents
    return path


@pytest.fixture(scope="session")
def dist(outside: Path) -> Dist:
    """The sdist, and the wheel built from it (``python -m build``'s default)."""
    out = outside / "dist"
    installer = ["--installer", "uv"] if shutil.which("uv") else []
    run([sys.executable, "-m", "build", *installer, "--outdir", str(out), str(ROOT)])
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    with tarfile.open(sdist) as archive:
        archive.extractall(outside / "unpacked", filter="data")
    (source,) = (outside / "unpacked").iterdir()
    return Dist(sdist, wheel, source)


@pytest.fixture(scope="session")
def fresh_python(outside: Path) -> Path:
    """The interpreter of a new virtualenv (with pip) outside the checkout."""
    env_dir = outside / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    return env_dir / "bin" / "python"


@pytest.fixture(scope="session")
def smoke_dir(outside: Path) -> Iterator[Path]:
    path = outside / "site"
    shutil.copytree(Path(__file__).parent / "smoke", path)
    yield path
