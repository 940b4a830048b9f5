"""What a log's bytes become when a record is read: text, or text with the defect named."""

from __future__ import annotations

import pytest

from pizzeria.messaging.broker import as_text, header_text


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
