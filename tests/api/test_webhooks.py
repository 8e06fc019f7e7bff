"""Webhook signatures, retries and the delivery log, with a real local receiver."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from support import Api
from tracker.webhooks import check_url, retry_delay_s, sign


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs and fails the first few."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if receiver.failures > 0 else 200
                receiver.failures -= 1
                receiver.received.append((dict(self.headers), body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = Receiver(failures=2)
    yield server
    server.close()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def wait_until(check, timeout_s: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def test_sign_matches_hmac_sha256() -> None:
    expected = hmac.new(b"whsec_x", b"{}", hashlib.sha256).hexdigest()
    assert sign("whsec_x", b"{}") == "sha256=" + expected


def test_retry_delay_doubles_then_caps() -> None:
    assert [retry_delay_s(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay_s(40) == 3600.0


@pytest.mark.parametrize("url", ["ftp://example.invalid/x", "/relative", "http://"])
def test_check_url_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="url must be an absolute http or https URL"):
        check_url(url)


def test_webhook_delivered_signed_after_retries(api: Api, receiver: Receiver) -> None:
    created = api.post("/v1/webhooks", {"url": receiver.url, "events": ["job.en_route"]})
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    api.contractor("c1")
    now = time.time()
    body = {
        "id": "j1",
        "contractor_id": "c1",
        "site": {"lat": 60.1693, "lon": 24.9389, "radius_m": 50},
        "window": {"start": iso(now), "end": iso(now + 3600)},
    }
    api.post("/v1/jobs", body)
    api.post("/v1/jobs/j1/dispatch")

    # Two 500s, then success: attempts at about 0 s, 1 s and 3 s.
    assert wait_until(lambda: any(status == 200 for _, _, status in receiver.received))
    headers, payload, _ = receiver.received[-1]
    assert headers["X-Enroute-Signature"] == sign(secret, payload)
    assert orjson.loads(payload)["type"] == "job.en_route"
    assert orjson.loads(payload)["job_id"] == "j1"
    assert len(receiver.received) == 3
    log = api.get("/v1/webhooks/deliveries").json()["deliveries"]
    assert [entry["ok"] for entry in reversed(log)] == [False, False, True]


def test_webhook_event_filter(api: Api, receiver: Receiver) -> None:
    receiver.failures = 0
    api.post("/v1/webhooks", {"url": receiver.url, "events": ["job.cancelled"]})
    api.contractor("c1")
    now = time.time()
    body = {
        "id": "j1",
        "contractor_id": "c1",
        "site": {"lat": 60.1693, "lon": 24.9389, "radius_m": 50},
        "window": {"start": iso(now), "end": iso(now + 3600)},
    }
    api.post("/v1/jobs", body)
    api.post("/v1/jobs/j1/dispatch")
    api.post("/v1/jobs/j1/cancel")
    assert wait_until(lambda: len(receiver.received) >= 1)
    time.sleep(1.0)
    types = [orjson.loads(payload)["type"] for _, payload, _ in receiver.received]
    assert types == ["job.cancelled"]


def test_webhook_invalid_url_422(api: Api) -> None:
    response = api.post("/v1/webhooks", {"url": "file:///etc/passwd"})
    assert response.status_code == 422


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data", "http://[fe80::1]/x", "http://224.0.0.1/x", "http://0.0.0.0/x"],
)
def test_check_url_rejects_blocked_addresses(url: str) -> None:
    with pytest.raises(ValueError, match="url must not point at"):
        check_url(url)


def test_webhook_metadata_address_422(api: Api) -> None:
    response = api.post("/v1/webhooks", {"url": "http://169.254.169.254/latest"})
    assert response.status_code == 422
    assert "link-local" in response.json()["detail"]
