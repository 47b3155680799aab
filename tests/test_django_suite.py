"""Django's own session tests, run against our store and our middleware.

``SessionTestsMixin`` (every session engine must pass it) runs with our
``SessionStore`` as its backend; ``SessionMiddlewareTests`` runs with our
middleware class in place of Django's. Both come from the installed Django
version's sdist (tests/django_suite.py), so each tox env runs its Django's tests.
"""

from __future__ import annotations

import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import SimpleTestCase, override_settings

from django_redis_sessions.middleware import SessionMiddleware
from django_redis_sessions.session import SessionStore
from testproject.redis_server import free_port
from tests import django_suite

try:
    suite: Any = django_suite.load()
except django_suite.Unavailable as exc:
    pytest.skip(f"Django's test sources are not available: {exc}", allow_module_level=True)

# The module's own name for Django's middleware: every test in
# SessionMiddlewareTests builds its middleware through it.
assert suite.SessionMiddleware.__module__ == "django.contrib.sessions.middleware"
suite.SessionMiddleware = SessionMiddleware


# Tests that read another backend's storage, with the reason. Everything else runs.
EXCLUDED = {
    "SessionMiddlewareTests.test_empty_session_saved": (
        "reads the saved session back from the db backend's table (Session.objects); "
        "it runs in full in TestSessionMiddlewareTestsOnDjangoDb"
    ),
}


def excluding_tests(name: str) -> Callable[[type], type]:
    def exclude(cls: type) -> type:
        for test, _reason in EXCLUDED.items():
            owner, method = test.split(".")
            if owner == name:
                setattr(cls, method, None)  # the loader runs only callables
        return cls

    return exclude


class TestSessionTestsMixin(suite.SessionTestsMixin, SimpleTestCase):  # type: ignore[misc]
    backend = SessionStore


@excluding_tests("SessionMiddlewareTests")
class TestSessionMiddlewareTests(suite.SessionMiddlewareTests):  # type: ignore[misc]
    """Our middleware, our engine."""


@override_settings(SESSION_ENGINE="django.contrib.sessions.backends.db")
class TestSessionMiddlewareTestsOnDjangoDb(suite.SessionMiddlewareTests):  # type: ignore[misc]
    """Our middleware with the engine Django's own test settings use."""


def test_the_suite_runs_with_our_classes() -> None:
    assert suite.SessionMiddleware is SessionMiddleware
    assert TestSessionTestsMixin.backend is SessionStore
    loader = unittest.TestLoader()
    assert len(loader.getTestCaseNames(TestSessionTestsMixin)) > 30  # 37 in 4.2, 67 in 6.1
    every = set(loader.getTestCaseNames(TestSessionMiddlewareTestsOnDjangoDb))
    ours = set(loader.getTestCaseNames(TestSessionMiddlewareTests))
    assert every - ours == {test.split(".")[1] for test in EXCLUDED}


def test_an_unreachable_index_is_reported_as_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(django_suite, "INDEX", f"http://127.0.0.1:{free_port()}/simple/django/")
    with pytest.raises(django_suite.Unavailable, match="cannot fetch django-"):
        django_suite.sessions_tests("4.2")
    assert not (
        tmp_path / "django-redis-sessions" / "django-tests" / "4.2" / "sessions_tests"
    ).exists()
