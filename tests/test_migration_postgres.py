"""Migration from Django's db engine on a real PostgreSQL (127.0.0.1:5432).

The suite's own database is SQLite; this test runs a process of its own against
a throwaway PostgreSQL database, and is skipped when no server answers there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
USERS = ("postgres", "root")
DB_ENGINE = "django.contrib.sessions.backends.db"


def _connect(user: str) -> object:
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    return psycopg.connect(
        host="127.0.0.1", port=5432, dbname="test", user=user, autocommit=True, connect_timeout=3
    )


@pytest.fixture
def pg_database() -> Iterator[tuple[str, str]]:
    errors = []
    for user in USERS:
        try:
            admin = _connect(user)
            break
        except Exception as exc:
            errors.append(f"{user}: {exc}")
    else:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432 ({'; '.join(errors)})")
    name = f"drs_migration_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
    try:
        yield user, name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[attr-defined]
        admin.close()  # type: ignore[attr-defined]


def test_db_engine_on_postgresql(pg_database: tuple[str, str]) -> None:
    user, name = pg_database
    session_redis = {
        **settings.SESSION_REDIS,
        "migrate_from": "django.contrib.sessions.backends.db",
    }
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_postgres",
        "TEST_PG_USER": user,
        "TEST_PG_DATABASE": name,
        "TEST_SESSION_REDIS": json.dumps(session_redis),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.migration_postgres_run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["sync"] == {"user": "sync", "_session_expiry": 600}
    assert seen["async"] == {"user": "async", "_session_expiry": 600}
    assert seen["logout_row_left"] is False and seen["after_logout"] == {}
    # The two sessions read lazily took their rows with them: only the five are left.
    assert "copied: 5\n" in seen["bulk"] and "already there: 0\n" in seen["bulk"]
    assert seen["bulk_loaded"] == [0, 1, 2, 3, 4]
