"""The CloudEvents 1.0 envelope, in Kafka's binary content mode: attributes travel as `ce_*`
headers, the JSON data is the record value, the aggregate id is the record key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pizzeria.kit import context
from pizzeria.kit.clock import as_utc, utcnow
from pizzeria.kit.ids import new_id
from pizzeria.messaging.broker import OutgoingMessage, Record
from pizzeria.messaging.message import Message

CONTENT_TYPE = "application/json"
_REQUIRED = ("id", "source", "type", "specversion")


class MalformedMessage(ValueError):
    """A record that is not a valid CloudEvent: it can never be processed."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message with its CloudEvents attributes and our tracing extensions."""

    id: str
    source: str
    type: str
    data: bytes
    subject: str | None = None
    time: datetime = field(default_factory=utcnow)
    correlationid: str | None = None
    causationid: str | None = None
    traceparent: str | None = None
    specversion: str = "1.0"

    @classmethod
    def wrap(cls, message: Message, *, source: str) -> Envelope:
        """Envelope a new message, inheriting correlation and causation from the current
        request or message being handled."""
        message_id = new_id()
        return cls(
            id=message_id,
            source=source,
            type=message.type_name(),
            subject=message.message_key() or None,
            data=message.model_dump_json().encode(),
            correlationid=context.correlation_id.get() or message_id,
            causationid=context.causation_id.get(),
            traceparent=context.traceparent.get(),
        )

    def headers(self) -> dict[str, str]:
        headers = {
            "ce_id": self.id,
            "ce_source": self.source,
            "ce_type": self.type,
            "ce_specversion": self.specversion,
            "ce_time": self.time.isoformat(),
            "content-type": CONTENT_TYPE,
        }
        for name in ("subject", "correlationid", "causationid", "traceparent"):
            value = getattr(self, name)
            if value:
                headers[f"ce_{name}"] = value
        return headers

    def to_outgoing(self, topic: str) -> OutgoingMessage:
        return OutgoingMessage(topic=topic, key=self.subject, value=self.data, headers=self.headers())

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], value: bytes) -> Envelope:
        missing = [a for a in _REQUIRED if not headers.get(f"ce_{a}")]
        if missing:
            raise MalformedMessage(f"not a CloudEvent: missing {', '.join('ce_' + m for m in missing)}")
        if headers["ce_specversion"] != "1.0":
            raise MalformedMessage(f"unsupported CloudEvents specversion {headers['ce_specversion']!r}")
        try:
            time = as_utc(datetime.fromisoformat(headers["ce_time"])) if headers.get("ce_time") else utcnow()
        except ValueError as exc:
            raise MalformedMessage(f"bad ce_time: {exc}") from exc
        return cls(
            id=headers["ce_id"],
            source=headers["ce_source"],
            type=headers["ce_type"],
            data=value,
            subject=headers.get("ce_subject"),
            time=time,
            correlationid=headers.get("ce_correlationid"),
            causationid=headers.get("ce_causationid"),
            traceparent=headers.get("ce_traceparent"),
        )

    @classmethod
    def from_record(cls, record: Record) -> Envelope:
        return cls.from_headers(record.headers, record.value)
