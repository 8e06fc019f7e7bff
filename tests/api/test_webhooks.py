"""Webhook signatures, retries and the delivery log, with a real local receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from support import Api
from tracker import keys
from tracker.webhooks import (
    WebhookTargetError,
    blocked_reason,
    check_target,
    check_url,
    host_address,
    retry_delay_s,
    sign,
)


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


def dispatch_job(api: Api) -> None:
    """Create contractor c1 and job j1, and dispatch the job."""
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


def test_webhook_delivered_signed_after_retries(api: Api, receiver: Receiver) -> None:
    created = api.post("/v1/webhooks", {"url": receiver.url, "events": ["job.en_route"]})
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    dispatch_job(api)

    # Two 500s, then success: attempts at about 0 s, 1 s and 3 s.
    assert wait_until(lambda: any(status == 200 for _, _, status in receiver.received))
    headers, payload, _ = receiver.received[-1]
    assert headers["X-Enroute-Signature"] == sign(secret, payload)
    assert orjson.loads(payload)["type"] == "job.en_route"
    assert orjson.loads(payload)["job_id"] == "j1"
    assert len(receiver.received) == 3
    log = api.get("/v1/webhooks/deliveries").json()["deliveries"]
    assert [entry["ok"] for entry in reversed(log)] == [False, False, True]


def test_webhook_unparsable_url_logged_failed(
    api: Api, org: tuple[str, str], redis_sync: redis.Redis
) -> None:
    # Registration rejects URLs that httpx can't parse, but a subscription
    # stored before that check existed can still hold one, so each attempt
    # must fail and be logged.
    created = api.post("/v1/webhooks", {"url": "http://127.0.0.1:9/x"})
    assert created.status_code == 201, created.text
    hook_id = created.json()["id"]
    record = orjson.loads(redis_sync.hget(keys.webhooks(org[0]), hook_id))
    record["url"] = "http://\uff11\uff12\uff17.0.0.1:9/x"
    redis_sync.hset(keys.webhooks(org[0]), hook_id, orjson.dumps(record))
    dispatch_job(api)
    assert wait_until(lambda: api.get("/v1/webhooks/deliveries").json()["deliveries"] != [])
    entry = api.get("/v1/webhooks/deliveries").json()["deliveries"][-1]
    assert "InvalidURL" in entry["error"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://0177.0.0.1/", "Invalid IPv4 address: '0177.0.0.1'"),
        ("http://010.0.0.1:8080/hook", "Invalid IPv4 address: '010.0.0.1'"),
        ("http://\uff11\uff12\uff17.0.0.1:9/x", "Invalid IDNA hostname: '\uff11\uff12\uff17.0.0.1'"),
        ("http://[::ffff:127.0.0.1]x/", "Invalid port: 'x'"),
        ("http://127.0.0.1\t/", "Invalid non-printable ASCII character in URL"),
    ],
)
def test_webhook_client_rejected_url_422(api: Api, url: str, reason: str) -> None:
    response = api.post("/v1/webhooks", {"url": url})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("url must be a URL that the delivery client httpx accepts")
    assert reason in detail
    assert repr(url) in detail
    assert api.get("/v1/webhooks").json()["webhooks"] == []


def test_webhook_event_filter(api: Api, receiver: Receiver) -> None:
    receiver.failures = 0
    api.post("/v1/webhooks", {"url": receiver.url, "events": ["job.cancelled"]})
    dispatch_job(api)
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


def ipv4_notations(value: int) -> list[str]:
    """Spell one IPv4 address in each form that inet_aton and the resolver accept."""
    a, b, c, d = value.to_bytes(4, "big")
    return [
        f"{a}.{b}.{c}.{d}",
        str(value),
        hex(value),
        f"0{value:o}",
        ".".join(hex(part) for part in (a, b, c, d)),
        ".".join(f"0{part:o}" for part in (a, b, c, d)),
        f"{a}.{b}.{(c << 8) | d}",
        f"{a}.{(b << 16) | (c << 8) | d}",
        f"{hex(a)}.0{b:o}.{c}.{d}",
    ]


def mapped_notations(value: int) -> list[str]:
    """Spell one IPv4 address as IPv4-mapped IPv6 URL hosts."""
    a, b, c, d = value.to_bytes(4, "big")
    return [f"[::ffff:{a}.{b}.{c}.{d}]", f"[::ffff:{value >> 16:x}:{value & 0xFFFF:x}]"]


IDEOGRAPHIC_DOTS = ("\u3002", "\uff0e", "\uff61")


def fullwidth(text: str) -> str:
    """Write the ASCII letters and digits of ``text`` as their fullwidth forms."""
    return "".join(chr(ord(char) + 0xFEE0) if char.isascii() and char.isalnum() else char for char in text)


def unicode_notations(value: int) -> list[str]:
    """Spell one IPv4 address with fullwidth characters or ideographic dots, which IDNA maps to ASCII."""
    hosts = [fullwidth(host) for host in ipv4_notations(value)]
    for dot in IDEOGRAPHIC_DOTS:
        hosts.extend(host.replace(".", dot) for host in ipv4_notations(value) if "." in host)
    hosts.append(fullwidth(ipv4_notations(value)[0]).replace(".", IDEOGRAPHIC_DOTS[0]))
    return hosts


def embedding_notations(value: int) -> list[str]:
    """Spell one IPv4 address embedded in 6to4, Teredo and IPv4-mapped IPv6 URL hosts."""
    high, low = value >> 16, value & 0xFFFF
    client = value ^ 0xFFFFFFFF
    return [
        f"[2002:{high:x}:{low:x}::]",
        f"[2002:{high:x}:{low:x}:1:2:3:4:5]",
        # Teredo: the server address in plain form, the client address inverted.
        # The other address of each pair is 192.0.2.45, which is allowed.
        f"[2001:0:{high:x}:{low:x}::3fff:fdd2]",
        f"[2001:0:c000:22d:8000:1234:{client >> 16:x}:{client & 0xFFFF:x}]",
        *mapped_notations(value),
    ]


def addresses_in(*networks: str) -> st.SearchStrategy[int]:
    """Draw IPv4 addresses, as integers, from the given networks."""
    parsed = [ipaddress.IPv4Network(network) for network in networks]
    return st.sampled_from(parsed).flatmap(
        lambda network: st.integers(int(network.network_address), int(network.broadcast_address))
    )


BLOCKED_IPV4 = addresses_in("169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "0.0.0.0/32")
LOCAL_IPV4 = addresses_in("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


@pytest.mark.parametrize(
    "url",
    [
        "http://2852039166/latest",
        "http://0xa9fea9fe/latest",
        "http://0251.0376.0251.0376/latest",
        "http://169.254.43518/latest",
        "http://169.16689662/latest",
        "http://[::ffff:169.254.169.254]/latest",
        "http://[fe80::1%25eth0]/x",
        "http://0/x",
        "http://\uff11\uff16\uff19.254.169.254/latest",
        "http://169\u3002254\u3002169\u3002254/latest",
        "http://169\uff0e254\uff61169.254/latest",
        "http://[2002:a9fe:a9fe::]/latest",
        "http://[2001:0:a9fe:a9fe::]/latest",
    ],
)
def test_webhook_ip_notation_422(api: Api, url: str) -> None:
    response = api.post("/v1/webhooks", {"url": url})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("url must not point at")
    assert repr(url) in detail
    assert api.get("/v1/webhooks").json()["webhooks"] == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.invalid:99999/x", "url must be a valid http or https URL"),
        ("http://example.invalid:0/x", "url port must be within 1..65535"),
        ("http://[::1/x", "url must be a valid http or https URL"),
        ("http://127.0.0.1 x/", "url host must not contain whitespace"),
        ("gopher://127.0.0.1/x", "url must be an absolute http or https URL"),
        ("http://a..b/x", "url host must be a valid IDNA host name"),
        (f"http://{'a' * 64}.example/x", "url host must be a valid IDNA host name"),
    ],
)
def test_webhook_invalid_url_message(api: Api, url: str, message: str) -> None:
    response = api.post("/v1/webhooks", {"url": url})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith(message)
    assert repr(url) in detail


def test_webhook_loopback_short_form_201(api: Api) -> None:
    # Loopback is allowed because the delivery-time check allows it too.
    response = api.post("/v1/webhooks", {"url": "http://127.1:9/hook"})
    assert response.status_code == 201, response.text


def test_webhook_mapped_loopback_201(api: Api) -> None:
    # An IPv4-mapped address is judged by its IPv4 address, and loopback is allowed.
    response = api.post("/v1/webhooks", {"url": "http://[::ffff:127.0.0.1]:9/hook"})
    assert response.status_code == 201, response.text


def test_blocked_reason_allows_ipv6_loopback() -> None:
    assert blocked_reason(ipaddress.ip_address("::1")) is None


def test_blocked_reason_embedded_ipv4() -> None:
    metadata = "a link-local address (such as a cloud metadata service)"
    assert blocked_reason(ipaddress.ip_address("::ffff:169.254.169.254")) == metadata
    assert blocked_reason(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert blocked_reason(ipaddress.ip_address("::ffff:10.0.0.1")) is None
    assert blocked_reason(ipaddress.ip_address("2002:a9fe:a9fe::")) == (
        f"{metadata} (169.254.169.254) embedded in 2002:a9fe:a9fe::"
    )
    assert blocked_reason(ipaddress.ip_address("2002:7f00:1::")) is None
    teredo_client = ipaddress.ip_address("2001:0:c000:22d::5601:5601")
    assert teredo_client.teredo == (
        ipaddress.IPv4Address("192.0.2.45"),
        ipaddress.IPv4Address("169.254.169.254"),
    )
    assert blocked_reason(teredo_client) == f"{metadata} (169.254.169.254) embedded in {teredo_client}"


def test_check_target_rejects_decimal_ip() -> None:
    with pytest.raises(WebhookTargetError, match="link-local"):
        asyncio.run(check_target("http://2852039166/latest"))


@given(value=BLOCKED_IPV4)
@settings(max_examples=300, deadline=None)
def test_check_url_blocks_every_notation(value: int) -> None:
    for host in ipv4_notations(value) + mapped_notations(value):
        with pytest.raises(WebhookTargetError, match="url must not point at"):
            check_url(f"http://{host}/x")


@given(value=BLOCKED_IPV4)
@settings(max_examples=300, deadline=None)
def test_check_url_blocks_unicode_notations(value: int) -> None:
    for host in unicode_notations(value):
        with pytest.raises(WebhookTargetError, match="url must not point at"):
            check_url(f"http://{host}/x")


@given(value=BLOCKED_IPV4)
@settings(max_examples=300, deadline=None)
def test_check_url_blocks_embedded_ipv4(value: int) -> None:
    for host in embedding_notations(value):
        with pytest.raises(WebhookTargetError, match="url must not point at"):
            check_url(f"http://{host}/x")


@given(
    network=st.sampled_from(["fe80::/10", "ff00::/8"]),
    offset=st.integers(0, 2**118 - 1),
    zone=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_check_url_blocks_ipv6(network: str, offset: int, zone: bool) -> None:
    address = ipaddress.IPv6Network(network)[offset]
    suffix = "%25eth0" if zone else ""
    for text in (address.compressed, address.exploded):
        with pytest.raises(WebhookTargetError, match="url must not point at"):
            check_url(f"http://[{text}{suffix}]/x")


def httpx_accepts(url: str) -> bool:
    try:
        httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return True


@given(value=LOCAL_IPV4)
@settings(max_examples=300, deadline=None)
def test_check_url_allows_local_notations(value: int) -> None:
    # Local addresses are allowed in every notation that httpx can deliver
    # to. Others, such as dotted octal and fullwidth digits, are invalid.
    for host in ipv4_notations(value) + unicode_notations(value) + embedding_notations(value):
        url = f"http://{host}:8080/x"
        if httpx_accepts(url):
            assert check_url(url) == url
        else:
            with pytest.raises(ValueError, match="url must be a URL that the delivery client httpx accepts") as raised:
                check_url(url)
            assert not isinstance(raised.value, WebhookTargetError)


@given(value=st.integers(0, 2**32 - 1))
@settings(max_examples=300, deadline=None)
def test_check_url_agrees_with_delivery(value: int) -> None:
    for host in ipv4_notations(value) + mapped_notations(value):
        url = f"http://{host}/x"
        bare = host.strip("[]")
        # AI_NUMERICHOST keeps this a parse: it fails rather than query DNS.
        info = socket.getaddrinfo(bare, 80, flags=socket.AI_NUMERICHOST)
        resolved = ipaddress.ip_address(info[0][4][0])
        assert host_address(url, bare) == resolved
        blocked = blocked_reason(resolved) is not None
        rejected_at_registration = False
        try:
            check_url(url)
        except WebhookTargetError:
            rejected_at_registration = True
        except ValueError:
            # An unblocked address in a notation that httpx rejects is an
            # invalid URL rather than a blocked target.
            assert not httpx_accepts(url)
        assert rejected_at_registration == blocked
        if not httpx_accepts(url):
            # httpx can't deliver to such a URL, so delivery fails before the check.
            with pytest.raises(httpx.InvalidURL):
                asyncio.run(check_target(url))
            continue
        rejected_at_delivery = False
        try:
            asyncio.run(check_target(url))
        except WebhookTargetError:
            rejected_at_delivery = True
        assert rejected_at_delivery == blocked
