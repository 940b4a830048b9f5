"""Traces with OpenTelemetry: one order is one trace, from the gateway through every service and
every message to the last notification.

Spans are started for each HTTP request (server), each call from the gateway to a service
(client), each message a consumer handles (consumer) and each piece of background work that
continues a stored trace (a charge, a ticket, a delivery). The W3C `traceparent` of the current
span is kept in `kit.context.traceparent`: outgoing HTTP calls send it and every message emitted
carries it in its envelope, so the next span, in whichever process, is its child.

Export: OTLP over HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; otherwise one JSON object per
line in `var/traces/<service>.jsonl`; tests may pass their own exporter (in memory).
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Mapping, Sequence
from contextvars import Token
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from pizzeria.kit import context
from pizzeria.kit.settings import Settings

#: A W3C `traceparent` this system continues: version 00, ids not all zero, lower-case hex.
TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")


class _Current:
    """The process's tracer provider, once configured, and its tracer (asking the provider for a
    tracer per span is not free: it builds and checks its scope every time)."""

    provider: TracerProvider | None = None
    tracer: trace.Tracer = trace.NoOpTracer()


class JsonLinesSpanExporter(SpanExporter):
    """Finished spans appended to a file, one JSON object per line (when no collector is set)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = b"".join([orjson.dumps(as_dict(s), option=orjson.OPT_APPEND_NEWLINE) for s in spans])
        with self._lock, self.path.open("ab") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


#: Kinds and status codes as they are written (`SpanKind.SERVER` is "server"), looked up once.
_KINDS = {kind: kind.name.lower() for kind in SpanKind}
_STATUSES = {code: code.name.lower() for code in StatusCode}


def as_dict(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as plain data: ids in hex, as `traceparent` writes them."""
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    attributes = span.attributes or {}
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent else None,
        "name": span.name,
        "kind": _KINDS[span.kind],
        "service": span.resource.attributes.get("service.name"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": _STATUSES[span.status.status_code],
        # the SDK's attributes copy their own dict at once (`dict(...)` reads them key by key)
        "attributes": attributes.copy() if isinstance(attributes, MappingProxyType | dict) else dict(attributes),
    }


def configure_tracing(service: str, settings: Settings, exporter: SpanExporter | None = None) -> TracerProvider:
    """The process's tracer provider (one service is one process; in-process tests configure
    again and the last one wins)."""
    if exporter is None:
        if settings.otel_exporter_otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* from the environment
        else:
            exporter = JsonLinesSpanExporter(settings.var_dir / "traces" / f"{service}.jsonl")
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "pizzeria"}),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    if _Current.provider is not None:
        _Current.provider.shutdown()
    _Current.provider = provider
    _Current.tracer = provider.get_tracer("pizzeria")
    return provider


def shutdown_tracing() -> None:
    """Export what is left (at the end of the process)."""
    if _Current.provider is not None:
        _Current.provider.force_flush(5_000)


def _tracer() -> trace.Tracer:
    return _Current.tracer


def traceparent_of(span: Span) -> str | None:
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    # printf-style: cheaper than an f-string with three format specs, once per span
    return "00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, ctx.trace_flags)  # noqa: UP031


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> _Scope:
    """A span that is the child of `parent` (a `traceparent`; default: the current one) and
    is the current one while it lasts, so what is sent meanwhile carries it on; it starts when
    the `with` is entered.

    "Current" is `kit.context.traceparent`, which every outgoing call and message reads: the
    span is not attached to OpenTelemetry's own context (nothing here reads it, and attaching
    costs a third of a span), and the parent is read from its text directly."""
    return _Scope(name, kind, parent, attributes)


class _Scope:
    """`with span(...)`: a class rather than a generator, which costs a span a few objects and
    calls more for nothing."""

    __slots__ = ("_attributes", "_current", "_kind", "_name", "_parent", "_token")

    _current: Span

    def __init__(self, name: str, kind: SpanKind, parent: str | None, attributes: Mapping[str, Any] | None) -> None:
        self._name = name
        self._kind = kind
        self._parent = parent
        self._attributes = attributes
        self._token: Token[str | None] | None = None

    def __enter__(self) -> Span:
        parent = self._parent
        if parent is None:
            parent = context.traceparent.get()
        if parent and _Current.provider is not None and (flags := _unsampled_flags(parent)) is not None:
            # The parent was not sampled: the provider's sampler (parent-based) would drop this
            # span too and hand back a span that only carries its context on; that is built
            # here directly, without a sampler, a context or attributes.
            unsampled = self._current = _UnsampledSpan(parent, flags)
            self._token = context.traceparent.set(unsampled.traceparent)
            return unsampled
        current = self._current = _tracer().start_span(
            self._name, context=_parent_context(parent), kind=self._kind, attributes=self._attributes
        )
        traceparent = traceparent_of(current)
        if traceparent:
            self._token = context.traceparent.set(traceparent)
        return current

    def __exit__(self, _type: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None) -> None:
        current = self._current
        try:
            # not BaseException: a cancellation or an exit is not an error
            if isinstance(exc, Exception) and current.is_recording():
                current.record_exception(exc)
                current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            if self._token is not None:
                context.traceparent.reset(self._token)
            current.end()


def may_record(parent: str | None) -> bool:
    """Whether a span, the child of `parent` (a `traceparent`), may be recorded: not when no
    provider is configured or the parent was not sampled (a caller can then leave out what it
    would only compute for the span's attributes)."""
    return _Current.provider is not None and not (parent and _unsampled_flags(parent) is not None)


def _unsampled_flags(traceparent: str) -> str | None:
    """The flags of the child of `traceparent` when that is a traceparent whose sampled flag is
    not set, as the SDK writes them for the span it drops: not sampled, and the random-trace-id
    flag as the parent's (W3C Trace Context level 2). None otherwise."""
    if len(traceparent) != 55 or traceparent[54] not in "02468ace" or TRACEPARENT.fullmatch(traceparent) is None:
        return None
    return "02" if traceparent[54] in "2367abef" else "00"


class _UnsampledSpan(NonRecordingSpan):
    """The child of a parent that was not sampled: a new span id in the parent's trace, not
    recorded; its `SpanContext` is only made when asked for (nothing in the services asks)."""

    def __init__(self, parent: str, flags: str) -> None:
        span_id = random.getrandbits(64)
        while not span_id:
            span_id = random.getrandbits(64)
        # printf-style: cheaper than an f-string with a format spec
        self.traceparent = "%s%016x-%s" % (parent[:36], span_id, flags)  # noqa: UP031

    def get_span_context(self) -> SpanContext:
        found: SpanContext | None = self.__dict__.get("_context")
        if found is None:
            traceparent = self.traceparent
            found = self._context = SpanContext(
                int(traceparent[3:35], 16),
                int(traceparent[36:52], 16),
                is_remote=False,
                trace_flags=TraceFlags(int(traceparent[53:], 16)),
            )
        return found

    def __repr__(self) -> str:
        return f"NonRecordingSpan({self.get_span_context()!r})"


def _parent_context(traceparent: str | None) -> Context | None:
    """The context of a W3C `traceparent`, None when it is empty or not one (the span then
    starts a new trace)."""
    if not traceparent or not TRACEPARENT.fullmatch(traceparent):
        return None
    remote = SpanContext(
        int(traceparent[3:35], 16),
        int(traceparent[36:52], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(traceparent[53:], 16)),
    )
    return trace.set_span_in_context(NonRecordingSpan(remote))
