"""CPU of observability per operation, as the services pay it: a span through `kit.tracing` with a
parent that is sampled and one that is not (at `TRACE_SAMPLE_RATIO=0.1`, nine in ten), for a
message a consumer handles, an HTTP request the middleware serves and a span of background work,
and the metric updates a handled message or request makes.

    python -m bench.obs_bench [--runs 20000] [--rounds 5]

Prints µs per operation, the least of `rounds` rounds of `runs` each. Spans go to a
`BatchSpanProcessor` whose exporter drops them (the export itself runs on its own thread)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind
from starlette.types import Receive, Scope, Send

from pizzeria.kit import metrics as kit_metrics
from pizzeria.kit import tracing
from pizzeria.kit.http import RequestContextMiddleware
from pizzeria.kit.settings import Settings
from pizzeria.messaging.consumer import ConsumerRunner, HandlerRegistry, Outcome, _MessageContext
from pizzeria.messaging.envelope import Envelope

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


class Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def best(op: Callable[[], None], runs: int, rounds: int) -> float:
    """µs per call, the least of the rounds."""
    took = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(runs):
            op()
        took.append((time.process_time() - started) / runs * 1e6)
    return min(took)


def envelope(traceparent: str) -> Envelope:
    return Envelope(
        id="01a20000-0000-7000-8000-000000000001",
        source="/pizzeria/orders",
        type="pizzeria.orders.OrderPlaced.v1",
        data=b"{}",
        subject="01a20000-0000-7000-8000-000000000002",
        traceparent=traceparent,
    )


def message_span(traceparent: str) -> Callable[[], None]:
    """What the consumer wraps around each message (its context, log binding and span)."""
    item = envelope(traceparent)

    def op() -> None:
        with _MessageContext(item, "orders"):
            pass

    return op


def work_span(traceparent: str) -> Callable[[], None]:
    """A span of background work continuing a stored trace (a charge, a ticket, a delivery)."""

    def op() -> None:
        with tracing.span(
            "kitchen ticket preparing", parent=traceparent, attributes={"order.id": "o-1", "ticket.id": "t-1"}
        ):
            pass

    return op


def nested_span(traceparent: str) -> Callable[[], None]:
    """A client span inside the current one (the gateway's call to a service)."""

    def op() -> None:
        with tracing.span("GET /x", parent=traceparent), tracing.span("GET orders", kind=SpanKind.CLIENT) as inner:
            inner.set_attribute("http.response.status_code", 200)

    return op


def http_request(traceparent: str) -> Callable[[], None]:
    """A request through the middleware (span, request id, context, duration histogram) to an
    app that answers at once; run by hand, without an event loop's overhead."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = RequestContextMiddleware(app)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/orders/x",
        "headers": [(b"traceparent", traceparent.encode()), (b"host", b"orders")],
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, object]) -> None:
        return None

    def op() -> None:
        coro = middleware(scope, receive, send)  # type: ignore[arg-type]
        with contextlib.suppress(StopIteration):
            coro.send(None)

    return op


def message_metrics() -> Callable[[], None]:
    """The consumer's metrics of a handled message: its handling time and its outcome."""
    runner = ConsumerRunner.__new__(ConsumerRunner)
    runner.group, runner._counted, runner._timed = "orders", {}, {}

    def op() -> None:
        runner._took("pizzeria.orders.OrderPlaced.v1", 0.001)
        runner._count(Outcome.PROCESSED)

    return op


def request_metric() -> Callable[[], None]:
    def op() -> None:
        kit_metrics.http_request_duration.labels("GET", "/orders/{order_id}", "200").observe(0.001)

    return op


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    assert HandlerRegistry  # the consumer module is what the services run
    provider = tracing.configure_tracing("bench", Settings(), Dropped())
    cases: list[tuple[str, Callable[[], None]]] = [
        ("message span, parent unsampled", message_span(UNSAMPLED)),
        ("message span, parent sampled", message_span(SAMPLED)),
        ("work span, parent unsampled", work_span(UNSAMPLED)),
        ("work span, parent sampled", work_span(SAMPLED)),
        ("server + client span, unsampled", nested_span(UNSAMPLED)),
        ("server + client span, sampled", nested_span(SAMPLED)),
        ("HTTP request middleware, unsampled", http_request(UNSAMPLED)),
        ("HTTP request middleware, sampled", http_request(SAMPLED)),
        ("message metrics (took + count)", message_metrics()),
        ("request histogram (labels + observe)", request_metric()),
    ]
    asyncio.set_event_loop(asyncio.new_event_loop())
    for name, op in cases:
        print(f"{name:<40} {best(op, args.runs, args.rounds):7.2f} µs")
    provider.shutdown()


if __name__ == "__main__":
    main()
