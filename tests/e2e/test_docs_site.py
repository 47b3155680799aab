"""The built manual: every internal link resolves, and in a real headless Chromium
the navigation and the search (which needs JavaScript) work.

tox's ``docs`` environment builds the HTML (warnings as errors) and names it in
``DRS_DOCS_HTML``; run alone, this module builds it itself. Only that
environment has Sphinx: elsewhere tests/conftest.py leaves this module out.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.e2e.conftest import artifacts
from tests.e2e.test_browser import CHROMIUM_ARGS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = os.environ.get("DRS_DOCS_HTML")
    if built:
        path = Path(built)
    else:
        from sphinx.cmd.build import build_main

        path = tmp_path_factory.mktemp("docs") / "html"
        argv = ["-W", "--keep-going", "-n", "-q", "-b", "html", str(ROOT / "docs"), str(path)]
        assert build_main(argv) == 0
    assert (path / "index.html").is_file(), f"no built manual in {path}"
    return path


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The built pages over HTTP on loopback: the search page loads its index by script."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# Internal links, without a browser ---------------------------------------------------


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id":
                self.ids.add(value)
            elif (tag, name) in {
                ("a", "href"),
                ("img", "src"),
                ("link", "href"),
                ("script", "src"),
            }:
                self.links.append(value)


def parse(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text(encoding="utf-8"))
    return links


def test_every_internal_link_resolves(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 15
    parsed = {page: parse(page) for page in pages}
    broken = []
    checked = 0
    for page, links in parsed.items():
        for link in links.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                continue  # external: not followed (no network), and counted below
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            checked += 1
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: {link}")
            elif parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else parse(target).ids
                if parts.fragment not in ids:
                    broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert checked > 500
    assert broken == []


def test_no_page_shows_a_theme_error(site: Path) -> None:
    # Furo paints a ``contents`` directive as a red error box: its own page
    # outline (right-hand side) takes that place.
    flagged = [
        page.name
        for page in site.rglob("*.html")
        if re.search(r'class="(?:[^"]*\s)?contents(?:\s[^"]*)?"', page.read_text(encoding="utf-8"))
    ]
    assert flagged == []


# In a browser ----------------------------------------------------------------------


@pytest.fixture
def page(chromium: str, tmp_path: Path) -> Iterator[Page]:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            timeout=30_000,
        )
        context.set_default_timeout(15_000)
        try:
            yield context.new_page()
        finally:
            context.close()


def screenshot(page: Page, results_dir: Path, name: str) -> None:
    path = results_dir / name
    page.screenshot(path=str(path), full_page=False)
    artifacts.append(path)


def test_navigation_and_search_in_a_browser(served: str, page: Page, results_dir: Path) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(f"{served}/index.html")
    expect(page).to_have_title(re.compile(r"django-redis-sessions \d"))
    sidebar = page.locator(".sidebar-tree")
    for title in ("Install and quick start", "Settings", "Migrating from another session engine",
                  "Operations", "API reference", "Changelog"):  # fmt: skip
        expect(sidebar.get_by_role("link", name=title, exact=True)).to_be_visible()
    screenshot(page, results_dir, "docs-index.png")

    # From the front page to a setting, by the navigation.
    sidebar.get_by_role("link", name="Settings", exact=True).click()
    expect(page).to_have_url(f"{served}/settings.html")
    expect(page.locator("h1")).to_contain_text("Settings")
    expect(page.locator("#idle-timeout")).to_be_visible()

    # The search box: a question a newcomer asks, answered by the page that has it.
    page.locator(".sidebar-search").fill("idle_timeout")
    page.locator(".sidebar-search").press("Enter")
    expect(page).to_have_url(re.compile(re.escape(f"{served}/search.html?q=idle_timeout")))
    # Sphinx shows results one by one: wait for each page looked for, not the first.
    for wanted in ("settings.html", "timeouts.html"):
        expect(
            page.locator(f"#search-results ul.search li a[href^='{wanted}']").first
        ).to_be_visible()
    screenshot(page, results_dir, "docs-search.png")

    # A result opens its page.
    page.locator("#search-results a[href^='timeouts.html']").first.click()
    expect(page.locator("h1")).to_contain_text("Timeouts")
    assert errors == []
