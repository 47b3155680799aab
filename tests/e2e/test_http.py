"""The demo's promises over real HTTP: two gunicorn servers, one Redis, one cookie jar."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Servers, csrf_headers, login, text_of, user_on

pytestmark = pytest.mark.e2e

SESSION_KEYS = "demo:session:*"


def test_login_on_a_is_login_on_b(servers: Servers, client: httpx.Client) -> None:
    assert user_on(client.get(f"{servers.b.url}/").text) == "anonymous"
    login(client, servers.a, servers.username, servers.password)
    page = client.get(f"{servers.b.url}/")
    assert text_of(page.text, "server") == "B"
    assert user_on(page.text) == servers.username


def test_wrong_password_logs_nobody_in(servers: Servers, client: httpx.Client) -> None:
    page = client.get(f"{servers.a.url}/login/")
    token = client.cookies["csrftoken"]
    reply = client.post(
        f"{servers.a.url}/login/",
        data={"username": servers.username, "password": "wrong", "csrfmiddlewaretoken": token},
    )
    assert page.status_code == 200
    assert reply.status_code == 200
    assert 'id="login-error"' in reply.text
    assert user_on(client.get(f"{servers.b.url}/").text) == "anonymous"


def test_visit_count_continues_across_servers(servers: Servers, client: httpx.Client) -> None:
    seen = []
    for visit in range(6):
        server = (servers.a, servers.b)[visit % 2]
        page = client.get(f"{server.url}/")
        seen.append((text_of(page.text, "server"), text_of(page.text, "visits")))
    assert seen == [("A", "1"), ("B", "2"), ("A", "3"), ("B", "4"), ("A", "5"), ("B", "6")]


def test_logout_on_b_is_logout_on_a(servers: Servers, client: httpx.Client, r: Any) -> None:
    login(client, servers.a, servers.username, servers.password)
    assert user_on(client.get(f"{servers.a.url}/").text) == servers.username
    # One session, and the user's session index (tests/test_users.py).
    assert sorted(key.count(b":u:") for key in r.keys(SESSION_KEYS)) == [0, 1]
    reply = client.post(f"{servers.b.url}/logout/", headers=csrf_headers(client))
    assert reply.status_code == 302
    page = client.get(f"{servers.a.url}/session/")
    assert user_on(page.text) == "anonymous"
    assert 'id="no-session"' in page.text
    # The logged-in session is gone from Redis, not merely forgotten by the cookie,
    # and its user's index with it.
    assert r.keys(SESSION_KEYS) == []


def test_restarting_a_server_loses_nobody(servers: Servers, client: httpx.Client) -> None:
    login(client, servers.a, servers.username, servers.password)
    assert text_of(client.get(f"{servers.a.url}/").text, "visits") == "1"
    old_pid = servers.a.process.pid if servers.a.process else None
    servers.a.restart()
    assert servers.a.process is not None and servers.a.process.pid != old_pid
    page = client.get(f"{servers.a.url}/")
    assert user_on(page.text) == servers.username
    assert text_of(page.text, "visits") == "2"


def _script_runs(r: Any) -> int:
    """Lua script executions that Redis completed (the engine's conditional saves)."""
    stats = r.info("commandstats")
    # A cluster client answers for every node: {node: stats}.
    per_node = [stats] if any(name.startswith("cmdstat_") for name in stats) else stats.values()
    return sum(
        entry.get("calls", 0) - entry.get("failed_calls", 0) - entry.get("rejected_calls", 0)
        for node in per_node
        for name, entry in node.items()
        if name in ("cmdstat_evalsha", "cmdstat_eval")
    )


def test_concurrent_items_all_arrive(servers: Servers, client: httpx.Client, r: Any) -> None:
    count = 12
    page = client.get(f"{servers.a.url}/items/?n={count}")
    assert page.status_code == 200
    headers = csrf_headers(client)
    cleared = client.post(f"{servers.a.url}/items/clear/", headers=headers)
    assert cleared.status_code == 200
    before = _script_runs(r)

    def add(n: int) -> dict[str, object]:
        # Half the requests go to each server: the merge happens across machines.
        server = (servers.a, servers.b)[n % 2]
        reply = client.post(f"{server.url}/items/add/", data={"n": n}, headers=headers)
        assert reply.status_code == 200, reply.text
        return {**reply.json(), "done_at": time.time()}

    with ThreadPoolExecutor(max_workers=count) as pool:
        replies = list(pool.map(add, range(1, count + 1)))
    saves = _script_runs(r) - before

    state = client.get(f"{servers.b.url}/items/state/").json()
    assert [item["n"] for item in state["items"]] == list(range(1, count + 1))
    assert {item["server"] for item in state["items"]} == {"A", "B"}
    # The requests did overlap: several loaded the session before any answered,
    # and Redis ran more conditional saves than there were requests, i.e. some
    # saves met a newer version and were merged and retried.
    first_done = min(float(reply["done_at"]) for reply in replies)  # type: ignore[arg-type]
    assert sum(float(reply["loaded_at"]) < first_done for reply in replies) > 1  # type: ignore[arg-type]
    assert saves > count, f"{saves} saves for {count} requests: no save ever conflicted"


def test_items_page_reports_over_http(servers: Servers, client: httpx.Client) -> None:
    page = client.get(f"{servers.b.url}/items/?n=5")
    assert text_of(page.text, "server") == "B"
    assert "<b>5</b> requests at once" in page.text
    assert client.post(f"{servers.b.url}/items/add/", data={"n": 0}).status_code == 403
    reply = client.post(f"{servers.b.url}/items/add/", data={"n": 0}, headers=csrf_headers(client))
    assert reply.status_code == 400
