"""The demo in a real headless Chromium (from the OS packages), driven by Playwright."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from tests.e2e.conftest import Servers, artifacts

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Loopback only, whatever proxy the environment names.
    "--no-proxy-server",
]


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[BrowserContext]:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile: no cookies from before
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 390, "height": 844},  # a phone's screen
            timeout=30_000,
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


def visit_counter(page: Page, url: str, server: str, visits: int) -> None:
    page.goto(f"{url}/")
    expect(page.locator("#server")).to_have_text(server)
    expect(page.locator("#visits")).to_have_text(str(visits))


def test_demo_in_a_browser(servers: Servers, browser: BrowserContext, results_dir: Path) -> None:
    a, b = servers.a.url, servers.b.url
    page = browser.new_page()

    # Log in on A; the login lands on A's counter.
    page.goto(f"{a}/login/")
    expect(page.locator("#user-anonymous")).to_be_visible()
    page.fill("#id_username", servers.username)
    page.fill("#id_password", servers.password)
    page.click("#login-submit")
    expect(page.locator("#user")).to_have_text(servers.username)
    expect(page.locator("#visits")).to_have_text("1")

    # Logged in on B too, and the count carries on as the servers alternate.
    visit_counter(page, b, "B", 2)
    expect(page.locator("#user")).to_have_text(servers.username)
    visit_counter(page, a, "A", 3)
    visit_counter(page, b, "B", 4)
    shot = results_dir / f"counter-py{sys.version_info.major}{sys.version_info.minor}.png"
    page.screenshot(path=str(shot), full_page=True)
    artifacts.append(shot)
    print(f"counter page screenshot: {shot}")

    # Restart A: the session lives in Redis, so nobody is logged out. (An abrupt
    # stop: a graceful one would wait out Chromium's idle preconnected sockets.)
    servers.a.restart(graceful=False)
    visit_counter(page, a, "A", 5)
    expect(page.locator("#user")).to_have_text(servers.username)

    # Concurrent fetch() calls, each adding its own item: every one arrives.
    page.goto(f"{a}/items/?n=10")
    result = page.locator("#items-result")
    expect(result).to_have_attribute("data-state", "done")
    expect(result).to_have_text("All 10 items arrived.")
    expect(page.locator("#items-table .ok")).to_have_count(10)

    # The session page on B lists what the session holds and its remaining TTL.
    page.goto(f"{b}/session/")
    keys = page.locator("#keys .key").all_inner_texts()
    assert {"visits", "_auth_user_id", "items_run"} | {f"item:{n}" for n in range(1, 11)} <= set(
        keys
    )
    ttl = int(page.locator("#ttl").get_attribute("data-seconds") or 0)
    assert 0 < ttl <= 14 * 24 * 3600

    # Log out on B: anonymous on A as well, with a new session (the count restarts
    # on the counter page that the logout lands on).
    page.click("#logout")
    expect(page.locator("#user-anonymous")).to_be_visible()
    expect(page.locator("#visits")).to_have_text("1")
    visit_counter(page, a, "A", 2)
    expect(page.locator("#user-anonymous")).to_be_visible()
