"""The outgoing HTTP client on a real socket: answers as they came, a deadline that holds, and a
closed port reported as unreachable (what the breakers in front of it count)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pizzeria.kit.http_client import AiohttpTransport, HttpError, HttpTimeout, http_client
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


# -- httpx on aiohttp (the gateway's forwarding) -------------------------------------------------


def on_aiohttp(base_url: str, *, timeout: float, connections: int = 10) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, timeout=timeout, transport=AiohttpTransport(max_connections=connections)
    )


async def gzipped(_: web.Request) -> web.Response:
    body = gzip.compress(b'{"zipped": true}')
    return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})


async def test_httpx_on_aiohttp_passes_the_request_and_the_answer_as_they_are(server: TestServer) -> None:
    async with on_aiohttp(str(server.make_url("")), timeout=2) as client:
        answer = await client.post("/v1/echo", params={"a": "1"}, headers={"Idempotency-Key": "k-2"}, content=b"{}")
    assert answer.status_code == 201
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {"method": "POST", "path": "/v1/echo", "query": "a=1", "body": "{}", "key": "k-2"}


async def test_httpx_on_aiohttp_decodes_a_compressed_answer_as_httpx_does() -> None:
    app = web.Application()
    app.router.add_get("/zipped", gzipped)
    async with TestServer(app, host="127.0.0.1") as running, on_aiohttp(str(running.make_url("")), timeout=2) as client:
        answer = await client.get("/zipped")
    assert answer.json() == {"zipped": True}


async def test_httpx_on_aiohttp_faults_are_httpx_faults(server: TestServer) -> None:
    async with on_aiohttp(str(server.make_url("")), timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/v1/slow")
    async with on_aiohttp(f"http://127.0.0.1:{free_port()}", timeout=2) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/v1/echo")


async def test_httpx_on_aiohttp_refuses_at_once_past_its_connections(server: TestServer) -> None:
    transport = AiohttpTransport(max_connections=1)
    timeout = httpx.Timeout(5, pool=0.1)
    async with httpx.AsyncClient(base_url=str(server.make_url("")), timeout=timeout, transport=transport) as client:
        hanging = asyncio.create_task(client.get("/v1/slow"))
        deadline = asyncio.get_running_loop().time() + 5
        while transport.in_flight < 1:  # the first request holds the only place
            assert asyncio.get_running_loop().time() < deadline, "the first request never went out"
            await asyncio.sleep(0.01)
        try:
            with pytest.raises(httpx.PoolTimeout):
                await client.get("/v1/echo")
        finally:
            hanging.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await hanging
