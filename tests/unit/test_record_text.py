"""What a log's bytes become when a record is read: text, or text with the defect named."""

from __future__ import annotations

import confluent_kafka
import pytest

from pizzeria.messaging.broker import Record, as_text, header_text
from pizzeria.messaging.kafka import _record, records_of


@pytest.mark.parametrize(
    "raw",
    ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", b"pizzeria.orders.OrderPlaced.v1", "caf\u00e9"],
)
def test_a_header_that_is_text_is_taken_as_it_is(raw: str | bytes) -> None:
    defects: list[str] = []
    text = header_text("ce_type", raw, defects)
    assert text == (raw.decode() if isinstance(raw, bytes) else raw)
    assert defects == []


def test_utf8_bytes_beyond_ascii_are_decoded() -> None:
    defects: list[str] = []
    assert header_text("ce_source", "caf\u00e9".encode(), defects) == "caf\u00e9"
    assert defects == []


@pytest.mark.parametrize(
    ("raw", "text", "defect"),
    [
        (b"k\xff", "k\\xff", "the header 'ce_id' is not UTF-8"),
        ("k\ud800", "k\\ud800", "the header 'ce_id' is not valid Unicode text"),
        (7, "7", "the header 'ce_id' is not text but int"),
        (bytearray(b"\xfe"), "\\xfe", "the header 'ce_id' is not UTF-8"),
    ],
)
def test_a_header_that_is_not_text_is_named_in_the_defects(raw: object, text: str, defect: str) -> None:
    defects: list[str] = []
    assert header_text("ce_id", raw, defects) == text
    assert defects == [defect]
    assert as_text(raw, "the header 'ce_id'", []) == text  # the same text as any other field gets


def test_a_long_header_name_is_cut_in_the_defect() -> None:
    defects: list[str] = []
    header_text("x" * 100, b"\xff", defects)
    assert defects == [f"the header {'x' * 64!r} is not UTF-8"]


def _message(key: object, headers: object) -> confluent_kafka.Message:
    return confluent_kafka.Message(
        topic="t", partition=2, offset=7, key=key, value=b"{}", headers=headers, timestamp=(1, 1_700_000_000_000)
    )


def test_a_kafka_record_as_this_system_writes_it() -> None:
    headers = [
        ("ce_id", b"0192"),
        ("ce_type", b"pizzeria.orders.OrderPlaced.v1"),
        ("content-type", b"application/json"),
    ]
    (record,) = records_of([_message(b"order-1", headers)])
    assert record == Record("t", 2, 7, b"{}", "order-1", {n: v.decode() for n, v in headers}, 1_700_000_000_000)
    assert list(record.headers) == ["ce_id", "ce_type", "content-type"]  # in the record's order


@pytest.mark.parametrize(
    ("key", "headers", "expected", "defects"),
    [
        (b"caf\xc3\xa9", [("ce_source", "caf\u00e9".encode())], {"ce_source": "caf\u00e9"}, []),
        (b"k\xff", [("ce_id", b"1")], {"ce_id": "1"}, ["the key is not UTF-8"]),
        (None, [("ce_id", b"1"), ("x-note", None)], {"ce_id": "1", "x-note": ""}, []),
        (None, [("ce_id", b"\xff")], {"ce_id": "\\xff"}, ["the header 'ce_id' is not UTF-8"]),
        (None, [("ce_id", b"1"), ("ce_id", b"2")], {"ce_id": "2"}, ["the header 'ce_id' appears more than once"]),
        (None, [("x-seen", b"1"), ("x-seen", b"2")], {"x-seen": "2"}, []),
        (None, [("caf\u00e9", b"1")], {"caf\u00e9": "1"}, []),
    ],
)
def test_a_kafka_record_with_anything_else_is_read_header_by_header(
    key: bytes | None, headers: list[tuple[str, bytes | None]], expected: dict[str, str], defects: list[str]
) -> None:
    (record,) = records_of([_message(key, headers)])
    assert record.headers == expected
    assert list(record.defects) == defects


def test_headers_handed_over_as_an_iterator_are_all_read() -> None:
    class Handed:
        def key(self) -> bytes:
            return b"k"

        def headers(self) -> object:
            return iter([("a", b"1"), ("b", b"2")])

        def topic(self) -> str:
            return "t"

        def partition(self) -> int:
            return 0

        def offset(self) -> int:
            return 1

        def value(self) -> bytes:
            return b"{}"

        def timestamp(self) -> tuple[int, int]:
            return (1, 5)

    assert _record(Handed()).headers == {"a": "1", "b": "2"}
