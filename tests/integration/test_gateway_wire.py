"""The gateway's wire to a replica on a real socket (aiohttp): the request and the answer pass as
they are, and each fault is told apart as the breakers and retries need it: a closed port never
sent the request, a silent server timed out, a server that broke off is the upstream's fault,
a full pool is the gateway's own; a stream has no deadline once connected. Each request is sent
once: whether to send it again is the upstream's choice (reads only), never the wire's."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pizzeria.services.gateway.upstream import outgoing
from pizzeria.services.gateway.wire import (
    AiohttpWire,
    NotSent,
    PoolBusy,
    TimedOut,
    TransportWire,
    Unsendable,
    UpstreamFault,
)
from tests.support.hangup import hanging_up
from tests.support.polling import eventually
from tests.support.tcpproxy import free_port


class Server:
    """An upstream whose slow answers and stream go on only when the test says so."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.next_chunk = asyncio.Event()
        self.waiting = 0  # requests held now

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        answer = web.json_response(
            {
                "method": request.method,
                "target": request.raw_path,
                "body": body.decode(),
                "headers": dict(request.headers),
            },
            status=201,
        )
        answer.headers.add("X-Many", "one")
        answer.headers.add("X-Many", "two")
        return answer

    async def slow(self, _: web.Request) -> web.Response:
        self.waiting += 1
        try:
            await self.release.wait()
        finally:
            self.waiting -= 1
        return web.Response(text="late")

    async def zipped(self, _: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b"zipped"), headers={"Content-Encoding": "gzip"})

    async def broken(self, request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"Content-Length": "100"})
        await answer.prepare(request)
        await answer.write(b"part")
        assert request.transport is not None
        request.transport.close()  # gone before the rest of the promised answer
        return answer

    async def events(self, request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await answer.prepare(request)
        await answer.write(b"data: first\n\n")
        await self.next_chunk.wait()
        await answer.write(b"data: second\n\n")
        return answer


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    upstream = Server()
    app = web.Application()
    app.router.add_route("*", "/echo/{tail:.*}", upstream.echo)
    app.router.add_get("/slow", upstream.slow)
    app.router.add_get("/zipped", upstream.zipped)
    app.router.add_get("/broken", upstream.broken)
    app.router.add_get("/events", upstream.events)
    async with TestServer(app, host="127.0.0.1") as running:
        yield upstream, str(running.make_url(""))
        upstream.release.set()
        upstream.next_chunk.set()


def wire(url: str, *, timeout: float = 2, connections: int = 10) -> AiohttpWire:
    return AiohttpWire(url, timeout=timeout, connections=connections, stream_connections=10)


async def test_the_request_and_the_answer_pass_as_they_are(server: tuple[Server, str]) -> None:
    _, url = server
    to = wire(url)
    try:
        target = "/echo/b%25%10%2A?dry=1&dry=2"
        answer = await to.send("POST", target, [("Idempotency-Key", "k-1"), ("X-Request-ID", "r-1")], b'{"x":1}')
    finally:
        await to.close()
    assert answer.status == 201
    echo = orjson.loads(answer.body)
    assert (echo["method"], echo["target"], echo["body"]) == ("POST", target, '{"x":1}')
    assert (echo["headers"]["Idempotency-Key"], echo["headers"]["X-Request-ID"]) == ("k-1", "r-1")
    # Nothing the caller did not send is made up on the way (no Accept, User-Agent or Content-Type
    # of the client library's): only what HTTP/1.1 needs to carry the request.
    assert set(echo["headers"]) == {"Host", "Content-Length", "Idempotency-Key", "X-Request-ID"}
    assert [v for k, v in answer.headers if k == "X-Many"] == ["one", "two"]
    assert answer.header("content-type") == "application/json; charset=utf-8"


async def test_the_callers_own_accept_passes(server: tuple[Server, str]) -> None:
    _, url = server
    to = wire(url)
    try:
        answer = await to.send("GET", "/echo/x", [("Accept", "text/csv"), ("User-Agent", "till/2")], b"")
    finally:
        await to.close()
    echo = orjson.loads(answer.body)
    assert (echo["headers"]["Accept"], echo["headers"]["User-Agent"]) == ("text/csv", "till/2")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/echo/b%25%10%2A%C3%8B", [("dry", "1"), ("q", "a b/c")]),
        ("/echo/.../..a/%2E%2E%2E/a b#c?d/caf\u00e9%zz", None),
    ],
)
async def test_the_test_wire_sends_the_target_the_real_wire_sends(
    server: tuple[Server, str], path: str, params: list[tuple[str, str]] | None
) -> None:
    # What the tests on `TransportWire` see is what a replica is sent (no dot segment reaches
    # either: `outgoing` refuses them, and one HTTP client would resolve them, the other not).
    _, url = server
    request = outgoing("GET", path, params, {})
    seen: list[str] = []

    def answer(sent: httpx.Request) -> httpx.Response:
        seen.append(sent.url.raw_path.decode())
        return httpx.Response(200)

    real, fake = wire(url), TransportWire(url, httpx.MockTransport(answer))
    try:
        echo = orjson.loads((await real.send("GET", request.target, [], b"")).body)
        await fake.send("GET", request.target, [], b"")
    finally:
        await real.close()
        await fake.close()
    assert seen == [echo["target"]] == [request.target]


async def test_a_compressed_answer_comes_back_decoded(server: tuple[Server, str]) -> None:
    _, url = server
    to = wire(url)
    try:
        answer = await to.send("GET", "/zipped", [], b"")
    finally:
        await to.close()
    assert answer.body == b"zipped"


async def test_a_closed_port_never_sent_the_request() -> None:
    to = wire(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(NotSent) as raised:
            await to.send("POST", "/echo/x", [], b"{}")
    finally:
        await to.close()
    assert not isinstance(raised.value, TimedOut)


async def test_a_silent_upstream_times_out_after_the_request_was_sent(server: tuple[Server, str]) -> None:
    _, url = server
    to = wire(url, timeout=0.2)
    try:
        with pytest.raises(TimedOut) as raised:
            await to.send("GET", "/slow", [], b"")
    finally:
        await to.close()
    assert not isinstance(raised.value, NotSent)


async def test_an_upstream_that_breaks_off_is_its_fault_not_a_request_never_sent(server: tuple[Server, str]) -> None:
    _, url = server
    to = wire(url)
    try:
        with pytest.raises(UpstreamFault) as raised:
            await to.send("GET", "/broken", [], b"")
    finally:
        await to.close()
    assert not isinstance(raised.value, NotSent | TimedOut)


@pytest.mark.parametrize("method", ["POST", "PATCH", "PUT", "DELETE"])
async def test_a_write_that_was_sent_is_sent_once(method: str) -> None:
    # The replica read the whole request, then died: the write may have been applied, so it must
    # not be written again on another connection, nor be taken for one never sent.
    async with hanging_up() as (upstream, url):
        to = wire(url)
        try:
            with pytest.raises(UpstreamFault) as raised:
                await to.send(method, "/api/v1/inventory/flour", [("Content-Type", "application/json")], b'{"add":5}')
        finally:
            await to.close()
    assert not isinstance(raised.value, NotSent)
    assert len(upstream.requests) == 1, f"{method} reached the upstream {len(upstream.requests)} times"


async def test_a_read_reaches_the_upstream_once_per_attempt() -> None:
    async with hanging_up() as (upstream, url):
        to = wire(url)
        try:
            with pytest.raises(UpstreamFault):
                await to.send("GET", "/api/v1/menu", [], b"")
        finally:
            await to.close()
    assert len(upstream.requests) == 1, f"one attempt reached the upstream {len(upstream.requests)} times"


async def test_a_header_that_cannot_be_written_is_unsendable(server: tuple[Server, str]) -> None:
    _, url = server
    to = wire(url)
    try:
        with pytest.raises(Unsendable):
            await to.send("GET", "/echo/x", [("X-Note", "a\r\nInjected: yes")], b"")
    finally:
        await to.close()


async def test_past_its_connections_the_pool_is_busy_not_the_upstream(server: tuple[Server, str]) -> None:
    upstream, url = server
    to = wire(url, timeout=0.2, connections=1)
    hanging = asyncio.create_task(to.send("GET", "/slow", [], b"", timeout=30))
    try:
        # the first request holds the only place
        await eventually(lambda: upstream.waiting >= 1, "the first request never arrived", 5, every=0.01)
        with pytest.raises(PoolBusy):
            await to.send("GET", "/echo/x", [], b"")
        upstream.release.set()
        assert (await hanging).body == b"late"
        assert (await to.send("GET", "/echo/x", [], b"")).status == 201, "the place is free again"
    finally:
        hanging.cancel()
        await to.close()


async def test_a_stream_comes_as_sent_and_outlives_the_deadline(server: tuple[Server, str]) -> None:
    upstream, url = server
    to = wire(url, timeout=0.2)
    try:
        stream = await to.open("/events", [("Accept", "text/event-stream")])
        assert stream.status == 200
        assert await anext(stream.chunks) == b"data: first\n\n"
        # A request waits out the deadline meanwhile; the quiet stream is still open after it.
        with pytest.raises(TimedOut):
            await to.send("GET", "/slow", [], b"")
        upstream.next_chunk.set()
        assert await anext(stream.chunks) == b"data: second\n\n"
        await stream.close()
    finally:
        await to.close()


async def test_a_stream_to_a_closed_port_was_never_sent() -> None:
    to = wire(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(NotSent):
            await to.open("/events", [])
    finally:
        await to.close()
