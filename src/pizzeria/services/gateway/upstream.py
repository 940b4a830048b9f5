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
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote, urlencode

import httpx
import orjson
from opentelemetry.trace import SpanKind

from pizzeria.kit import context, tracing
from pizzeria.kit.errors import LOAD_SHED_HEADER, BadRequest, ServiceUnavailable
from pizzeria.kit.http_client import HttpAnswer
from pizzeria.kit.logging import get_logger
from pizzeria.kit.resilience import BreakerState, CircuitBreaker, CircuitOpen
from pizzeria.services.gateway.wire import (
    AiohttpWire,
    NotSent,
    PoolBusy,
    Stream,
    TimedOut,
    TransportWire,
    Unsendable,
    UpstreamFault,
    Wire,
)

log = get_logger(__name__)

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
#: Answers that mean the upstream itself is in trouble (not the request): they count against
#: its breaker and a read is sent again. Any other answer, a 500 too, is the upstream's word.
UPSTREAM_TROUBLE = frozenset({502, 503, 504})
#: An answer that says the upstream is alive but sheds load (a bounded queue is full): it
#: refused fast, as it should; its breaker does not count it and a read is not sent again.
OVERLOADED_HEADER = LOAD_SHED_HEADER.lower()

BREAKER_STATES = ("closed", "half-open", "open")
#: A path as it may go on the request line: RFC 3986 path characters, percent-escapes whole.
_PLAIN_PATH = re.compile(r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PATH_SAFE = "/%-._~!$&'()*+,;=:@"
#: A "." or ".." segment, as it came or escaped ("%2E"): what it means is the receiver's to say
#: (one HTTP client removes it with the segment before, another sends it as it is).
_DOT_SEGMENT = re.compile(r"/(?:\.|%2[Ee]){1,2}(?=/|$)")
#: A header's name (an RFC 9110 token) and value (visible ASCII, spaces and tabs).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")

Answered = TypeVar("Answered", HttpAnswer, Stream)
Outcome = HttpAnswer | Stream | UpstreamFault


class UpstreamUnavailable(ServiceUnavailable):
    type_slug = "upstream-unavailable"
    title = "Upstream unavailable"


class GatewayBusy(ServiceUnavailable):
    type_slug = "gateway-busy"
    title = "Gateway busy"


@dataclass(frozen=True)
class Forwarded:
    """An upstream's answer to pass on: its headers without the hop-by-hop ones, names in lower case."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request as every replica is sent it: checked and encoded once."""

    method: str
    target: str  # the path and query, as they go on the request line
    headers: list[tuple[str, str]]
    body: bytes = b""


def outgoing(
    method: str, path: str, params: Sequence[tuple[str, str]] | None, headers: Mapping[str, str], body: bytes = b""
) -> Outgoing:
    """The request to send; BadRequest if it cannot be sent (the caller's fault). A path is
    passed on as it came, its percent-escapes kept; what may not stand in a path is escaped.
    A path with a "." or ".." segment is refused: the upstream is sent the path it is meant to
    get, never one a dot segment turns into another (say an id of ".." in a path built from it)."""
    if not path.startswith("/") or path.startswith("//"):  # "//elsewhere/..." must never leave the upstream
        raise BadRequest(f"the path {path[:200]!r} is not a valid URL path")
    if _DOT_SEGMENT.search(path):
        raise BadRequest(f"the path {path[:200]!r} holds a '.' or '..' segment")
    if not _PLAIN_PATH.fullmatch(path):
        path = quote(_LONE_PERCENT.sub("%25", path), safe=_PATH_SAFE)
    target = f"{path}?{urlencode(params, quote_via=quote)}" if params else path
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
            raise BadRequest(f"the request cannot be passed on: the header {name[:100]!r} holds characters it may not")
    return Outgoing(method, target, list(headers.items()), body)


class Replica:
    """One address of a service: its wire, its breaker, the requests in flight to it."""

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
        # aiohttp's connections, without an HTTP client library's request and URL building on
        # top (bench/forward_bench.py measures the difference); tests hand in a transport that
        # answers in place.
        self.wire: Wire = (
            TransportWire(url, transport)
            if transport is not None
            else AiohttpWire(url, timeout=timeout, connections=connections, stream_connections=stream_connections)
        )

    def state(self) -> str:
        return self.breaker.state.name.lower().replace("_", "-")

    async def exchange(self, call: Callable[[Wire], Awaitable[Answered]]) -> Answered | UpstreamFault:
        """Send one attempt; the answer, or the upstream fault it met. No connection free in
        the gateway's own pool is `GatewayBusy`: the gateway's congestion, not the upstream's."""
        self.in_flight += 1
        try:
            return await call(self.wire)
        except PoolBusy:
            raise GatewayBusy(
                f"the gateway has no connection free to {self.url}; try again shortly", headers={"Retry-After": "1"}
            ) from None
        except UpstreamFault as exc:
            return exc
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        await self.wire.close()


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
        # Checked before any breaker is asked: a request that cannot be sent is the caller's fault.
        request = outgoing(method, path, params, headers, body)

        def send(wire: Wire) -> Awaitable[HttpAnswer]:
            return wire.send(request.method, request.target, request.headers, request.body)

        outcome = await self._guarded(send, attempts=1 + (self.retries if method in IDEMPOTENT else 0))
        if isinstance(outcome, HttpAnswer):
            return _forwarded(outcome)
        kind = "did not answer in time" if isinstance(outcome, TimedOut) else "cannot be reached"
        log.warning("upstream call failed", upstream=self.name, path=path, error=repr(outcome))
        raise UpstreamUnavailable(f"{self.name} {kind}") from None

    async def open_stream(
        self, path: str, *, params: list[tuple[str, str]] | None = None, headers: dict[str, str] | None = None
    ) -> Stream:
        """GET a long-lived answer: the deadline covers connecting, not the stream, which lasts
        as long as the upstream keeps it open. The caller closes it."""
        request = outgoing("GET", path, params, headers or {})

        def open_(wire: Wire) -> Awaitable[Stream]:
            return wire.open(request.target, request.headers)

        outcome = await self._guarded(open_, attempts=1)
        if isinstance(outcome, UpstreamFault):
            raise UpstreamUnavailable(f"{self.name} cannot be reached") from None
        return outcome

    async def _guarded(self, call: Callable[[Wire], Awaitable[Answered]], *, attempts: int) -> Answered | UpstreamFault:
        """Run one logical request over the replicas, through their breakers: it counts once
        against each replica it reached, as a failure if its last outcome there was an
        upstream fault or a 502/503/504, else as a success."""
        reached: dict[Replica, Outcome | None] = {}
        try:
            outcome = await self._attempts(call, attempts, reached)
        except Unsendable as exc:
            # The request could not be written: nothing reached the upstream.
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
            elif isinstance(last, UpstreamFault) or _in_trouble(last):
                replica.breaker.record_failure()
            else:
                replica.breaker.record_success()
        return outcome

    async def _attempts(
        self, call: Callable[[Wire], Awaitable[Answered]], attempts: int, reached: dict[Replica, Outcome | None]
    ) -> Answered | UpstreamFault:
        """Up to `attempts` attempts (reads may be retried), each on the least busy replica that
        takes calls, one not tried yet first. Once they are used up, a request that could not
        connect (nothing was sent) still goes to each replica not tried yet, whatever its method."""
        outcome: Answered | UpstreamFault | None = None
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
            outcome = await replica.exchange(call)
            reached[replica] = outcome
            used += 1
            if not isinstance(outcome, UpstreamFault) and not _in_trouble(outcome):
                return outcome
            if used >= attempts and not isinstance(outcome, NotSent):
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


def _in_trouble(answer: HttpAnswer | Stream) -> bool:
    """An answer that says the upstream cannot serve now (not a refusal to shed load)."""
    return answer.status in UPSTREAM_TROUBLE and not any(k.lower() == OVERLOADED_HEADER for k, _ in answer.headers)


def refused_detail(body: bytes) -> str:
    """The detail of a service's 401 problem (the caller's token refused)."""
    try:
        return str(orjson.loads(body).get("detail") or "the access token was refused")
    except (orjson.JSONDecodeError, AttributeError):
        return "the access token was refused"


def _forwarded(answer: HttpAnswer) -> Forwarded:
    named = ((k.lower(), v) for k, v in answer.headers)
    return Forwarded(answer.status, [(k, v) for k, v in named if k not in HOP_BY_HOP], answer.body)
