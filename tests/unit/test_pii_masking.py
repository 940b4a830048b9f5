"""Masking personal data in logs: emails and phone numbers go, dates and ids stay."""

from __future__ import annotations

import pytest

from pizzeria.kit.ids import new_id
from pizzeria.kit.logging import mask_email, mask_phone, mask_pii


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("alice@example.com", "a***@example.com"),
        ("mail bob.smith+pizza@mail.example.org now", "mail b***@mail.example.org now"),
        ("a@b.co and c@d.io", "a***@b.co and c***@d.io"),
    ],
)
def test_emails_keep_only_their_first_letter_and_domain(text: str, masked: str) -> None:
    assert mask_email(text) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("+4915112345678", "***********78"),
        ("call +49 151 1234 5678 now", "call ***********78 now"),
        ("(555) 123-4567", "(********67"),
    ],
)
def test_phone_numbers_keep_only_their_last_two_digits(text: str, masked: str) -> None:
    assert mask_phone(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01",
        "2024-05-01T12:30:00+00:00",
        "2024-05-01T12:30:00.123456Z",
        "2024-05-01 12:30:00+00:00",  # str(datetime)
        "total 1250 EUR, 3 items",
        "code 12345",
    ],
)
def test_dates_amounts_and_short_codes_are_left_alone(text: str) -> None:
    assert mask_pii(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "0190a5c4-7e2b-7c3d-8f1e-2a3b4c5d6e7f",
        "order 0190a5c4-7e2b-7c3d-8f1e-123456789012 paid",  # a last group of decimal digits only
        "12345678-1234-7234-8234-123456789012",
    ],
)
def test_uuids_are_left_alone(text: str) -> None:
    assert mask_pii(text) == text


def test_generated_ids_are_never_masked() -> None:
    ids = [new_id() for _ in range(2_000)]
    assert [i for i in ids if mask_pii(i) != i] == []


def test_mask_pii_walks_dicts_lists_and_tuples() -> None:
    value = {
        "contact": {"email": "ann@example.com", "phones": ["+4915112345678"]},
        "pair": ("zoe@example.com", 42),
        "count": 7,
        "flag": None,
    }
    assert mask_pii(value) == {
        "contact": {"email": "a***@example.com", "phones": ["***********78"]},
        "pair": ["z***@example.com", 42],
        "count": 7,
        "flag": None,
    }
