"""What would be published: built, checked, installed outside the checkout, smoke-tested.

The README's install lines are taken from README.rst itself and run as written
(or, for the line that reaches the package index, through pip's resolver), so
the README cannot drift from what works.
"""

from __future__ import annotations

import ast
import configparser
import email.parser
import json
import re
import shlex
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib
import trove_classifiers
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from distcheck.conftest import CLEAN_ENV, ROOT, Dist, run
from testproject.redis_server import RedisServer

NAME = "django-redis-sessions"
PACKAGE = "django_redis_sessions"
# The unmaintained release that holds our name on the package index.
OLD = Version("0.6.2")
# What a package may ship besides Python modules: py.typed and the data of Django apps.
PACKAGE_DATA_DIRS = ("templates", "static", "locale")


def source_version() -> str:
    tree = ast.parse((ROOT / PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__version__":
            return str(ast.literal_eval(node.value))
    raise AssertionError("no __version__ in the package")


def tracked_files() -> set[str]:
    """The repository's files: git's list, or the tree as unpacked from an sdist."""
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        return {line for line in out.splitlines() if (ROOT / line).exists()}
    except (OSError, subprocess.CalledProcessError):
        return {
            str(path.relative_to(ROOT))
            for path in ROOT.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }


def wheel_metadata(dist: Dist) -> email.message.Message:
    with zipfile.ZipFile(dist.wheel) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(wheel.read(name).decode())


# The distributions ---------------------------------------------------------------


def test_version_is_written_once(dist: Dist) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": f"{PACKAGE}.__version__"
    }
    version = source_version()
    assert wheel_metadata(dist)["Version"] == version
    assert dist.wheel.name.startswith(f"{PACKAGE}-{version}-py3-none-any")
    assert dist.sdist.name == f"{PACKAGE}-{version}.tar.gz"
    changelog = (ROOT / "CHANGELOG.rst").read_text()
    assert re.search(rf"^{re.escape(version)} \(", changelog, re.MULTILINE), "not in CHANGELOG"


def test_twine_check_strict(dist: Dist) -> None:
    result = run(["python", "-m", "twine", "check", "--strict", str(dist.sdist), str(dist.wheel)])
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_wheel_holds_the_package_and_its_licence_only(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = set(wheel.namelist())
    info = f"{PACKAGE}-{source_version()}.dist-info/"
    meta = {n for n in names if n.startswith(info)}
    assert meta == {
        info + name for name in ("METADATA", "WHEEL", "RECORD", "top_level.txt", "licenses/LICENSE")
    }
    package = names - meta
    strays = sorted(n for n in package if not is_package_file(n))
    assert not strays, f"not part of the package: {strays}"
    # Everything of the package in the source tree ships, templates included.
    expected = {f for f in tracked_files() if f.startswith(PACKAGE + "/")}
    assert expected - package == set(), "missing from the wheel"
    assert {f"{PACKAGE}/__init__.py", f"{PACKAGE}/session.py", f"{PACKAGE}/py.typed"} <= package


def is_package_file(name: str) -> bool:
    parts = name.split("/")
    if parts[0] != PACKAGE:
        return False
    if len(parts) > 2 and parts[1] in PACKAGE_DATA_DIRS:
        return True
    return name.endswith(".py") or name == f"{PACKAGE}/py.typed"


def test_sdist_holds_what_the_tests_need(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as archive:
        top = f"{PACKAGE}-{source_version()}/"
        names = {m.name.removeprefix(top) for m in archive.getmembers() if m.isfile()}
    needed = {
        f
        for f in tracked_files()
        if f.split("/")[0] in (PACKAGE, "tests", "testproject", "distcheck", "docs")
    } | {
        "pyproject.toml",
        "tox.ini",
        "README.rst",
        "LICENSE",
        "CHANGELOG.rst",
        "MANIFEST.in",
        "scripts/test",
        "scripts/summarize_results.py",
        "benchmarks/chart.svg",  # shown by the manual (docs/benchmarks.rst)
    }
    assert needed - names == set()
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith("docs/_build/")]
    others = [n for n in names if n.startswith(("benchmarks/", ".ci/", ".venv"))]
    assert others == ["benchmarks/chart.svg"]


def tox_matrix() -> tuple[set[str], set[str]]:
    """The Python and Django versions tox.ini's env_list tests."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "tox.ini")
    pythons: set[str] = set()
    djangos: set[str] = set()
    for py, dj in re.findall(r"py\{([\d, ]+)\}-django\{([\d, ]+)\}", config["tox"]["env_list"]):
        pythons |= {f"3.{v.strip()[1:]}" for v in py.split(",")}
        djangos |= {f"{v.strip()[0]}.{v.strip()[1:]}" for v in dj.split(",")}
    return pythons, djangos


def test_metadata_is_true(dist: Dist) -> None:
    metadata = wheel_metadata(dist)
    classifiers = metadata.get_all("Classifier") or []
    assert [c for c in classifiers if c not in trove_classifiers.classifiers] == []
    pythons, djangos = tox_matrix()
    assert pythons and djangos
    prefix_py, prefix_dj = "Programming Language :: Python :: ", "Framework :: Django :: "
    python_classifiers = [c for c in classifiers if re.match(prefix_py + r"3\.\d", c)]
    assert {c.removeprefix(prefix_py) for c in python_classifiers} == pythons
    assert {c.removeprefix(prefix_dj) for c in classifiers if c.startswith(prefix_dj)} == djangos
    assert metadata["Requires-Python"] == f">={min(pythons, key=Version)}"
    assert metadata["License-Expression"] == "MIT"
    # No public repository yet: no URL rather than an invented one.
    assert metadata.get_all("Project-URL") is None
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    django = next(r for r in requires if r.name == "django")
    assert django.specifier.contains(min(djangos, key=Version) + ".0")


# The README's install lines ---------------------------------------------------------


def readme_install_lines() -> list[list[str]]:
    """The argument lists of every ``pip install`` in README.rst's code blocks."""
    lines = []
    for line in (ROOT / "README.rst").read_text().splitlines():
        if "pip install" not in line:
            continue
        words = shlex.split(line, comments=True)
        if "pip" in words and words[words.index("pip") + 1 : words.index("pip") + 2] == ["install"]:
            assert words[: words.index("pip")] == ["python", "-m"], line
            lines.append(words[words.index("pip") + 2 :])
    return lines


def is_local(argument: str) -> bool:
    return argument.startswith((".", "/"))


def test_readme_names_no_requirement_that_allows_the_old_release() -> None:
    lines = readme_install_lines()
    assert any(is_local(args[-1]) for args in lines), "no install that works before release"
    named = [Requirement(args[-1]) for args in lines if not is_local(args[-1])]
    assert named, "no install line for after the release"
    for requirement in named:
        assert canonicalize_name(requirement.name) == NAME
        assert not requirement.specifier.contains(OLD, prereleases=True), requirement
        assert requirement.specifier.contains(source_version()), requirement


@pytest.fixture(scope="session")
def readme_install(dist: Dist, fresh_python: Path) -> Path:
    """The README's pre-release install, run as written from a clone's (the sdist's) root."""
    # The first is the Installation section's; later ones add extras to it.
    args = next(args for args in readme_install_lines() if is_local(args[-1]))
    run([str(fresh_python), "-m", "pip", "install", "--disable-pip-version-check", *args],
        cwd=dist.source)  # fmt: skip
    return fresh_python


def installed(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, importlib.util as u, json, django_redis_sessions as d;"
        "print(json.dumps({'version': m.version('django-redis-sessions'), 'file': d.__file__,"
        "'old_module': bool(u.find_spec('redis_sessions')),"
        "'hiredis': bool(u.find_spec('hiredis'))}))"
    )
    return json.loads(run([str(python), "-c", code], cwd=python.parent).stdout)  # type: ignore[no-any-return]


def test_readme_install_from_a_clone_installs_us(readme_install: Path) -> None:
    found = installed(readme_install)
    assert found["version"] == source_version()
    assert Path(found["file"]).is_relative_to(readme_install.parent.parent)
    assert not found["old_module"]
    assert found["hiredis"]


def test_readme_install_from_the_index_never_resolves_to_the_old_release(
    fresh_python: Path, outside: Path
) -> None:
    for args in readme_install_lines():
        if is_local(args[-1]):
            continue
        report = outside / "pip-report.json"
        result = subprocess.run(
            [str(fresh_python), "-m", "pip", "install", "--disable-pip-version-check",
             "--dry-run", "--ignore-installed", "--report", str(report), *args],
            capture_output=True, text=True, env=CLEAN_ENV,
        )  # fmt: skip
        if result.returncode == 0:  # released: it must be us
            picked = {
                canonicalize_name(item["metadata"]["name"]): Version(item["metadata"]["version"])
                for item in json.loads(report.read_text())["install"]
            }
            assert picked[canonicalize_name(NAME)] >= Version("1.0"), picked
            continue
        # Not released yet: pip must refuse rather than fall back to 0.6.2.
        assert f"No matching distribution found for {NAME}" in result.stderr, result.stderr
        if "(from versions: none)" in result.stderr:
            pytest.skip("the package index did not answer, so pip saw no release at all")
        assert str(OLD) in result.stderr, "the index should list 0.6.2 and pip refuse it"


# The built wheel, installed outside the checkout ----------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def wheel_python(readme_install: Path, dist: Dist) -> Path:
    """The fresh virtualenv, with exactly the built wheel installed over the README's."""
    run([str(readme_install), "-m", "pip", "install", "--disable-pip-version-check",
         "--force-reinstall", "--no-deps", str(dist.wheel)])  # fmt: skip
    return readme_install


def manage(python: Path, site: Path, redis_url: str, *args: str) -> str:
    env = {**CLEAN_ENV, "SMOKE_REDIS_URL": redis_url}
    result = run([str(python), "manage.py", *args], cwd=site, env=env)
    return result.stdout + result.stderr


def test_smoke_request_saves_and_reloads(
    wheel_python: Path, smoke_dir: Path, redis_url: str
) -> None:
    env = {**CLEAN_ENV, "SMOKE_REDIS_URL": redis_url}
    out = json.loads(run([str(wheel_python), "requests_smoke.py"], cwd=smoke_dir, env=env).stdout)
    assert out["bodies"] == ["1", "2", "3"]
    assert out["stored"].startswith("j1:3:") and '"visits":3' in out["stored"]
    assert Path(out["module"]).is_relative_to(wheel_python.parent.parent)
    assert out["version"] == source_version()


def test_smoke_management_commands(wheel_python: Path, smoke_dir: Path, redis_url: str) -> None:
    assert "no issues" in manage(wheel_python, smoke_dir, redis_url, "check")
    # Our deploy checks ship and find nothing wrong with a loopback Redis.
    deploy = manage(wheel_python, smoke_dir, redis_url, "check", "--deploy", "--tag", "security")
    assert "security.W" in deploy and "django_redis_sessions.W" not in deploy
    manage(wheel_python, smoke_dir, redis_url, "clearsessions")
    report = json.loads(
        manage(wheel_python, smoke_dir, redis_url, "sessions_report", "--json", "--no-progress")
    )
    assert report["prefix"] == "smoke:" and report["complete"] is True
