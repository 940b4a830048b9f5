"""Calls from the gateway to one service: a deadline on every call, retries for idempotent
reads only, and a circuit breaker per upstream that fails fast while the service is down."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
from opentelemetry.trace import SpanKind

from pizzeria.kit import context, tracing
from pizzeria.kit.errors import BadRequest, ServiceUnavailable
from pizzeria.kit.logging import get_logger
from pizzeria.kit.resilience import BreakerState, CircuitBreaker, CircuitOpen

log = get_logger(__name__)

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
#: Answers that mean the upstream itself is in trouble (not the request).
UPSTREAM_TROUBLE = frozenset({502, 503, 504})


class UpstreamUnavailable(ServiceUnavailable):
    type_slug = "upstream-unavailable"
    title = "Upstream unavailable"


class _Trouble(Exception):
    """An upstream answer that counts against its breaker (kept to retry or to return)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"upstream answered {response.status_code}")
        self.response = response


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
    ) -> None:
        self.name = name
        self.base_url = base_url
        self.retries = retries
        self.breaker = breaker
        self.client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
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
        try:
            url = self.client.base_url.join(path)
        except httpx.InvalidURL:
            raise BadRequest(f"the path {path[:200]!r} is not a valid URL path") from None
        if url.host != self.client.base_url.host:  # "//elsewhere/..." must never leave the upstream
            raise BadRequest(f"the path {path[:200]!r} is not a valid URL path")
        attempts = 1 + (self.retries if method in IDEMPOTENT else 0)
        for attempt in range(1, attempts + 1):
            try:
                response = await self.breaker.call(
                    lambda: self._once(method, path, params, headers, body),
                    is_failure=lambda e: isinstance(e, (httpx.TransportError, _Trouble)),
                )
            except CircuitOpen:
                raise self._circuit_open() from None
            except (httpx.TransportError, _Trouble) as exc:
                if attempt < attempts and self.breaker.state is BreakerState.CLOSED:
                    await asyncio.sleep(0.05 * 2 ** (attempt - 1))
                    continue
                if isinstance(exc, _Trouble):  # the service's own answer says what happened
                    return _forwarded(exc.response)
                kind = "did not answer in time" if isinstance(exc, httpx.TimeoutException) else "cannot be reached"
                log.warning("upstream call failed", upstream=self.name, path=path, error=repr(exc))
                raise UpstreamUnavailable(f"{self.name} {kind}") from None
            return _forwarded(response)
        raise AssertionError("unreachable")

    async def open_stream(
        self, path: str, *, params: list[tuple[str, str]] | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """GET a long-lived answer: the deadline covers connecting and the first bytes of the
        answer, not the stream, which lasts as long as the upstream keeps it open. The caller
        closes the response."""
        request = self.client.build_request(
            "GET",
            path,
            params=tuple(params or ()),
            headers=headers,
            timeout=httpx.Timeout(self.client.timeout.connect, read=None),
        )
        try:
            return await self.breaker.call(
                lambda: self.client.send(request, stream=True), is_failure=lambda e: isinstance(e, httpx.TransportError)
            )
        except CircuitOpen:
            raise self._circuit_open() from None
        except httpx.TransportError:
            raise UpstreamUnavailable(f"{self.name} cannot be reached") from None

    def _circuit_open(self) -> UpstreamUnavailable:
        """Failing fast while the breaker is open: come back after its cool-down."""
        return UpstreamUnavailable(
            f"{self.name} is unavailable (circuit open); try again shortly",
            headers={"Retry-After": str(max(1, round(self.breaker.reset_timeout)))},
        )

    async def _once(
        self, method: str, path: str, params: list[tuple[str, str]] | None, headers: dict[str, str] | None, body: bytes
    ) -> httpx.Response:
        response = await self.client.request(method, path, params=tuple(params or ()), headers=headers, content=body)
        if response.status_code in UPSTREAM_TROUBLE or response.status_code >= 500:
            raise _Trouble(response)
        return response

    async def close(self) -> None:
        await self.client.aclose()


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


def _forwarded(response: httpx.Response) -> Forwarded:
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in HOP_BY_HOP]
    return Forwarded(response.status_code, headers, response.content)
