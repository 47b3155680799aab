"""README.rst's settings, pasted into a fresh ``django-admin startproject`` project.

The block is read from README.rst (the first Python block that sets
SESSION_ENGINE), so this fails when the README drifts. The project is pointed at
the suite's Redis, then ``manage.py check`` and ``migrate`` run, and an admin
user logs in through the admin over real HTTP (``runserver``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from django_redis_sessions import codec
from testproject.redis_server import free_port
from tests.conftest import Deployment

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.rst"
PASSWORD = "a-password-for-the-admin"


def readme_settings() -> str:
    """The README's settings block: a Python code block that sets SESSION_ENGINE."""
    blocks = re.findall(
        r"^\.\. code-block:: python\n\n((?:    .*\n|\n)+)", README.read_text(), re.MULTILINE
    )
    [block] = [b for b in blocks if "SESSION_ENGINE = " in b][:1]
    return "\n".join(line[4:] for line in block.splitlines()).strip() + "\n"


def pasted(project_settings: str, block: str, session_redis: dict[str, Any]) -> str:
    """What a reader does with the block: add it, as written, at the end of settings.py."""
    # Then SESSION_REDIS points at the suite's Redis (any topology) instead of localhost.
    kept = "{k: v for k, v in SESSION_REDIS.items() if k != 'url'}"
    suite = f"SESSION_REDIS = {{**{kept}, **{session_redis!r}}}"
    return f"{project_settings}\n# From README.rst\n{block}\n# The suite's Redis\n{suite}\n"


@pytest.fixture
def project(tmp_path: Path, redis_deployment: Deployment) -> Iterator[tuple[Path, dict[str, str]]]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(tmp_path)
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(tmp_path)],
        check=True,
        env=env,
    )
    settings_py = tmp_path / "mysite" / "settings.py"
    settings_py.write_text(
        pasted(settings_py.read_text(), readme_settings(), redis_deployment.settings)
    )
    yield tmp_path, env


def manage(project: tuple[Path, dict[str, str]], *args: str) -> str:
    directory, env = project
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_readme_block_is_found() -> None:
    block = readme_settings()
    assert "django_redis_sessions.middleware.SessionMiddleware" in block
    assert 'SESSION_ENGINE = "django_redis_sessions.session"' in block


def test_readme_block_as_written_swaps_the_middleware(
    project: tuple[Path, dict[str, str]],
) -> None:
    directory, _ = project
    settings_py = directory / "mysite" / "settings.py"
    pasted_settings: dict[str, Any] = {"__file__": str(settings_py)}
    exec(settings_py.read_text(), pasted_settings)
    assert "django_redis_sessions" in pasted_settings["INSTALLED_APPS"]
    # Django's sessions app stays (README's "Django's contract" counts on it).
    assert "django.contrib.sessions" in pasted_settings["INSTALLED_APPS"]
    middleware = pasted_settings["MIDDLEWARE"]
    assert "django.contrib.sessions.middleware.SessionMiddleware" not in middleware
    # In the place of Django's: before CSRF and auth, which read the session.
    assert middleware.index("django_redis_sessions.middleware.SessionMiddleware") < (
        middleware.index("django.contrib.auth.middleware.AuthenticationMiddleware")
    )


def test_deploy_check_with_readme_settings_names_djangos_warning(
    project: tuple[Path, dict[str, str]],
) -> None:
    # What README's "Django's contract" says a reader of its settings sees: with
    # django.contrib.sessions installed, Django's own warning about the cookie
    # (security.W010), and not ours too.
    # A fresh project has deploy errors of its own (e.g. its email backend): not ours.
    found = manage(project, "check", "--deploy", "--fail-level", "CRITICAL")
    assert "security.W010" in found
    assert "django_redis_sessions.W011" not in found


def test_startproject_with_readme_settings_checks_migrates_and_logs_in(
    project: tuple[Path, dict[str, str]], r: redis.Redis
) -> None:
    assert "System check identified no issues" in manage(project, "check")
    manage(project, "migrate", "--no-input")
    directory, env = project
    manage(
        (directory, {**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}),
        *("createsuperuser", "--no-input", "--username", "admin", "--email", "a@example.com"),
    )
    port = free_port()
    server = subprocess.Popen(
        # Checked above already: --skip-checks saves a second.
        [
            sys.executable,
            "manage.py",
            "runserver",
            f"127.0.0.1:{port}",
            "--noreload",
            "--skip-checks",
        ],
        cwd=directory,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            login = wait_for_page(http, "/admin/login/", server)
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
            assert token is not None
            response = http.post(
                "/admin/login/?next=/admin/",
                data={
                    "csrfmiddlewaretoken": token.group(1),
                    "username": "admin",
                    "password": PASSWORD,
                    "next": "/admin/",
                },
                headers={"Referer": base + "/admin/login/"},
                follow_redirects=True,
            )
            assert response.status_code == 200
            assert "Site administration" in response.text
            session_key = http.cookies["sessionid"]
            # The session is ours: in Redis, under the digest of the cookie's key.
            assert r.exists(codec.redis_key("session:", session_key)) == 1
            logout = http.post(
                "/admin/logout/",
                data={"csrfmiddlewaretoken": http.cookies["csrftoken"]},
                headers={"Referer": base + "/admin/"},
            )
            assert logout.status_code == 200
            assert r.exists(codec.redis_key("session:", session_key)) == 0
    finally:
        server.terminate()
        server.communicate(timeout=10)


def wait_for_page(http: httpx.Client, path: str, server: subprocess.Popen[str]) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            response = http.get(path)
            assert response.status_code == 200, response.text
            return response
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                _, stderr = server.communicate(timeout=10)
                raise AssertionError(f"runserver did not answer: {stderr}") from None
            time.sleep(0.1)
