"""Outgoing HTTP: one small interface, on aiohttp in the running system and on an httpx transport
in tests (so a test can answer, fail or hang in place of the other side).

Why aiohttp: measured from one process sending to a local uvicorn with 50 requests in flight,
httpx spent 1.6 to 2.1 ms of CPU per request (its pool rescans every connection per request) and
aiohttp 0.1 ms. Payments calls the provider for every order, so that difference is a real share
of what an order costs.

The gateway forwards on aiohttp too, through a wire of its own (`services/gateway/wire.py`): it
tells the faults its breakers and retries need apart, and relays streams.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx
import orjson
from yarl import URL


class HttpError(Exception):
    """The other side could not be reached, or did not answer in time."""


class HttpTimeout(HttpError):
    """No answer within the deadline."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def header(self, name: str) -> str | None:
        """The first value of the header `name` (any case), if the answer has it."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


Params = Sequence[tuple[str, str]] | Mapping[str, str] | None


class HttpClient(Protocol):
    """Requests to one base URL, with a deadline each."""

    base_url: str

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> HttpAnswer: ...

    async def close(self) -> None: ...


def http_client(
    base_url: str, *, timeout: float, max_connections: int = 100, transport: httpx.AsyncBaseTransport | None = None
) -> HttpClient:
    """An aiohttp client, or (given a transport: tests) one that hands requests to it."""
    if transport is not None:
        return TransportClient(base_url, transport, timeout=timeout)
    return AiohttpClient(base_url, timeout=timeout, max_connections=max_connections)


@contextlib.contextmanager
def _faults_of(base_url: str, timeout: type[BaseException], unreachable: type[BaseException]) -> Iterator[None]:
    """The client library's faults as this module's: no answer in time, or no answer at all."""
    try:
        yield
    except timeout as exc:
        raise HttpTimeout(f"no answer from {base_url} in time") from exc
    except unreachable as exc:
        raise HttpError(f"cannot reach {base_url}: {exc}") from exc


def aiohttp_session(**options: Any) -> aiohttp.ClientSession:
    """An aiohttp session that sends each request once.

    aiohttp (3.14) sends a GET, HEAD, OPTIONS, TRACE, PUT or DELETE a second time when its
    connection breaks before an answer, even once the request was written: a PUT or DELETE that
    a server applied before it died would be applied twice, and a read would reach the server
    twice for each attempt its caller counts. No option of the session turns that off; the
    attribute its own test server sets does. tests/unit/test_kit_http_session.py fails if an
    aiohttp no longer has it, and tests/integration/test_http_client.py counts what reaches a
    server that hangs up."""
    session = aiohttp.ClientSession(**options)
    session._retry_connection = False
    return session


class AiohttpClient:
    """The running system's client: a keep-alive pool, a deadline per request."""

    def __init__(self, base_url: str, *, timeout: float, max_connections: int) -> None:
        self.base_url = base_url.rstrip("/")
        self._base = URL(self.base_url)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running event loop (aiohttp binds its session to it).
        if self._session is None:
            self._session = aiohttp_session(
                connector=aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=self._max_connections),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    def _url(self, path: str) -> URL:
        return self._base.with_path(self._base.path.rstrip("/") + path.split("?", 1)[0], encoded=True)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> HttpAnswer:
        with _faults_of(self.base_url, TimeoutError, aiohttp.ClientError):
            async with self._client().request(
                method,
                self._url(path),
                params=params or None,
                headers=headers,
                data=body or None,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                payload = await response.read()
                return HttpAnswer(response.status, list(response.headers.items()), payload)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class TransportClient:
    """Requests handed to an httpx transport (tests: `httpx.MockTransport`)."""

    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport, *, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=timeout)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> HttpAnswer:
        query = None if params is None else tuple(params.items() if isinstance(params, Mapping) else params)
        with _faults_of(self.base_url, httpx.TimeoutException, httpx.TransportError):
            response = await self._client.request(method, path, params=query, headers=dict(headers or {}), content=body)
        return HttpAnswer(response.status_code, list(response.headers.multi_items()), response.content)

    async def close(self) -> None:
        await self._client.aclose()
