"""The outgoing HTTP client on a real socket: answers as they came, a deadline that holds, and a
closed port reported as unreachable (what the breakers in front of it count)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pizzeria.kit.http_client import HttpError, HttpTimeout, http_client
from tests.support.hangup import hanging_up
from tests.support.tcpproxy import free_port


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "body": body.decode(),
            "key": request.headers.get("Idempotency-Key"),
        },
        status=201,
    )


async def slow(_: web.Request) -> web.Response:
    await asyncio.Event().wait()  # never answers: the client's deadline must end the wait
    return web.Response(text="never")


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_route("*", "/v1/echo", echo)
    app.router.add_get("/v1/slow", slow)
    async with TestServer(app, host="127.0.0.1") as running:
        yield running


async def test_a_request_comes_back_as_the_server_answered(server: TestServer) -> None:
    client = http_client(str(server.make_url("")), timeout=2)
    try:
        answer = await client.request(
            "POST", "/v1/echo", params={"a": "1"}, headers={"Idempotency-Key": "k-1"}, body=b'{"x":1}'
        )
    finally:
        await client.close()
    assert answer.status == 201
    assert answer.json() == {"method": "POST", "path": "/v1/echo", "query": "a=1", "body": '{"x":1}', "key": "k-1"}


async def test_no_answer_within_the_deadline_is_a_timeout(server: TestServer) -> None:
    client = http_client(str(server.make_url("")), timeout=0.2)
    try:
        with pytest.raises(HttpTimeout):
            await client.request("GET", "/v1/slow")
    finally:
        await client.close()


async def test_a_closed_port_is_unreachable_not_a_timeout() -> None:
    client = http_client(f"http://127.0.0.1:{free_port()}", timeout=2)
    try:
        with pytest.raises(HttpError) as raised:
            await client.request("GET", "/v1/echo")
    finally:
        await client.close()
    assert not isinstance(raised.value, HttpTimeout)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "POST"])
async def test_a_request_the_server_read_is_sent_once(method: str) -> None:
    # The server read the whole request, then died: whether to send it again is the caller's choice.
    async with hanging_up() as (server, url):
        client = http_client(url, timeout=2)
        try:
            with pytest.raises(HttpError):
                await client.request(method, "/v1/charges/c-1", body=b"{}")
        finally:
            await client.close()
    assert len(server.requests) == 1, f"{method} reached the server {len(server.requests)} times"
