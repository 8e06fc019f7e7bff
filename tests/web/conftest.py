"""Fixtures of the browser tests: a server without map tiles and headless Chromium.

The tests drive Debian's Chromium through Playwright's async API, so the
device WebSockets of ``support.Device`` share the test's event loop. The
server's tile URL points at a closed loopback port, so every page takes
its offline path and draws the road graph's streets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from support import REPO_ROOT, Api, ServerProcess, create_org

CHROMIUM_PATH = Path("/usr/bin/chromium")
CHROMIUM_MISSING = (
    "install Debian's chromium package (apt-get install chromium) to run the browser tests"
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Nothing listens on port 9 (discard) of the loopback interface, so tile
# requests fail at once.
OFFLINE_TILE_URL = "http://127.0.0.1:9/{z}/{x}/{y}.png"
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts" / "web"
PHONE_VIEWPORT = {"width": 390, "height": 844}
DESKTOP_VIEWPORT = {"width": 1280, "height": 800}
# en-GB formats times as 14:05, which the tests match.


def require_chromium() -> None:
    if not CHROMIUM_PATH.exists():
        pytest.skip(CHROMIUM_MISSING)


@pytest.fixture(scope="session")
def web_server(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, graph_cache_dir: Path
) -> Iterator[ServerProcess]:
    """An ``enroute serve`` process whose map tiles never load."""
    require_chromium()
    log_path = tmp_path_factory.mktemp("web-server") / "server.log"
    process = ServerProcess(
        redis_url,
        log_path,
        ENROUTE_TILE_URL=OFFLINE_TILE_URL,
        ENROUTE_GRAPH_CACHE_DIR=str(graph_cache_dir),
    ).start()
    try:
        probe = httpx.get(f"{process.base_url}/static/vendor/leaflet/leaflet.js", timeout=10)
        if probe.status_code != 200:
            pytest.skip(
                f"the server does not serve web/ at /static (GET returned {probe.status_code}); "
                "the pages load their scripts from there"
            )
        yield process
    finally:
        process.stop()


@pytest.fixture()
def web_org(redis_url: str) -> tuple[str, str]:
    """A fresh organisation: (org id, API key)."""
    return create_org(redis_url)


@pytest.fixture()
def web_api(web_server: ServerProcess, web_org: tuple[str, str]) -> Iterator[Api]:
    client = Api(web_server.base_url, web_org[1])
    yield client
    client.close()


@pytest.fixture()
async def browser() -> AsyncIterator[Browser]:
    require_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM_PATH), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


class PageWatch:
    """Uncaught script errors and requested URLs of one page."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.urls: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", lambda request: self.urls.append(request.url))

    def foreign_urls(self, base_url: str) -> list[str]:
        """Return the requested URLs outside the server and the test tile URL."""
        allowed = (base_url, "ws://127.0.0.1", "http://127.0.0.1:9/", "data:")
        return [url for url in self.urls if not url.startswith(allowed)]


async def open_page(browser: Browser, viewport: dict[str, int]) -> PageWatch:
    """Open a page in a fresh context, so sessionStorage starts empty."""
    context = await browser.new_context(
        viewport=viewport, locale="en-GB", timezone_id="Europe/Helsinki"
    )
    return PageWatch(await context.new_page())


@pytest.fixture()
async def phone_page(browser: Browser) -> PageWatch:
    return await open_page(browser, PHONE_VIEWPORT)


@pytest.fixture()
async def desktop_page(browser: Browser) -> PageWatch:
    return await open_page(browser, DESKTOP_VIEWPORT)


@pytest.fixture()
def artifacts_dir() -> Path:
    """Folder for screenshots, kept out of git."""
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS_DIR
