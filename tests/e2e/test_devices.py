"""The demo's "Devices" page in two real browsers, each signed in on another app server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.conftest import Servers, artifacts
from tests.e2e.test_browser import CHROMIUM_ARGS

pytestmark = pytest.mark.e2e

LAPTOP = "Mozilla/5.0 (X11; Linux x86_64; rv:135.0) Gecko/20100101 Firefox/135.0"
PHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.2 Mobile/15E148 Safari/604.1"
)


@pytest.fixture
def chromium_browser(chromium: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()


def device(browser: Browser, user_agent: str) -> Page:
    """A browser of its own (own cookies) that says it is ``user_agent``."""
    context = browser.new_context(user_agent=user_agent, viewport={"width": 390, "height": 844})
    context.set_default_timeout(15_000)
    return context.new_page()


def sign_in(page: Page, url: str, servers: Servers) -> None:
    page.goto(f"{url}/login/")
    page.fill("#id_username", servers.username)
    page.fill("#id_password", servers.password)
    page.click("#login-submit")
    expect(page.locator("#user")).to_have_text(servers.username)


# The words (hyphens may break) that the page shows on more than one line.
BROKEN_WORDS = """(root) => {
  const broken = [];
  const walker = document.createTreeWalker(document.querySelector(root), NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const match of node.data.matchAll(/[^\\s-]+/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const lines = new Set([...range.getClientRects()].map((rect) => Math.round(rect.top)));
      if (lines.size > 1) broken.push(match[0]);
    }
  }
  return broken;
}"""


def test_pages_at_phone_width_break_no_word(
    servers: Servers, chromium_browser: Browser, results_dir: Path
) -> None:
    phone = device(chromium_browser, PHONE)
    sign_in(phone, servers.a.url, servers)
    phone.goto(f"{servers.a.url}/account/sessions/")
    expect(phone.locator("#sessions .session .ip")).to_have_text("127.0.0.1")
    assert phone.evaluate(BROKEN_WORDS, "#sessions") == []
    phone.goto(f"{servers.a.url}/session/")
    # The per-user index's stamp is this engine's, not Django's.
    label = phone.locator("#keys tr", has_text="_drs_user_index").locator(".kept-by")
    expect(label).to_have_text("kept by this engine: the per-user index's activity stamp")
    expect(phone.locator("#keys tr", has_text="_auth_user_id").locator(".kept-by")).to_have_text(
        "kept by Django"
    )
    assert phone.evaluate(BROKEN_WORDS, "#keys") == []
    shot = results_dir / "session-phone.png"
    phone.screenshot(path=str(shot), full_page=True)
    artifacts.append(shot)


def test_devices_page_lists_and_ends_sessions_across_servers(
    servers: Servers, chromium_browser: Browser, results_dir: Path
) -> None:
    laptop, phone = device(chromium_browser, LAPTOP), device(chromium_browser, PHONE)
    sign_in(laptop, servers.a.url, servers)
    sign_in(phone, servers.b.url, servers)

    # The laptop, on server A, sees both devices; its own marked as this one.
    laptop.click("#devices-link")
    expect(laptop.locator("#server")).to_have_text("A")
    rows = laptop.locator("#sessions .session")
    expect(rows).to_have_count(2)
    expect(laptop.locator("#sessions .session.current .device")).to_contain_text("Firefox on Linux")
    expect(laptop.locator("#sessions .session:not(.current) .device")).to_have_text(
        "Safari on iPhone"
    )
    shot = results_dir / "devices.png"
    laptop.screenshot(path=str(shot), full_page=True)
    artifacts.append(shot)

    # The phone, on server B, sees the same two, with itself as the current one.
    phone.goto(f"{servers.b.url}/account/sessions/")
    expect(phone.locator("#sessions .session")).to_have_count(2)
    expect(phone.locator("#sessions .session.current .device")).to_contain_text("Safari on iPhone")

    # The laptop signs the phone out; the phone is anonymous on its very next request.
    laptop.locator("#sessions .session:not(.current) button.end").click()
    expect(laptop.locator("#sessions .session")).to_have_count(1)
    phone.goto(f"{servers.b.url}/")
    expect(phone.locator("#user-anonymous")).to_be_visible()
    expect(laptop.locator("#sessions .session.current")).to_have_count(1)

    # The phone signs in again on A; the laptop signs out every other device.
    sign_in(phone, servers.a.url, servers)
    laptop.goto(f"{servers.b.url}/account/sessions/")
    expect(laptop.locator("#sessions .session")).to_have_count(2)
    laptop.click("#end-others")
    expect(laptop.locator("#sessions .session")).to_have_count(1)
    phone.goto(f"{servers.a.url}/")
    expect(phone.locator("#user-anonymous")).to_be_visible()
    laptop.goto(f"{servers.a.url}/")
    expect(laptop.locator("#user")).to_have_text(servers.username)
