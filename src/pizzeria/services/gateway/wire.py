"""How the gateway's requests reach one replica of an upstream: a small interface (`Wire`), on
aiohttp's connections in the running system and on an httpx transport in tests (so a test can
answer, fail or hang in place of the other side).

A wire carries a request the gateway has already checked and encoded (`upstream.Outgoing`): no
request or URL objects are built and checked again on the way, which is most of what an HTTP
client library costs per call (bench/forward_bench.py measures it). Its faults say what the
breakers and retries need to know: whether the upstream is in trouble (`UpstreamFault`), whether
the request never left (`NotSent`: it may go to another replica, a write too), whether the
deadline passed (`TimedOut`), or whether the gateway itself is the trouble (`PoolBusy`: no
connection free in its own pool; `Unsendable`: a request that cannot be written).

Requests and streams have pools of their own: streams hold their connections for as long as
they last, and must never leave a request waiting for one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
from yarl import URL

from pizzeria.kit.http_client import HttpAnswer, aiohttp_session

Headers = Sequence[tuple[str, str]]


class WireError(Exception):
    """No answer came back."""


class UpstreamFault(WireError):
    """Something went wrong on the way to the upstream or back: it counts against its breaker."""


class NotSent(UpstreamFault):
    """No connection was made: the request never left."""


class TimedOut(UpstreamFault):
    """No answer within the deadline."""


class ConnectTimedOut(NotSent, TimedOut):
    """No connection within the deadline."""


class PoolBusy(WireError):
    """No connection free in the gateway's own pool in time: the gateway is busy, not the upstream."""


class Unsendable(WireError):
    """The request cannot be written (the caller's fault): nothing reached the upstream."""


@dataclass(frozen=True, slots=True)
class Stream:
    """An answer whose body comes as the upstream sends it; `close` ends it (once read or not)."""

    status: int
    headers: list[tuple[str, str]]
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks])


class Wire(Protocol):
    """Requests to one replica. `target` is the path and query as they go on the request line."""

    async def send(
        self, method: str, target: str, headers: Headers, body: bytes, *, timeout: float | None = None
    ) -> HttpAnswer:
        """One request, its answer read whole. The wire's deadline bounds each step on its own
        (a place in the pool, connecting, each wait for more of the answer); `timeout`, given,
        is instead one deadline for the whole exchange once it has a place in the pool, which
        it waits for as long at most."""
        ...

    async def open(self, target: str, headers: Headers) -> Stream:
        """GET a long-lived answer: the deadline covers connecting, not the stream."""
        ...

    async def close(self) -> None: ...


def _latin1(raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


@contextlib.contextmanager
def _aiohttp_faults() -> Iterator[None]:
    """aiohttp's exceptions as the wire's faults."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise ConnectTimedOut(str(exc) or "no connection in time") from exc
    except aiohttp.ClientConnectorError as exc:
        raise NotSent(str(exc)) from exc
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise TimedOut(str(exc) or "no answer in time") from exc
    except (aiohttp.InvalidURL, ValueError) as exc:  # aiohttp refused to write the request
        raise Unsendable(str(exc)) from exc
    except aiohttp.ClientError as exc:
        raise UpstreamFault(str(exc) or type(exc).__name__) from exc


class AiohttpWire:
    """The running system's wire: keep-alive connections for requests, at most `connections`
    in flight (a request that waits longer than its deadline for one is `PoolBusy`), and a
    pool of up to `stream_connections` for streams, each closed when its stream ends."""

    def __init__(self, url: str, *, timeout: float, connections: int, stream_connections: int) -> None:
        self._base = url.rstrip("/")
        self._timeout = timeout
        self._timeouts = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        # No deadline on waiting for a free stream connection (aiohttp's `connect`, unset): the
        # gateway's `StreamLimits` admit no more streams in all than one replica's stream pool
        # holds, so a stream only waits for one while another's is being given back.
        self._stream_timeouts = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=None)
        self._slots = asyncio.Semaphore(connections)
        self._stream_connections = stream_connections
        self._requests: aiohttp.ClientSession | None = None
        self._streams: aiohttp.ClientSession | None = None

    @staticmethod
    def _session(connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
        return aiohttp_session(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # a proxy keeps no caller's cookies
            # The caller's headers as they came: none of aiohttp's own made up for them.
            skip_auto_headers=("User-Agent", "Accept", "Content-Type", "Accept-Encoding"),
        )

    def _for_requests(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running event loop (aiohttp binds its session to it).
        if self._requests is None:
            self._requests = self._session(aiohttp.TCPConnector(limit=0))  # the semaphore limits
        return self._requests

    def _for_streams(self) -> aiohttp.ClientSession:
        if self._streams is None:
            self._streams = self._session(aiohttp.TCPConnector(limit=self._stream_connections, force_close=True))
        return self._streams

    async def _take_slot(self, timeout: float) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # free: taken at once, no deadline to arm
            return
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolBusy("no connection free in time") from None

    async def send(
        self, method: str, target: str, headers: Headers, body: bytes, *, timeout: float | None = None
    ) -> HttpAnswer:
        await self._take_slot(self._timeout if timeout is None else timeout)
        try:
            with _aiohttp_faults():
                async with self._for_requests().request(
                    method,
                    URL(self._base + target, encoded=True),
                    headers=headers,
                    data=body or None,
                    timeout=self._timeouts if timeout is None else aiohttp.ClientTimeout(total=timeout),
                    allow_redirects=False,
                ) as response:
                    return HttpAnswer(response.status, _latin1(response.raw_headers), await response.read())
        finally:
            self._slots.release()

    async def open(self, target: str, headers: Headers) -> Stream:
        with _aiohttp_faults():
            response = await self._for_streams().request(
                "GET",
                URL(self._base + target, encoded=True),
                headers=headers,
                timeout=self._stream_timeouts,
                allow_redirects=False,
            )

        async def chunks() -> AsyncIterator[bytes]:
            with _aiohttp_faults():
                async for chunk in response.content.iter_any():
                    yield chunk

        async def close() -> None:
            response.close()

        return Stream(response.status, _latin1(response.raw_headers), chunks(), close)

    async def close(self) -> None:
        for session in (self._requests, self._streams):
            if session is not None:
                await session.close()
        self._requests = self._streams = None


@contextlib.contextmanager
def _httpx_faults() -> Iterator[None]:
    """httpx's exceptions (what a test's transport raises) as the wire's faults."""
    try:
        yield
    except httpx.PoolTimeout as exc:
        raise PoolBusy(str(exc)) from exc
    except httpx.ConnectTimeout as exc:
        raise ConnectTimedOut(str(exc)) from exc
    except httpx.ConnectError as exc:
        raise NotSent(str(exc)) from exc
    except httpx.TimeoutException as exc:
        raise TimedOut(str(exc)) from exc
    except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
        raise UpstreamFault(str(exc)) from exc
    except (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.InvalidURL, ValueError) as exc:
        raise Unsendable(str(exc)) from exc


class TransportWire:
    """Requests handed to an httpx transport in place of the network (tests: `httpx.MockTransport`,
    `httpx.ASGITransport`); no deadlines of its own."""

    def __init__(self, url: str, transport: httpx.AsyncBaseTransport) -> None:
        self._base = url.rstrip("/")
        self._transport = transport

    async def _exchange(self, method: str, target: str, headers: Headers, body: bytes) -> httpx.Response:
        with _httpx_faults():
            request = httpx.Request(method, self._base + target, headers=list(headers), content=body)
            return await self._transport.handle_async_request(request)

    async def send(
        self, method: str, target: str, headers: Headers, body: bytes, *, timeout: float | None = None
    ) -> HttpAnswer:
        response = await self._exchange(method, target, headers, body)
        try:
            with _httpx_faults():
                content = await response.aread()
        finally:
            await response.aclose()
        return HttpAnswer(response.status_code, _latin1(response.headers.raw), content)

    async def open(self, target: str, headers: Headers) -> Stream:
        response = await self._exchange("GET", target, headers, b"")
        return Stream(response.status_code, _latin1(response.headers.raw), response.aiter_bytes(), response.aclose)

    async def close(self) -> None:
        await self._transport.aclose()
