"""Every process of the system has the same edge: header bytes that are not text, a NUL in the
query, a body or headers over their limits are refused with a clear 4xx problem before any
route runs (the apps are built as `pizzeria serve` builds them; nothing is started)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pizzeria.registry import SERVICES
from tests.integration.services import embedded_settings
from tests.support.asgi import RawResponse, raw_request


@pytest.fixture(params=[s.name for s in SERVICES])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> FastAPI:
    settings = embedded_settings(tmp_path, MAX_REQUEST_BODY_BYTES="2048")
    service = next(s for s in SERVICES if s.name == request.param)
    built: FastAPI = service.load().create_app(settings)
    return built


def refused(response: RawResponse, status: int) -> None:
    assert response.status == status, (response.status, response.body)
    assert response.headers["content-type"] == "application/problem+json"


#: Header values that are never text: bytes that are not UTF-8, or control characters.
NOT_TEXT = st.one_of(
    st.binary(min_size=1, max_size=20).filter(lambda b: not _is_utf8(b)),
    st.tuples(st.text(max_size=8), st.sampled_from("\x00\x01\n\r\x1b\x7f"), st.text(max_size=8)).map(
        lambda p: (p[0] + p[1] + p[2]).encode()
    ),
)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from([b"user-agent", b"authorization", b"x-request-id", b"content-type", b"x-anything"]),
    value=NOT_TEXT,
)
async def test_header_bytes_that_are_not_text_are_a_400_at_every_service(
    app: FastAPI, name: bytes, value: bytes
) -> None:
    response = await raw_request(app, "GET", "/health", [(name, value)])
    refused(response, 400)
    assert response.json()["type"].endswith("/bad-header")


async def test_size_limits_and_nul_hold_at_every_service(app: FastAPI) -> None:
    refused(await raw_request(app, "POST", "/api/v1/anything", [(b"content-length", b"4096")], b"x" * 4096), 413)
    refused(await raw_request(app, "GET", "/health", [(b"x-padding", b"p" * 20_000)]), 431)
    refused(await raw_request(app, "GET", "/health?q=%00", []), 400)
    assert (await raw_request(app, "GET", "/health", [(b"user-agent", b"curl/8 ")])).status == 200
