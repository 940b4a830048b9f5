"""Per-request / per-message context carried in contextvars: correlation and causation ids."""

from __future__ import annotations

from contextvars import ContextVar

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
causation_id: ContextVar[str | None] = ContextVar("causation_id", default=None)
traceparent: ContextVar[str | None] = ContextVar("traceparent", default=None)
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def trace_id_of(value: str | None) -> str | None:
    """The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), if it is one."""
    parts = (value or "").split("-")
    return parts[1] if len(parts) == 4 else None
