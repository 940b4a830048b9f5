"""Spans follow `traceparent` wherever it goes: a span is the child of the one named by the
caller's header or the message's envelope, and what is sent while it lasts carries it on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import APIRouter
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags

from pizzeria.contracts.kitchen import TicketReady
from pizzeria.kit import context, tracing
from pizzeria.kit.http import http_app
from pizzeria.kit.settings import Settings
from pizzeria.messaging.envelope import Envelope

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


def emitted() -> Envelope:
    """A message emitted now, as a service emits one (it carries the current traceparent)."""
    return Envelope.wrap(
        TicketReady(
            order_id="01a20000-0000-7000-8000-000000000001",
            ticket_id="01a20000-0000-7000-8000-000000000002",
            at="2026-11-22T10:00:00Z",
        ),
        source="/pizzeria/kitchen",
    )


def test_messages_emitted_in_a_span_carry_it(spans: InMemorySpanExporter) -> None:
    with tracing.span("kitchen ticket ready", parent=CALLER) as work:
        envelope = emitted()
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


def test_a_span_holds_exactly_what_it_was_given(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    given = {"messaging.consumer.group.name": "orders", "messaging.message.id": "m-1", "retry": 2, "ok": True}
    with (
        pytest.raises(ValueError, match="burnt"),
        tracing.span("orders process x", kind=SpanKind.CONSUMER, parent=CALLER, attributes=given) as outer,
        tracing.span("inner"),
    ):
        raise ValueError("burnt")
    tracing.shutdown_tracing()
    inner, failed = spans.get_finished_spans()
    assert (failed.name, failed.kind, dict(failed.attributes or {})) == ("orders process x", SpanKind.CONSUMER, given)
    assert failed.parent == SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True, trace_flags=TraceFlags(1)
    )
    assert failed.context is not None
    assert failed.context.trace_flags.sampled
    assert not failed.context.is_remote
    assert (failed.status.status_code, failed.status.description) == (StatusCode.ERROR, "ValueError: burnt")
    [event] = failed.events
    assert event.name == "exception"
    assert dict(event.attributes or {}) | {"exception.stacktrace": None} == {
        "exception.type": "ValueError",
        "exception.message": "burnt",
        "exception.escaped": "False",
        "exception.stacktrace": None,
    }
    assert 'raise ValueError("burnt")' in str((event.attributes or {})["exception.stacktrace"])
    # the inner span is a child of the outer one, read back from its `traceparent`, as a remote parent
    assert inner.parent is not None
    assert inner.parent.is_remote
    assert tracing.traceparent_of(outer) == f"00-{CALLER[3:35]}-{inner.parent.span_id:016x}-01"
    assert (inner.status.status_code, inner.kind, dict(inner.attributes or {})) == (
        StatusCode.ERROR,
        SpanKind.INTERNAL,
        {},
    )
    assert failed.start_time is not None
    assert failed.end_time is not None
    assert failed.start_time <= failed.end_time
    # the JSON line: these keys, in this order, with these values
    tracing.JsonLinesSpanExporter(tmp_path / "x.jsonl").export([failed])
    [line] = (tmp_path / "x.jsonl").read_bytes().splitlines()
    assert orjson.loads(line) == {
        "trace_id": CALLER[3:35],
        "span_id": f"{failed.context.span_id:016x}",
        "parent_id": CALLER[36:52],
        "name": "orders process x",
        "kind": "consumer",
        "service": "unit",
        "start_ns": failed.start_time,
        "end_ns": failed.end_time,
        "status": "error",
        "attributes": given,
    }
    assert list(orjson.loads(line)) == list(tracing.as_dict(failed))
    assert line == orjson.dumps(tracing.as_dict(failed))


def test_an_unsampled_span_is_current_and_its_children_follow_it(spans: InMemorySpanExporter) -> None:
    unsampled = CALLER[:-2] + "00"
    with tracing.span("GET /x", parent=unsampled, attributes={"a": 1}) as server, tracing.span("child") as child:
        assert not child.is_recording()
        assert child.get_span_context().trace_id == server.get_span_context().trace_id
        assert context.traceparent.get() == tracing.traceparent_of(child)
        assert context.traceparent.get() == f"00-{CALLER[3:35]}-{child.get_span_context().span_id:016x}-00"
    assert context.traceparent.get() is None
    assert finished(spans) == []


@pytest.mark.parametrize("flags", [f"{f:02x}" for f in range(0, 256, 2)])
def test_the_child_of_an_unsampled_parent_is_what_the_sdk_would_make_of_it(
    spans: InMemorySpanExporter, flags: str
) -> None:
    """Built without the SDK's sampler, the span is the one the SDK makes for such a parent:
    the parent's trace, a span id of its own, the same flags (not sampled; random-trace-id as
    the parent's), not recorded."""
    parent = CALLER[:-2] + flags
    provider = tracing._Current.provider
    assert provider is not None
    by_the_sdk = provider.get_tracer("check").start_span("x", context=tracing._parent_context(parent))
    with tracing.span("x", parent=parent) as fast:
        current = context.traceparent.get()
    assert not fast.is_recording()
    assert not by_the_sdk.is_recording()
    ours, theirs = fast.get_span_context(), by_the_sdk.get_span_context()
    assert (ours.trace_id, ours.trace_flags, ours.is_remote) == (theirs.trace_id, theirs.trace_flags, theirs.is_remote)
    assert ours.span_id not in (0, theirs.span_id, int(CALLER[36:52], 16))
    expected = "02" if int(flags, 16) & 2 else "00"
    assert current == tracing.traceparent_of(fast) == f"{CALLER[:36]}{ours.span_id:016x}-{expected}"
    assert tracing.traceparent_of(by_the_sdk) == f"{CALLER[:36]}{theirs.span_id:016x}-{expected}"
    assert finished(spans) == []


def test_an_unsampled_trace_is_carried_through_children_and_messages(spans: InMemorySpanExporter) -> None:
    """Nine in ten at 0.1: nothing exported, and everything sent meanwhile carries the trace id
    and the not-sampled flag, so the next service does not sample it either."""
    unsampled = CALLER[:-2] + "00"
    with (
        tracing.span("GET /x", kind=SpanKind.SERVER, parent=unsampled, attributes={"a": 1}) as server,
        tracing.span("GET orders", kind=SpanKind.CLIENT) as client,
    ):
        client.set_attribute("http.response.status_code", 200)
        client.update_name("GET orders /x")
        envelope = emitted()
    assert envelope.traceparent == tracing.traceparent_of(client)
    assert envelope.traceparent is not None
    assert tracing.TRACEPARENT.fullmatch(envelope.traceparent)
    assert envelope.traceparent[3:35] == CALLER[3:35]
    assert envelope.traceparent.endswith("-00")
    assert client.get_span_context().span_id != server.get_span_context().span_id
    # the next hop: the message's consumer span follows it, unsampled, in the same trace
    with tracing.span("orders process x", kind=SpanKind.CONSUMER, parent=envelope.traceparent) as consumer:
        assert not consumer.is_recording()
        assert consumer.get_span_context().trace_id == int(CALLER[3:35], 16)
    assert context.traceparent.get() is None
    assert finished(spans) == []


def test_a_failure_in_an_unsampled_span_goes_on_and_puts_the_current_trace_back(
    spans: InMemorySpanExporter,
) -> None:
    token = context.traceparent.set(CALLER[:-2] + "00")
    try:
        with pytest.raises(ValueError, match="no dough"), tracing.span("kitchen bake"):
            assert context.traceparent.get() != CALLER[:-2] + "00"
            raise ValueError("no dough")
        assert context.traceparent.get() == CALLER[:-2] + "00"
    finally:
        context.traceparent.reset(token)
    assert finished(spans) == []


def test_attributes_are_wanted_only_for_a_span_that_may_be_recorded(spans: InMemorySpanExporter) -> None:
    assert tracing.may_record(CALLER)
    assert tracing.may_record("")
    assert tracing.may_record(None)
    assert tracing.may_record("not a traceparent")
    assert not tracing.may_record(CALLER[:-2] + "00")
    assert not tracing.may_record(CALLER[:-2] + "02")
    assert tracing.may_record(CALLER[:-2] + "03")
    tracing._Current.provider = None
    tracing._Current.tracer = trace.NoOpTracer()
    assert not tracing.may_record(CALLER)


async def test_a_request_is_traced_once_even_when_a_global_provider_is_set(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI traces by itself through OpenTelemetry's global provider when one is set (by an
    auto-instrumentation, say); a service's requests are already traced here, so it must not."""
    router = APIRouter()

    @router.get("/probe")
    async def probe() -> dict[str, str]:
        return {}

    foreign = InMemorySpanExporter()
    global_provider = TracerProvider()
    global_provider.add_span_processor(SimpleSpanProcessor(foreign))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: global_provider)
    app = http_app(service="unit", routers=[router], settings=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://unit") as client:
        assert (await client.get("/probe")).status_code == 200
    assert foreign.get_finished_spans() == ()
    assert [s["name"] for s in finished(spans)] == ["GET /probe"]
