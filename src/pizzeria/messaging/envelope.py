"""The CloudEvents 1.0 envelope, in Kafka's binary content mode: attributes travel as `ce_*`
headers, the JSON data is the record value, the aggregate id is the record key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pizzeria.kit import context
from pizzeria.kit.clock import as_utc, utcnow
from pizzeria.kit.frozen import quick_init
from pizzeria.kit.ids import new_id
from pizzeria.kit.tracing import TRACEPARENT
from pizzeria.messaging.broker import OutgoingMessage, Record
from pizzeria.messaging.message import Message

CONTENT_TYPE = "application/json"
_REQUIRED = ("id", "source", "type", "specversion")
#: The longest value of each attribute this system keeps (the columns of the inbox, the dead
#: letters and the audit log hold no more).
_LIMITS = {
    "id": 64,
    "source": 200,
    "type": 200,
    "specversion": 8,
    "subject": 255,
    "correlationid": 64,
    "causationid": 64,
}
#: (header, limit) of each attribute, in the order `from_headers` unpacks them.
_FAST = tuple((f"ce_{name}", limit) for name, limit in _LIMITS.items())
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class MalformedMessage(ValueError):
    """A record that is not a valid CloudEvent: it can never be processed."""


@quick_init
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
        # the optional attributes, when there, in this order
        if self.subject:
            headers["ce_subject"] = self.subject
        if self.correlationid:
            headers["ce_correlationid"] = self.correlationid
        if self.causationid:
            headers["ce_causationid"] = self.causationid
        if self.traceparent:
            headers["ce_traceparent"] = self.traceparent
        return headers

    def to_outgoing(self, topic: str) -> OutgoingMessage:
        return OutgoingMessage(topic, self.data, self.subject, self.headers())  # (topic, value, key, headers)

    @classmethod
    def from_headers(cls, headers: Mapping[str, object], value: bytes) -> Envelope:
        """The envelope of a record's headers; `MalformedMessage` (never anything else) when
        they are not a CloudEvent this system can keep: an attribute missing, not text, too
        long for the columns it is kept in, or holding control characters."""
        # Every consumer reads every record's envelope: the usual record (its attributes
        # printable ASCII within their limits) takes one cheap look per attribute; any other
        # is read by `_from_headers_checked`, which says what is wrong with it.
        get = headers.get
        found: list[str | None] = []
        for key, limit in _FAST:
            attribute = get(key)
            if attribute is None or attribute == "":
                found.append(None)
            elif type(attribute) is str and len(attribute) <= limit and attribute.isascii() and attribute.isprintable():
                found.append(attribute)
            else:
                return cls._from_headers_checked(headers, value)
        id_, source, type_, specversion, subject, correlationid, causationid = found
        if not (id_ and source and type_ and specversion == "1.0"):
            return cls._from_headers_checked(headers, value)
        traceparent = get("ce_traceparent")
        return cls(
            id_,
            source,
            type_,
            value,
            subject,
            _time(get("ce_time")),
            correlationid,
            causationid,
            # W3C Trace Context: a traceparent that is not one starts a new trace.
            traceparent if isinstance(traceparent, str) and TRACEPARENT.match(traceparent) else None,
        )

    @classmethod
    def _from_headers_checked(cls, headers: Mapping[str, object], value: bytes) -> Envelope:
        missing = [a for a in _REQUIRED if not headers.get(f"ce_{a}")]
        if missing:
            raise MalformedMessage(f"not a CloudEvent: missing {', '.join('ce_' + m for m in missing)}")
        attributes = {name: _attribute(headers, name, limit) for name, limit in _LIMITS.items()}
        if attributes["specversion"] != "1.0":
            raise MalformedMessage(f"unsupported CloudEvents specversion {attributes['specversion']!r}")
        traceparent = headers.get("ce_traceparent")
        return cls(
            id=attributes["id"] or "",
            source=attributes["source"] or "",
            type=attributes["type"] or "",
            data=value,
            subject=attributes["subject"],
            time=_time(headers.get("ce_time")),
            correlationid=attributes["correlationid"],
            causationid=attributes["causationid"],
            # W3C Trace Context: a traceparent that is not one starts a new trace.
            traceparent=traceparent if isinstance(traceparent, str) and TRACEPARENT.match(traceparent) else None,
        )

    @classmethod
    def from_record(cls, record: Record) -> Envelope:
        """The envelope of a consumed record; `MalformedMessage` when it cannot be one."""
        if record.defects:
            raise MalformedMessage("; ".join(record.defects))
        return cls.from_headers(record.headers, record.value)


def _attribute(headers: Mapping[str, object], name: str, limit: int) -> str | None:
    value = headers.get(f"ce_{name}")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedMessage(f"ce_{name} is not text but {type(value).__name__}")
    if len(value) > limit:
        raise MalformedMessage(f"ce_{name} is {len(value)} characters long; at most {limit} are kept")
    if _CONTROL.search(value):
        raise MalformedMessage(f"ce_{name} holds control characters: {value[:80]!r}")
    return value


def _time(value: object) -> datetime:
    """`ce_time` in UTC (now when absent); every way it can be wrong is `MalformedMessage`."""
    if value is None or value == "":
        return utcnow()
    if not isinstance(value, str):
        raise MalformedMessage(f"bad ce_time: not text but {type(value).__name__}")
    try:
        return as_utc(datetime.fromisoformat(value))
    except (ValueError, OverflowError) as exc:  # 9999-12-31T23:59:59-23:59 overflows in UTC
        raise MalformedMessage(f"bad ce_time {value[:80]!r}: {exc}") from None
