"""Calls from the gateway to one service, over its replicas: a deadline on every call, retries
for idempotent reads only, and a circuit breaker per replica that fails fast while it is down.

Requests are spread over the replicas: each goes to the least busy replica whose breaker lets
it through (ties in turn). A replica's own breaker keeps it out while it is down, so one dead
replica costs the service nothing but the requests that found it dead; one breaker for the whole
service would instead fail the healthy replicas with it once enough requests found the dead one.
A retried read goes to another replica when there is one; a write is never sent twice, but one
that could not connect (nothing was sent) goes to the next replica.

Each replica has a pool of connections for requests and one for streams: streams hold theirs
for as long as they last, and must never leave a request waiting for a connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
import orjson
from opentelemetry.trace import SpanKind

from pizzeria.kit import context, tracing
from pizzeria.kit.errors import LOAD_SHED_HEADER, BadRequest, ServiceUnavailable
from pizzeria.kit.http_client import AiohttpTransport
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
#: Faults that mean the request never left: no connection was made. Any request, a write too,
#: may then go to another replica.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)

Outcome = httpx.Response | Exception
BREAKER_STATES = ("closed", "half-open", "open")


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


class Replica:
    """One address of a service: its connections, its breaker, the requests in flight to it."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        breaker: CircuitBreaker,
        transport: httpx.AsyncBaseTransport | None = None,
        connections: int = 200,
        stream_connections: int = 1000,
    ) -> None:
        self.url = url
        self.breaker = breaker
        self.in_flight = 0
        # Requests on aiohttp's connections (httpx's own pool costs ten times the CPU per call
        # under load: docs/performance.md); tests hand in a transport that answers in place.
        self.client = httpx.AsyncClient(
            base_url=url,
            timeout=timeout,
            transport=transport if transport is not None else AiohttpTransport(max_connections=connections),
        )
        # Streams on a pool of their own: however many are open, requests find a connection.
        self.streams = httpx.AsyncClient(
            base_url=url,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=stream_connections, max_keepalive_connections=0),
        )

    def state(self) -> str:
        return self.breaker.state.name.lower().replace("_", "-")

    def build(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None,
        headers: dict[str, str] | None,
        body: bytes = b"",
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Request:
        """The request for this replica; BadRequest if it cannot be built (the caller's fault)."""
        base = self.client.base_url
        try:
            url = base.join(path)
        except httpx.InvalidURL:
            raise BadRequest(f"the path {path[:200]!r} is not a valid URL path") from None
        if (url.host, url.port) != (base.host, base.port):  # "//elsewhere/..." must never leave the upstream
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

    async def exchange(self, request: httpx.Request, *, stream: bool = False) -> Outcome:
        """Send one attempt; the answer, or the upstream fault it met. No connection free in
        the gateway's own pool is `GatewayBusy`: the gateway's congestion, not the upstream's."""
        self.in_flight += 1
        try:
            return await (self.streams if stream else self.client).send(request, stream=stream)
        except httpx.PoolTimeout:
            raise GatewayBusy(
                f"the gateway has no connection free to {self.url}; try again shortly", headers={"Retry-After": "1"}
            ) from None
        except UPSTREAM_FAULTS as exc:
            return exc
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        await self.client.aclose()
        await self.streams.aclose()


Build = Callable[[Replica], httpx.Request]


class Upstream:
    """One service behind the gateway: every replica of it."""

    def __init__(self, name: str, replicas: Sequence[Replica], *, retries: int, backoff: float = 0.05) -> None:
        if not replicas:
            raise ValueError(f"{name}: an upstream needs at least one replica")
        self.name = name
        self.replicas = list(replicas)
        self.retries = retries
        self.backoff = backoff
        self._turn = 0

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    def state(self) -> str:
        """The service's breaker state as traffic sees it: the best of its replicas' (closed
        while any replica takes requests, open once none does)."""
        return min((r.state() for r in self.replicas), key=BREAKER_STATES.index)

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
        def build(replica: Replica) -> httpx.Request:
            return replica.build(method, path, params=params, headers=headers, body=body)

        # Built before any breaker is asked: a request that cannot be built is the caller's fault.
        build(self.replicas[0])
        idempotent = method in IDEMPOTENT
        outcome = await self._guarded(build, attempts=1 + (self.retries if idempotent else 0))
        if isinstance(outcome, httpx.Response):
            return _forwarded(outcome)
        kind = "did not answer in time" if isinstance(outcome, httpx.TimeoutException) else "cannot be reached"
        log.warning("upstream call failed", upstream=self.name, path=path, error=repr(outcome))
        raise UpstreamUnavailable(f"{self.name} {kind}") from None

    async def open_stream(
        self, path: str, *, params: list[tuple[str, str]] | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """GET a long-lived answer: the deadline covers connecting and the first bytes of the
        answer, not the stream, which lasts as long as the upstream keeps it open. The caller
        closes the response."""

        def build(replica: Replica) -> httpx.Request:
            timeout = httpx.Timeout(replica.client.timeout.connect, read=None)
            return replica.build("GET", path, params=params, headers=headers, timeout=timeout)

        build(self.replicas[0])
        outcome = await self._guarded(build, attempts=1, stream=True)
        if isinstance(outcome, Exception):
            raise UpstreamUnavailable(f"{self.name} cannot be reached") from None
        return outcome

    async def _guarded(self, build: Build, *, attempts: int, stream: bool = False) -> Outcome:
        """Run one logical request over the replicas, through their breakers: it counts once
        against each replica it reached, as a failure if its last outcome there was an
        upstream fault or a 502/503/504, else as a success."""
        reached: dict[Replica, Outcome | None] = {}
        try:
            outcome = await self._attempts(build, attempts, reached, stream=stream)
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
            # The client refused to write the request: nothing reached the upstream.
            for replica in reached:
                replica.breaker.release()
            raise BadRequest(f"the request cannot be passed on: {str(exc)[:200]}") from None
        except BaseException:
            for replica in reached:
                replica.breaker.release()
            raise
        for replica, last in reached.items():
            if last is None:
                replica.breaker.release()
            elif isinstance(last, Exception) or _in_trouble(last):
                replica.breaker.record_failure()
            else:
                replica.breaker.record_success()
        return outcome

    async def _attempts(
        self, build: Build, attempts: int, reached: dict[Replica, Outcome | None], *, stream: bool
    ) -> Outcome:
        """Up to `attempts` attempts (reads may be retried), each on the least busy replica that
        takes calls, one not tried yet first. Once they are used up, a request that could not
        connect (nothing was sent) still goes to each replica not tried yet, whatever its method."""
        outcome: Outcome | None = None
        used = 0
        while True:
            replica = self._next(reached, fresh_only=used >= attempts)
            if replica is None:
                if outcome is None:
                    raise self._circuit_open()
                return outcome
            if replica in reached:  # the same replica again: give it a moment
                await asyncio.sleep(self.backoff * 2 ** (used - 1))
            reached[replica] = None
            outcome = await replica.exchange(build(replica), stream=stream)
            reached[replica] = outcome
            used += 1
            if isinstance(outcome, httpx.Response) and not _in_trouble(outcome):
                return outcome
            if used >= attempts and not isinstance(outcome, NOT_SENT):
                return outcome

    def _next(self, reached: dict[Replica, Outcome | None], *, fresh_only: bool) -> Replica | None:
        """The replica for the next attempt, its breaker asked (a replica this request already
        reached was asked before): an untried one first, the least busy, ties in turn; None
        when no replica takes calls (or, `fresh_only`, no untried one does)."""
        count = len(self.replicas)
        start, self._turn = self._turn, (self._turn + 1) % count
        turn = [self.replicas[(start + i) % count] for i in range(count)]
        fresh = sorted((r for r in turn if r not in reached), key=lambda r: r.in_flight)
        for replica in fresh:
            try:
                replica.breaker.before_call()
            except CircuitOpen:
                continue
            return replica
        if fresh_only:
            return None
        again = [r for r in turn if r in reached and r.breaker.state is not BreakerState.OPEN]
        return min(again, key=lambda r: r.in_flight, default=None)

    def _circuit_open(self) -> UpstreamUnavailable:
        """Failing fast while every replica's breaker is open: come back after its cool-down."""
        reset = min(r.breaker.reset_timeout for r in self.replicas)
        return UpstreamUnavailable(
            f"{self.name} is unavailable (circuit open); try again shortly",
            headers={"Retry-After": str(max(1, round(reset)))},
        )

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.close()


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
