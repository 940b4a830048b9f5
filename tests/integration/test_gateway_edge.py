"""What a client sends is the client's problem, never the upstream's: generated header names and
values of any bytes, through the gateway in-process, are either passed on normalised or refused
with a 400 problem, and no breaker ever counts them; a size limit is a 413 or 431 before the
body is read."""

from __future__ import annotations

import string
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pizzeria.services.gateway.app import FORWARDED_HEADERS
from tests.integration.gateway import Gateway, problem
from tests.support.asgi import RawResponse, raw_request

pytestmark = pytest.mark.usefixtures("gateway")

#: Headers the gateway reads or passes on, and some it does neither with.
KNOWN_NAMES = (*FORWARDED_HEADERS, "x-request-id", "x-correlation-id", "x-forwarded-for", "user-agent", "cookie")
#: What an upstream may see: the headers passed on, and those the gateway's own client sets.
PASSED_ON = {
    *FORWARDED_HEADERS,
    "x-forwarded-for",
    "x-request-id",
    "host",
    "accept-encoding",
    "connection",
    "user-agent",
    "content-length",
}
TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
PADDING = st.text(" \t", max_size=3)


def _padded(core: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    return st.tuples(PADDING, core, PADDING).map(lambda p: (p[0] + p[1] + p[2]).encode())


#: Values of every kind: any bytes, any text as UTF-8, and plausible values with spaces around.
VALUES = st.one_of(
    st.binary(max_size=48),
    st.text(max_size=24).map(str.encode),
    _padded(st.text(string.ascii_letters + string.digits + "-._:/", min_size=1, max_size=40)),
    _padded(st.sampled_from(["application/json", "r", "k-1\tk-2", "en, fr;q=0.5", "*/*", "ümlaut"]).map(str)),
)
NAMES = st.one_of(
    st.sampled_from(KNOWN_NAMES).map(str.encode),
    st.text(TOKEN_CHARS, min_size=1, max_size=20).map(str.encode),
    st.binary(min_size=1, max_size=12),
)
#: Where a request may go: an anonymous read (retried), a sign-in, a signed-in read and a write.
TARGETS = st.sampled_from(
    [
        ("GET", "/api/v1/menu", None),
        ("POST", "/api/v1/auth/login", None),
        ("GET", "/api/v1/orders", "customer"),
        ("POST", "/api/v1/orders", "customer"),
    ]
)


def raw_problem(response: RawResponse, status: int) -> dict[str, Any]:
    assert response.status == status, response.body
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def gateway_env() -> dict[str, str]:
    return {"RATE_LIMIT_PER_IP": "1000000", "RATE_LIMIT_PER_USER": "1000000", "MAX_REQUEST_BODY_BYTES": "4096"}


@pytest.fixture
async def tokens(gateway: Gateway) -> dict[str, bytes]:
    return {"customer": gateway.token("customer")["Authorization"].encode()}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=TARGETS, extra=st.lists(st.tuples(NAMES, VALUES), min_size=1, max_size=4))
async def test_any_header_is_passed_on_normalised_or_refused_and_never_counts_against_a_breaker(
    gateway: Gateway, tokens: dict[str, bytes], target: tuple[str, str, str | None], extra: list[tuple[bytes, bytes]]
) -> None:
    method, path, who = target
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")] if method == "POST" else []
    if who == "customer":
        headers.append((b"authorization", tokens["customer"]))
    headers += [(name, value) for name, value in extra if name.lower() not in (b"authorization", b"content-length")]
    calls_before = sum(len(u.calls) for u in gateway.upstreams.values())
    response = await raw_request(
        gateway.app, method, path, headers, b"{}" if method == "POST" else b"", (gateway.ip, 1)
    )

    assert response.status < 500, response.body
    if response.status >= 400:
        raw_problem(response, response.status)
    calls = sum(len(u.calls) for u in gateway.upstreams.values()) - calls_before
    assert calls <= 1, "an upstream that answers is asked once"
    if response.status == 200:
        seen = response.json()["headers"]
        for name, value in headers:
            key = name.decode("latin-1").lower()
            if key in FORWARDED_HEADERS and key not in ("traceparent", "tracestate", "authorization"):
                assert seen[key] == value.decode().strip(" \t"), (key, value)
        assert set(seen) <= PASSED_ON, "only the headers the services need are passed on"
    health = await gateway.health()
    assert {u["breaker"] for u in health["upstreams"].values()} == {"closed"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"x-request-id", b"r "),
        (b"content-type", b"application/json "),
        (b"idempotency-key", b"\tkey\t"),
        (b"accept", b"*/* "),
    ],
)
async def test_the_reported_headers_with_spaces_around_are_passed_on_trimmed(
    gateway: Gateway, name: bytes, value: bytes
) -> None:
    for _ in range(8):  # more than the breaker's threshold, with retries
        response = await raw_request(gateway.app, "GET", "/api/v1/menu", [(name, value)], client=(gateway.ip, 1))
        assert response.status == 200, response.body
        assert response.json()["headers"][name.decode()] == value.decode().strip()
    assert len(gateway.upstreams["catalog"].calls) == 8


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"x-request-id", "r\u00e9".encode()),
        (b"accept-language", "fran\u00e7ais".encode()),
        (b"idempotency-key", b"two\twords"),
        (b"idempotency-key", b"k" * 256),
        (b"x-request-id", b"r" * 65),
        (b"user-agent", b"\xff\xfe"),
        (b"content-type", b"application/json\x01"),
    ],
)
async def test_a_header_that_cannot_be_passed_on_is_a_400_that_no_upstream_sees(
    gateway: Gateway, name: bytes, value: bytes
) -> None:
    for _ in range(8):
        response = await raw_request(gateway.app, "GET", "/api/v1/menu", [(name, value)], client=(gateway.ip, 1))
        body = raw_problem(response, 400)
        assert name.decode() in body["detail"].lower()
    assert not gateway.upstreams["catalog"].calls
    assert (await gateway.health())["upstreams"]["catalog"]["breaker"] == "closed"


# -- sizes -----------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 3 * 4096), declared=st.booleans(), chunk=st.integers(1, 2048))
async def test_a_body_over_the_limit_is_a_413_before_it_is_read(
    gateway: Gateway, size: int, declared: bool, chunk: int
) -> None:
    pulled = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal pulled
        for start in range(0, size, chunk):
            part = b"x" * min(chunk, size - start)
            pulled += len(part)
            yield part

    staff = gateway.token("staff")
    headers = {**staff, "content-type": "application/json"}
    if declared:
        content: bytes | AsyncIterator[bytes] = b"x" * size
        pulled = size
    else:
        content = stream()
    response = await gateway.client.post("/api/v1/menu", headers=headers, content=content)
    if size > 4096:
        problem(response, 413, "payload-too-large")
        if not declared:
            assert pulled <= 4096 + chunk, "the body is not read past the limit"
    else:
        assert response.status_code == 200, response.text


async def test_headers_over_the_limit_are_a_431(gateway: Gateway) -> None:
    problem(await gateway.client.get("/api/v1/menu", headers={"x-padding": "p" * 20_000}), 431)
    assert (await gateway.client.get("/api/v1/menu", headers={"x-padding": "p" * 1_000})).status_code == 200
    assert len(gateway.upstreams["catalog"].calls) == 1


async def test_a_nul_in_the_path_or_query_is_a_400(gateway: Gateway) -> None:
    staff = gateway.token("staff")
    problem(await gateway.client.get("/api/v1/menu?q=%00"), 400)
    problem(await gateway.client.put("/api/v1/inventory/dou%00gh", json={}, headers=staff), 400)
    assert not gateway.upstreams["catalog"].calls
    assert not gateway.upstreams["kitchen"].calls
