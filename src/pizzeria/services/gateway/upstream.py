"""Calls from the gateway to one service: a deadline on every call, retries for idempotent
reads only, and a circuit breaker per upstream that fails fast while the service is down.

Requests and streams have a pool of connections each: streams hold theirs for as long as they
last, and must never leave a request waiting for a connection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import orjson
from opentelemetry.trace import SpanKind

from pizzeria.kit import context, tracing
from pizzeria.kit.errors import LOAD_SHED_HEADER, BadRequest, ServiceUnavailable
from pizzeria.kit.logging import get_logger
from pizzeria.kit.resilience import BreakerState, CircuitBreaker, CircuitOpen

log = get_logger(__name__)

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
#: Answers that mean the upstream itself is in trouble (not the request): they count against
#: its breaker and a read is sent again. Any other answer, a 500 too, is the upstream's word.
UPSTREAM_TROUBLE = frozenset({502, 503, 504})
#: What goes wrong on the way to or from the upstream: it counts against its breaker. Not
#: `LocalProtocolError` (the request could not be written: the caller's fault), nor
#: `PoolTimeout` (no connection free in the gateway's own pool: the gateway is busy).
UPSTREAM_FAULTS = (
    httpx.ConnectTimeout,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)
#: An answer that says the upstream is alive but sheds load (a bounded queue is full): it
#: refused fast, as it should; its breaker does not count it and a read is not sent again.
OVERLOADED_HEADER = LOAD_SHED_HEADER.lower()


class UpstreamUnavailable(ServiceUnavailable):
    type_slug = "upstream-unavailable"
    title = "Upstream unavailable"


class GatewayBusy(ServiceUnavailable):
    type_slug = "gateway-busy"
    title = "Gateway busy"


@dataclass(frozen=True)
class Forwarded:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class Upstream:
    """One service behind the gateway."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout: float,
        retries: int,
        breaker: CircuitBreaker,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff: float = 0.05,
        connections: int = 200,
        stream_connections: int = 1000,
    ) -> None:
        self.name = name
        self.backoff = backoff
        self.base_url = base_url
        self.retries = retries
        self.breaker = breaker
        self.client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=min(50, connections)),
        )
        # Streams on a pool of their own: however many are open, requests find a connection.
        self.streams = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=stream_connections, max_keepalive_connections=0),
        )

    def state(self) -> str:
        return self.breaker.state.name.lower().replace("_", "-")

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Forwarded:
        """Forward one request; raise `UpstreamUnavailable` (503) when the service cannot answer."""
        with tracing.span(
            f"{method} {self.name}",
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": method, "server.address": self.name},
        ) as current:
            traceparent = context.traceparent.get()
            sent = {**(headers or {}), **({"traceparent": traceparent} if traceparent else {})}
            answer = await self._send(method, path, params=params, headers=sent, body=body)
            current.set_attribute("http.response.status_code", answer.status)
            return answer

    async def _send(
        self, method: str, path: str, *, params: list[tuple[str, str]] | None, headers: dict[str, str], body: bytes
    ) -> Forwarded:
        # Built before the breaker is asked: a request that cannot be built is the caller's fault.
        request = self._build(method, path, params=params, headers=headers, body=body)
        attempts = 1 + (self.retries if method in IDEMPOTENT else 0)
        outcome = await self._guarded(lambda: self._exchange(request, attempts))
        if isinstance(outcome, httpx.Response):
            return _forwarded(outcome)
        kind = "did not answer in time" if isinstance(outcome, httpx.TimeoutException) else "cannot be reached"
        log.warning("upstream call failed", upstream=self.name, path=path, error=repr(outcome))
        raise UpstreamUnavailable(f"{self.name} {kind}") from None

    def _build(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None,
        headers: dict[str, str] | None,
        body: bytes = b"",
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Request:
        try:
            url = self.client.base_url.join(path)
        except httpx.InvalidURL:
            raise BadRequest(f"the path {path[:200]!r} is not a valid URL path") from None
        if url.host != self.client.base_url.host:  # "//elsewhere/..." must never leave the upstream
            raise BadRequest(f"the path {path[:200]!r} is not a valid URL path")
        try:
            return self.client.build_request(
                method,
                path,
                params=tuple(params or ()),
                headers=headers,
                content=body,
                timeout=timeout if timeout is not None else self.client.timeout,
            )
        except (httpx.InvalidURL, UnicodeError, ValueError, TypeError) as exc:
            raise BadRequest(f"the request cannot be passed on: {str(exc)[:200]}") from None

    async def _guarded(
        self, exchange: Callable[[], Awaitable[httpx.Response | Exception]]
    ) -> httpx.Response | Exception:
        """Run one logical request through the breaker: it counts once, as a failure if its last
        outcome was an upstream fault or a 502/503/504, else as a success."""
        try:
            self.breaker.before_call()
        except CircuitOpen:
            raise self._circuit_open() from None
        try:
            outcome = await exchange()
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
            # The client refused to write the request: nothing reached the upstream.
            self.breaker.release()
            raise BadRequest(f"the request cannot be passed on: {str(exc)[:200]}") from None
        except BaseException:
            self.breaker.release()
            raise
        if isinstance(outcome, Exception) or _in_trouble(outcome):
            self.breaker.record_failure()
        else:
            self.breaker.record_success()
        return outcome

    async def _exchange(self, request: httpx.Request, attempts: int) -> httpx.Response | Exception:
        """Send the request, again (reads) while the upstream fails; the last answer or fault."""
        for attempt in range(1, attempts + 1):
            outcome: httpx.Response | Exception
            try:
                outcome = await self.client.send(request)
            except httpx.PoolTimeout:
                raise self._busy() from None
            except UPSTREAM_FAULTS as exc:
                outcome = exc
            else:
                if not _in_trouble(outcome):
                    return outcome
            if attempt == attempts or self.breaker.state is BreakerState.OPEN:
                return outcome
            await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def open_stream(
        self, path: str, *, params: list[tuple[str, str]] | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """GET a long-lived answer: the deadline covers connecting and the first bytes of the
        answer, not the stream, which lasts as long as the upstream keeps it open. The caller
        closes the response."""
        request = self._build(
            "GET", path, params=params, headers=headers, timeout=httpx.Timeout(self.client.timeout.connect, read=None)
        )

        async def exchange() -> httpx.Response | Exception:
            try:
                return await self.streams.send(request, stream=True)
            except httpx.PoolTimeout:
                raise self._busy() from None
            except UPSTREAM_FAULTS as exc:
                return exc

        outcome = await self._guarded(exchange)
        if isinstance(outcome, Exception):
            raise UpstreamUnavailable(f"{self.name} cannot be reached") from None
        return outcome

    def _circuit_open(self) -> UpstreamUnavailable:
        """Failing fast while the breaker is open: come back after its cool-down."""
        return UpstreamUnavailable(
            f"{self.name} is unavailable (circuit open); try again shortly",
            headers={"Retry-After": str(max(1, round(self.breaker.reset_timeout)))},
        )

    def _busy(self) -> GatewayBusy:
        """No connection to the upstream came free in time: the gateway's own congestion."""
        return GatewayBusy(
            f"the gateway has no connection free to {self.name}; try again shortly", headers={"Retry-After": "1"}
        )

    async def close(self) -> None:
        await self.client.aclose()
        await self.streams.aclose()


#: Headers that describe one hop, not the message: never forwarded (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
        "content-encoding",
    }
)


#: Upstream response headers the gateway sets itself, or that are meant for it alone.
OWN_HEADERS = frozenset({"x-request-id", "date", "server", OVERLOADED_HEADER})


def _in_trouble(response: httpx.Response) -> bool:
    """An answer that says the upstream cannot serve now (not a refusal to shed load)."""
    return response.status_code in UPSTREAM_TROUBLE and OVERLOADED_HEADER not in response.headers


def refused_detail(body: bytes) -> str:
    """The detail of a service's 401 problem (the caller's token refused)."""
    try:
        return str(orjson.loads(body).get("detail") or "the access token was refused")
    except (orjson.JSONDecodeError, AttributeError):
        return "the access token was refused"


def _forwarded(response: httpx.Response) -> Forwarded:
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in HOP_BY_HOP]
    return Forwarded(response.status_code, headers, response.content)
