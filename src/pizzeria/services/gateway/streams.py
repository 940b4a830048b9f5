"""Long-lived answers (server-sent events) relayed by the gateway, within limits.

A stream holds a connection to its upstream for as long as the caller listens. Streams have a
pool of connections of their own (`Upstream.open_stream`), so however many are open, ordinary
requests never wait for a connection; the gateway holds at most as many streams as that pool
has connections (503 beyond, no wait), and one caller at most `GATEWAY_STREAMS_PER_USER` of
them (429 beyond). A refusal here says nothing about the upstream: no breaker counts it.

The counts are this process's: each gateway process guards its own connections.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from pizzeria.kit.errors import ServiceUnavailable, TooManyRequests
from pizzeria.services.gateway.upstream import HOP_BY_HOP, OWN_HEADERS, Upstream
from pizzeria.services.gateway.wire import Stream

#: When a refused caller may try again (seconds): streams end when their order does, so there
#: is no better answer than a short while.
STREAM_RETRY_AFTER_S = 5


class TooManyStreams(TooManyRequests):
    type_slug = "too-many-streams"
    title = "Too many open streams"


class StreamsBusy(ServiceUnavailable):
    type_slug = "streams-busy"
    title = "No room for another stream"


class StreamLimits:
    """Open streams, per caller and in all."""

    def __init__(self, *, per_caller: int, total: int) -> None:
        self.per_caller = per_caller
        self.total = total
        self._open: Counter[str] = Counter()

    def open(self, caller: str) -> None:
        """Count a stream of `caller`'s; refuse it when a limit is reached."""
        retry_after = {"Retry-After": str(STREAM_RETRY_AFTER_S)}
        if self._open[caller] >= self.per_caller:
            raise TooManyStreams(
                f"at most {self.per_caller} open streams per caller; close one, or try again later",
                headers=retry_after,
            )
        if self._open.total() >= self.total:
            raise StreamsBusy("the gateway holds as many streams as it can; try again shortly", headers=retry_after)
        self._open[caller] += 1

    def close(self, caller: str) -> None:
        self._open[caller] -= 1
        if self._open[caller] <= 0:
            del self._open[caller]


class RelayedStream(StreamingResponse):
    """The upstream's stream passed on as it comes; whatever ends it (the upstream, the caller
    going away, an error), the upstream's answer is closed and `release` called, once."""

    def __init__(self, answer: Stream, release: Callable[[], None]) -> None:
        super().__init__(answer.chunks, status_code=200)
        self._answer = answer
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._answer.close()
            finally:
                self._release()


async def relay_stream(
    upstream: Upstream,
    path: str,
    params: list[tuple[str, str]],
    headers: dict[str, str],
    *,
    limits: StreamLimits,
    caller: str,
) -> Response:
    """Pass a server-sent event stream on as it comes, counted against the caller's and the
    gateway's limits while it lasts; an error answer is passed on whole."""
    limits.open(caller)
    try:
        answer = await upstream.open_stream(path, params=params, headers=headers)
    except BaseException:
        limits.close(caller)
        raise
    kept = [(k, v) for k, v in answer.headers if k.lower() not in HOP_BY_HOP | OWN_HEADERS]
    response: Response
    if answer.status == 200:
        response = RelayedStream(answer, lambda: limits.close(caller))
    else:
        try:
            body = await answer.read()
        finally:
            await answer.close()
            limits.close(caller)
        response = Response(content=body, status_code=answer.status)
    for name, value in kept:
        response.raw_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    return response
