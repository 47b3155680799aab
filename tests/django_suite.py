"""Django's own session tests, from the sdist of the installed Django.

Django's wheel ships no tests, so the matching sdist is fetched from PyPI once
(its SHA-256 checked against the index's), and ``tests/sessions_tests/tests.py``
is kept in the user's cache directory, shared by every checkout and tox env.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import io
import json
import os
import sys
import tarfile
import types
import urllib.request
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

INDEX = "https://pypi.org/simple/django/"
PACKAGE = "django_sessions_tests"


class Unavailable(Exception):
    """The sdist could not be fetched (offline machine, index unreachable)."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "django-redis-sessions" / "django-tests"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # Several tox envs may start at once: one downloads, the others wait.
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _sdist(django_version: str) -> bytes:
    name = f"django-{django_version}.tar.gz"
    request = urllib.request.Request(
        INDEX, headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            files = json.load(response)["files"]
        [entry] = [f for f in files if f["filename"].lower() == name]
        with urllib.request.urlopen(entry["url"], timeout=120) as response:
            data: bytes = response.read()
    except (OSError, ValueError, KeyError) as exc:
        raise Unavailable(f"cannot fetch {name} from {INDEX}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != entry["hashes"]["sha256"]:
        raise Unavailable(f"{name} does not match the index's SHA-256")
    return data


def sessions_tests(django_version: str | None = None) -> Path:
    """The path of the cached ``sessions_tests/tests.py`` of this Django version."""
    django_version = django_version or version("django")
    directory = cache_dir() / django_version
    target = directory / "sessions_tests" / "tests.py"
    if target.exists():
        return target
    with _locked(cache_dir()):
        if not target.exists():
            data = _sdist(django_version)
            member = f"django-{django_version}/tests/sessions_tests/tests.py"
            with tarfile.open(fileobj=io.BytesIO(data)) as sdist:
                extracted = sdist.extractfile(member)
                assert extracted is not None, member
                source = extracted.read()
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            partial.write_bytes(source)
            partial.replace(target)
    return target


def load() -> types.ModuleType:
    """Import Django's sessions_tests/tests.py as ``django_sessions_tests.tests``."""
    name = f"{PACKAGE}.tests"
    if name in sys.modules:
        return sys.modules[name]
    path = sessions_tests()
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(path.parent)]
    # tests.py imports its sibling models.py, which declares a model of an app
    # that is not installed here. It only feeds CustomDatabaseSessionTests, which
    # this suite does not run; Django's db store stands in for its store.
    from django.contrib.sessions.backends.db import SessionStore

    models = types.ModuleType(f"{PACKAGE}.models")
    models.SessionStore = SessionStore  # type: ignore[attr-defined]
    sys.modules[PACKAGE] = package
    sys.modules[models.__name__] = models
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
