"""The edge every service has (kit/http.py): any header bytes are a clear 400 or accepted, never
a 500; bodies and headers over their limits are refused before they are read."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, Request
from hypothesis import given, settings
from hypothesis import strategies as st

from pizzeria.kit.http import http_app
from pizzeria.kit.settings import Settings
from tests.support.asgi import RawResponse, raw_request

router = APIRouter()


@router.post("/echo")
async def echo(request: Request) -> dict[str, object]:
    body = await request.body()
    return {"size": len(body)}


@router.get("/echo")
async def echo_get(request: Request) -> dict[str, object]:
    return {"query": dict(request.query_params)}


APP = http_app(
    service="probe",
    routers=[router],
    settings=Settings(MAX_REQUEST_BODY_BYTES="1000", MAX_REQUEST_HEADER_BYTES="2000"),  # type: ignore[call-arg]
)
TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def acceptable(name: bytes, value: bytes) -> bool:
    if not TOKEN.match(name) or CONTROL.search(value):
        return False
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return False
    if name.lower() in (b"x-request-id", b"x-correlation-id"):
        return re.match(r"^[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,63}$", text.strip(" \t")) is not None
    return True


def is_problem(response: RawResponse, status: int) -> bool:
    return response.status == status and response.headers["content-type"] == "application/problem+json"


@settings(max_examples=400, deadline=None)
@given(
    headers=st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from([b"x-request-id", b"x-correlation-id", b"traceparent", b"user-agent"]),
                st.binary(min_size=1, max_size=10),
            ),
            st.one_of(st.binary(max_size=30), st.text(max_size=30).map(str.encode)),
        ),
        max_size=4,
    )
)
async def test_any_header_bytes_are_a_400_or_accepted_never_a_500(headers: list[tuple[bytes, bytes]]) -> None:
    response = await raw_request(APP, "POST", "/echo", headers, b"{}")
    if all(acceptable(name.lower(), value) for name, value in headers):
        assert response.status == 200, response.body
    else:
        assert is_problem(response, 400), (response.status, response.body)
        assert response.json()["type"].endswith("/bad-header")
    assert response.headers["x-request-id"]


@settings(max_examples=100, deadline=None)
@given(size=st.integers(0, 3000), declared=st.booleans(), chunk=st.integers(1, 700))
async def test_a_body_is_refused_with_413_as_soon_as_it_is_over_the_limit(
    size: int, declared: bool, chunk: int
) -> None:
    pulled = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal pulled
        for start in range(0, size, chunk):
            part = b"x" * min(chunk, size - start)
            pulled += len(part)
            yield part

    content: bytes | AsyncIterator[bytes] = b"x" * size if declared else stream()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://probe") as client:
        response = await client.post("/echo", content=content)
    if size > 1000:
        assert response.status_code == 413, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/payload-too-large")
        assert pulled <= 1000 + chunk
    else:
        assert response.status_code == 200
        assert response.json()["size"] == size


@pytest.mark.parametrize("length", [b"12x", b"-1", b"1, 2"])
async def test_a_content_length_that_is_not_a_number_is_a_400(length: bytes) -> None:
    response = await raw_request(APP, "POST", "/echo", [(b"content-length", length)], b"{}")
    assert is_problem(response, 400)


@settings(max_examples=50, deadline=None)
@given(size=st.integers(0, 4000))
async def test_headers_over_the_limit_are_a_431(size: int) -> None:
    response = await raw_request(APP, "GET", "/echo", [(b"x-padding", b"p" * size)])
    # Each header line counts its name, value and 4 bytes of separators; the host header is sent too.
    total = len(b"x-padding") + size + 4 + len(b"host") + len(b"testserver") + 4
    assert (response.status == 431) == (total > 2000)
    if response.status == 431:
        assert is_problem(response, 431)


@given(query=st.text(max_size=20), nul_at=st.integers(0, 20))
@settings(max_examples=100, deadline=None)
async def test_a_nul_anywhere_in_the_query_is_a_400(query: str, nul_at: int) -> None:
    text = query[:nul_at] + "\x00" + query[nul_at:]
    encoded = httpx.QueryParams({"q": text})
    response = await raw_request(APP, "GET", f"/echo?{encoded}", [])
    assert is_problem(response, 400)
