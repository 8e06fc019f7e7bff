"""Units of the pages' scripts, imported as modules into a blank page of the server's origin."""

from __future__ import annotations

from typing import Any

import pytest

from support import ServerProcess

pytestmark = pytest.mark.browser

BLANK_PAGE = "<!doctype html><title>module tests</title>"


async def open_blank(server: ServerProcess, watch: Any) -> Any:
    """Open an empty page at the server's origin, so /static modules import."""
    page = watch.page
    url = f"{server.base_url}/module-tests"
    await page.route(url, lambda route: route.fulfill(body=BLANK_PAGE, content_type="text/html"))
    await page.goto(url)
    return page


# Close a LiveSocket's connection (never opened) as a server restart would,
# and return the "retrying" delays that it reports within `watchMs`.
RETRY_DELAYS = """async ([retryMs, random, watchMs]) => {
  const { LiveSocket } = await import("/static/socket.js");
  const delays = [];
  const socket = new LiveSocket("ws://127.0.0.1/unused", {
    onMessage: () => {},
    onState: (name, detail) => { if (name === "retrying") delays.push(detail.delayMs); },
  });
  const closed = { close: () => {} };
  socket.socket = closed;
  socket.retryMs = retryMs;
  Math.random = () => random;
  socket.closed(closed, { code: 1006 });
  await new Promise((resolve) => setTimeout(resolve, watchMs));
  socket.stop();
  return delays;
}"""


async def test_socket_retry_capped(web_server: ServerProcess, desktop_page: Any) -> None:
    page = await open_blank(web_server, desktop_page)
    delays = await page.evaluate(RETRY_DELAYS, [30_000, 0.9999, 0])
    assert delays != []
    assert max(delays) <= 30_000
    assert desktop_page.errors == []


async def test_socket_retry_counts_down(web_server: ServerProcess, desktop_page: Any) -> None:
    page = await open_blank(web_server, desktop_page)
    delays = await page.evaluate(RETRY_DELAYS, [4_000, 0.5, 2_300])
    seconds = [-(-delay // 1000) for delay in delays]
    assert seconds[:3] == [4, 3, 2]
    assert desktop_page.errors == []
