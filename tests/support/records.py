"""Records of any bytes, as a broker may hand them over, and what a consumer must make of each:
the message handled, ignored (a type the group does not take), or a dead letter whose error
names the reason. Used to show that decoding is total on every broker."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from uuid import UUID

from hypothesis import strategies as st

from pizzeria.messaging.consumer import ConsumerRunner, HandlerRegistry
from pizzeria.messaging.deadletters import DeadLetterStore
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import Message
from pizzeria.messaging.uow import UnitOfWork

SOURCE = "/pizzeria/poison-test"


class ProbeHappened(Message, context="poison_probe", key="probe_id"):
    """What the consumer under test handles."""

    probe_id: UUID
    label: str


class ProbeIgnored(Message, context="poison_probe", key="probe_id"):
    """A type on the same topic that the group does not take."""

    probe_id: UUID


@dataclass(frozen=True)
class RawRecord:
    """A record as bytes (a header value may also be JSON that is not text: the SQL log stores
    headers as JSON), and the outcome it must have: `processed`, `ignored`, `dead` (with
    `reason` in the error) or `settled` (any of them, but never stuck)."""

    key: bytes | None
    headers: tuple[tuple[str, bytes | int | list[int] | None], ...]
    value: bytes
    expect: str
    reason: str = ""
    label: str = ""

    def header(self, name: str) -> bytes | int | list[int] | None:
        return dict(self.headers).get(name)


def _good(probe_id: UUID, label: str) -> RawRecord:
    envelope = Envelope.wrap(ProbeHappened(probe_id=probe_id, label=label), source=SOURCE)
    headers = tuple((k, v.encode()) for k, v in envelope.headers().items())
    return RawRecord(str(probe_id).encode(), headers, envelope.data, "processed", label=label)


def _with(record: RawRecord, name: str, value: bytes | int | list[int] | None, expect: str, reason: str) -> RawRecord:
    headers = tuple((k, value if k == name else v) for k, v in record.headers)
    if name not in dict(record.headers):
        headers = (*headers, (name, value))
    return replace(record, headers=headers, expect=expect, reason=reason, label="")


NOT_UTF8 = st.binary(min_size=1, max_size=12).filter(lambda b: not _utf8(b))


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def raw_records(draw: st.DrawFn, *, json_headers: bool) -> RawRecord:
    """One record of a kind drawn at random. `json_headers`: header values may be JSON that is
    not text (the SQL log); otherwise every header value is bytes (Kafka)."""
    probe_id = draw(st.uuids())
    label = f"probe-{probe_id.hex[:12]}"
    good = _good(probe_id, label)
    kinds = [
        "good",
        "ignored",
        "version",
        "time-overflow",
        "key-not-utf8",
        "header-not-utf8",
        "long-id",
        "control-in-id",
        "bad-data",
        "garbage",
    ]
    if json_headers:
        kinds.append("time-not-text")
    kind = draw(st.sampled_from(kinds))
    if kind == "good":
        note = draw(st.text(max_size=20))  # any text in a header nobody reads changes nothing
        return replace(_with(good, "x-note", note.encode(), "processed", ""), label=label) if note else good
    if kind == "ignored":
        envelope = Envelope.wrap(ProbeIgnored(probe_id=probe_id), source=SOURCE)
        headers = tuple((k, v.encode()) for k, v in envelope.headers().items())
        return RawRecord(str(probe_id).encode(), headers, envelope.data, "ignored")
    if kind == "version":
        other = ProbeHappened.type_name().replace(".v1", f".v{draw(st.integers(2, 99))}")
        return _with(good, "ce_type", other.encode(), "dead", "unknown schema version")
    if kind == "time-overflow":
        when = draw(st.sampled_from(["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"]))
        return _with(good, "ce_time", when.encode(), "dead", "ce_time")
    if kind == "time-not-text":
        return _with(good, "ce_time", draw(st.sampled_from([20260101, None, [2026, 1, 1]])), "dead", "ce_time")
    if kind == "key-not-utf8":
        return replace(good, key=draw(NOT_UTF8), expect="dead", reason="key", label="")
    if kind == "header-not-utf8":
        name = draw(st.sampled_from(["ce_id", "ce_type", "ce_subject", "ce_correlationid", "x-note"]))
        # The SQL log keeps headers as JSON text: bytes that are not UTF-8 make it not JSON.
        return _with(good, name, draw(NOT_UTF8), "dead", "headers" if json_headers else "not UTF-8")
    if kind == "long-id":
        return _with(good, "ce_id", b"i" * draw(st.integers(65, 400)), "dead", "ce_id")
    if kind == "control-in-id":
        control = draw(st.sampled_from(["\x00", "\x01", "\n", "\x7f"]))
        return _with(good, "ce_id", f"id{control}{probe_id.hex[:8]}".encode(), "dead", "ce_id")
    if kind == "bad-data":
        data = draw(st.one_of(st.binary(max_size=40), st.just(b'{"probe_id": "nope"}'), st.just(b"[" * 5000)))
        return replace(good, value=data, expect="dead", reason="schema", label="")
    # Anything at all: names, values, key and value drawn freely.
    headers = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(["ce_id", "ce_type", "ce_time", "ce_source", "ce_specversion"]), st.text()),
                st.one_of(st.binary(max_size=30), st.text(max_size=30).map(str.encode)),
            ),
            max_size=6,
        )
    )
    key = draw(st.one_of(st.none(), st.binary(max_size=20)))
    return RawRecord(key, tuple(headers), draw(st.binary(max_size=60)), "settled")


def probe_runner(
    group: str, topic: str, broker: object, uow_factory: object, dead_letters: DeadLetterStore, seen: set[str]
) -> ConsumerRunner:
    """A runner of `group` whose handler notes the label of every probe it handles in `seen`."""
    registry = HandlerRegistry()

    @registry.on(ProbeHappened)
    async def handle(message: ProbeHappened, envelope: Envelope, uow: UnitOfWork) -> None:
        seen.add(message.label)

    return ConsumerRunner(
        group=group,
        handlers=registry,
        broker=broker,  # type: ignore[arg-type]
        uow_factory=uow_factory,  # type: ignore[arg-type]
        dead_letters=dead_letters,
        topics=[topic],
        dead_letter_topic=f"{group}.dlq",
    )


def check_outcomes(
    records: Sequence[tuple[RawRecord, tuple[int, int]]], dead: dict[tuple[int, int], str], seen: set[str]
) -> None:
    """Each record had the outcome it must have (`dead`: error by partition and offset)."""
    for record, position in records:
        if record.expect == "processed":
            assert position not in dead, (record, dead.get(position))
            assert record.label in seen, record
        elif record.expect == "ignored":
            assert position not in dead, (record, dead.get(position))
        elif record.expect == "dead":
            assert position in dead, record
            assert record.reason in dead[position], (record.reason, dead[position])
            assert dead[position], record


def deadline(seconds: float) -> float:
    return time.monotonic() + seconds
