"""Spans follow `traceparent` wherever it goes: a span is the child of the one named by the
caller's header or the message's envelope, and what is sent while it lasts carries it on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from pizzeria.kit import context, tracing
from pizzeria.kit.settings import Settings

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = tracing.configure_tracing("unit", Settings(), exporter)
    yield exporter
    provider.force_flush()


def finished(exporter: InMemorySpanExporter) -> list[dict[str, object]]:
    tracing.shutdown_tracing()
    return [tracing.as_dict(s) for s in exporter.get_finished_spans()]


def test_a_span_continues_the_callers_trace_and_is_current_while_it_lasts(spans: InMemorySpanExporter) -> None:
    with tracing.span("GET /x", kind=SpanKind.SERVER, parent=CALLER) as server:
        inside = context.traceparent.get()
        with tracing.span("child"):
            pass
    assert context.traceparent.get() is None, "the current trace ends with the span"
    child, parent = finished(spans)
    assert parent["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert parent["parent_id"] == "b7ad6b7169203331"
    assert inside == tracing.traceparent_of(server)
    assert (child["trace_id"], child["parent_id"]) == (parent["trace_id"], parent["span_id"])
    assert (parent["kind"], parent["service"]) == ("server", "unit")


def test_an_empty_parent_starts_a_new_trace(spans: InMemorySpanExporter) -> None:
    token = context.traceparent.set(CALLER)
    try:
        with tracing.span("background work", parent=""):
            pass
    finally:
        context.traceparent.reset(token)
    [work] = finished(spans)
    assert work["parent_id"] is None
    assert work["trace_id"] != "0af7651916cd43dd8448eb211c80319c"


def test_messages_emitted_in_a_span_carry_it(spans: InMemorySpanExporter) -> None:
    from pizzeria.contracts.kitchen import TicketReady
    from pizzeria.messaging.envelope import Envelope

    with tracing.span("kitchen ticket ready", parent=CALLER) as work:
        envelope = Envelope.wrap(
            TicketReady(
                order_id="01a20000-0000-7000-8000-000000000001",
                ticket_id="01a20000-0000-7000-8000-000000000002",
                at="2026-11-22T10:00:00Z",
            ),
            source="/pizzeria/kitchen",
        )
    assert envelope.traceparent == tracing.traceparent_of(work)


def test_without_a_configured_provider_the_callers_trace_passes_through() -> None:
    tracing._Current.provider = None
    tracing._Current.tracer = trace.NoOpTracer()
    token = context.traceparent.set(CALLER)
    try:
        with tracing.span("untraced"):
            assert context.traceparent.get() == CALLER
    finally:
        context.traceparent.reset(token)


def test_a_failure_inside_a_span_marks_it_and_goes_on(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="no dough"), tracing.span("kitchen bake", parent=CALLER):
        raise ValueError("no dough")
    [failed] = finished(spans)
    assert failed["status"] == "error"
    [event] = spans.get_finished_spans()[0].events
    assert event.name == "exception"
    assert context.traceparent.get() is None


def test_a_cancellation_is_not_an_error(spans: InMemorySpanExporter) -> None:
    import asyncio

    with pytest.raises(asyncio.CancelledError), tracing.span("waiting", parent=CALLER):
        raise asyncio.CancelledError
    [cancelled] = finished(spans)
    assert cancelled["status"] == "unset"


@pytest.mark.parametrize(
    "parent",
    [
        "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper case
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # no trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # no span id
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # another version
        CALLER + "\n",
        CALLER[:-1],
        "not a traceparent",
    ],
)
def test_a_parent_that_is_not_a_traceparent_starts_a_new_trace(spans: InMemorySpanExporter, parent: str) -> None:
    with tracing.span("work", parent=parent):
        pass
    [work] = finished(spans)
    assert work["parent_id"] is None
    assert work["trace_id"] != "0af7651916cd43dd8448eb211c80319c"


def test_an_unsampled_caller_is_followed(spans: InMemorySpanExporter) -> None:
    with tracing.span("GET /x", parent=CALLER[:-2] + "00") as server:
        assert not server.is_recording()
        assert context.traceparent.get() == f"00-{CALLER[3:35]}-{server.get_span_context().span_id:016x}-00"
    assert finished(spans) == []
