"""Switching a live site from Django's db engine to ours, and back, over real HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from testproject.demo import AppServer, setup_database
from testproject.redis_server import free_port
from tests.e2e.conftest import login, text_of, user_on

pytestmark = pytest.mark.e2e

DB_ENGINE = "django.contrib.sessions.backends.db"


def sessions(r: Any) -> list[bytes]:
    """Session keys, without the per-user session indexes ("demo:session:u:...")."""
    return [key for key in r.keys("demo:session:*") if not key.startswith(b"demo:session:u:")]


def test_logged_in_under_db_still_logged_in_after_the_switch_and_back(
    e2e_dir: Path, redis_deployment: Any, client: httpx.Client, r: Any, monkeypatch: Any
) -> None:
    db = e2e_dir / "migration.sqlite3"
    setup_database(db)
    ours = {
        **redis_deployment.settings,
        "migrate_from": DB_ENGINE,
        "migrate_write_back": True,
    }
    server = AppServer(
        "A", free_port(), redis_url=redis_deployment.url, db=db,
        workers=1, threads=4, log=e2e_dir / "gunicorn-migration.log", session_redis=ours,
    )  # fmt: skip
    try:
        # Before: the site runs Django's db engine; the user logs in.
        monkeypatch.setenv("DEMO_SESSION_ENGINE", DB_ENGINE)
        server.start()
        login(client, server, "demo", "demo-password")
        assert user_on(client.get(f"{server.url}/").text) == "demo"
        assert sessions(r) == []
        # The deploy: the same site restarted on our engine, migrating from db.
        monkeypatch.delenv("DEMO_SESSION_ENGINE")
        server.restart()
        assert user_on(client.get(f"{server.url}/").text) == "demo"
        assert len(sessions(r)) == 1
        # The way back: the db engine again, and the visits counted on ours are there.
        visits = client.get(f"{server.url}/").text
        monkeypatch.setenv("DEMO_SESSION_ENGINE", DB_ENGINE)
        server.restart()
        page = client.get(f"{server.url}/").text
        assert user_on(page) == "demo"
        assert _visits(page) == _visits(visits) + 1
    finally:
        server.stop()


def _visits(html: str) -> int:
    return int(text_of(html, "visits") or 0)
