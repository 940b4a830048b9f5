"""Structured JSON logs (structlog) with service, correlation id and masked PII."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson
import structlog

from pizzeria.kit import context

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# Not glued to letters, digits or hyphens: a run of digits inside a UUID is not a phone number.
_PHONE = re.compile(r"(?<![\w-])\+?\d[\d\s().-]{7,}\d(?![\w-])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_UUID = re.compile(r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})")


def mask_email(value: str) -> str:
    """`alice@example.com` → `a***@example.com`."""
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", value)


def mask_phone(value: str) -> str:
    """Keep only the last two digits of anything that looks like a phone number."""

    def repl(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        if len(digits) < 10 or _DATE.search(m.group(0)):  # dates and short codes are not phones
            return m.group(0)
        return "*" * (len(digits) - 2) + digits[-2:]

    # Ids are never phone numbers, even when they happen to be all digits.
    return "".join(part if i % 2 else _PHONE.sub(repl, part) for i, part in enumerate(_UUID.split(value)))


def mask_pii(value: Any) -> Any:
    """Mask emails and phone numbers anywhere inside strings, lists and dicts."""
    if isinstance(value, str):
        return mask_phone(mask_email(value)) if ("@" in value or any(c.isdigit() for c in value)) else value
    if isinstance(value, dict):
        return {k: mask_pii(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_pii(v) for v in value]
    return value


_SAFE_KEYS = {
    "timestamp",
    "level",
    "service",
    "correlation_id",
    "causation_id",
    "trace_id",
    "order_id",
    "message_id",
    "event",
    "logger",
    "request_id",
    "path",
    "route",
}


def _mask_processor(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if key == "event" or (key not in _SAFE_KEYS and not key.endswith("_id")):
            event[key] = mask_pii(value)
    return event


def _context_processor(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    cid = context.correlation_id.get()
    if cid and "correlation_id" not in event:
        event["correlation_id"] = cid
    if "trace_id" not in event and (trace_id := context.trace_id_of(context.traceparent.get())):
        event["trace_id"] = trace_id
    return event


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Route stdlib and structlog output through one JSON renderer, tagged with the service."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _context_processor,
        structlog.processors.format_exc_info,
        _mask_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # stdlib loggers (uvicorn, alembic, sqlalchemy) go through the same renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*processors[:-1], _add_service(service), _mask_processor],  # type: ignore[list-item]
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _add_service(service: str) -> Any:
    def processor(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", service)
        return event

    return processor


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; bind fields with `.bind(order_id=...)`."""
    return structlog.get_logger(name)
