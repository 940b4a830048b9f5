"""Notifications domain: templates, who to reach, and how references and money read."""

from __future__ import annotations

import pytest

from pizzeria.contracts.notifications import TOLD, told
from pizzeria.contracts.orders import OrderStatus
from pizzeria.services.notifications.domain import (
    CHANNELS,
    DEFAULT_TEMPLATES,
    REASONS,
    MessageTemplate,
    money,
    order_ref,
    recipients,
)


def test_render_fills_known_placeholders_in_subject_and_body() -> None:
    template = MessageTemplate("t", "email", "Order $order_ref", "Total ${total}, thanks!")
    assert template.render({"order_ref": "#ABC123", "total": "12.50 EUR"}) == (
        "Order #ABC123",
        "Total 12.50 EUR, thanks!",
    )


def test_render_leaves_unknown_placeholders_as_written() -> None:
    template = MessageTemplate("t", "sms", "Hi $name", "Order $order_ref: $reason costs $$5")
    subject, body = template.render({"order_ref": "#1"})
    assert subject == "Hi $name"
    assert body == "Order #1: $reason costs $5"


def test_render_does_not_trip_on_a_stray_dollar() -> None:
    template = MessageTemplate("t", "sms", "$", "pay $ 5 for $order_ref")
    assert template.render({"order_ref": "#1"}) == ("$", "pay $ 5 for #1")


def test_there_is_a_template_for_each_moment_told_on_each_of_its_channels_and_for_nothing_else() -> None:
    have = [(t.name, t.channel) for t in DEFAULT_TEMPLATES]
    assert len(have) == len(set(have))  # no template defined twice
    assert set(have) == {(name, channel) for name, channels in TOLD.items() for channel in channels}
    assert {t.channel for t in DEFAULT_TEMPLATES} <= set(CHANNELS)


def test_a_customer_hears_of_payment_delivery_and_cancellation_but_not_of_each_kitchen_step() -> None:
    """Every status an order ends or waits on is told on both channels; the kitchen's steps
    are on the order's page only; a payment is one message a channel (the receipt by email)."""
    both = ["email", "sms"]
    for status in OrderStatus:
        name = f"order_{status}".replace("order_pending", "order_placed")
        if status in ("pending", "preparing", "baking", "ready"):
            assert told(name, both) == [], name
        elif status == "paid":
            assert told(name, both) == ["sms"]
        else:
            assert told(name, both) == both, name
    assert told("payment_receipt", both) == ["email"]
    assert told("payment_receipt", ["sms"]) == []
    assert told("no_such_template", both) == []


def test_the_cancel_template_explains_the_reason() -> None:
    cancelled = next(t for t in DEFAULT_TEMPLATES if (t.name, t.channel) == ("order_cancelled", "email"))
    _, body = cancelled.render({"order_ref": "#ABCDEF", "reason": REASONS["out_of_stock"]})
    assert body == "Order #ABCDEF was cancelled: we ran out of an ingredient."


@pytest.mark.parametrize(
    ("email", "phone", "expected"),
    [
        (
            "ann@example.com",
            "+4915112345678",
            {"email": "ann@example.com", "sms": "+4915112345678"},
        ),
        ("ann@example.com", None, {"email": "ann@example.com"}),
        (None, "+4915112345678", {"sms": "+4915112345678"}),
        (None, None, {}),
        ("", "", {}),
    ],
)
def test_recipients_are_the_channels_the_customer_can_be_reached_on(
    email: str | None, phone: str | None, expected: dict[str, str]
) -> None:
    assert recipients(email, phone) == expected


def test_order_ref_is_the_upper_cased_end_of_the_id() -> None:
    assert order_ref("0190a5c4-7e2b-7c3d-8f1e-2a3b4c5d6e7f") == "#5D6E7F"
    assert order_ref("0190a5c4-7e2b-7c3d-8f1e-2a3b4c000001") == "#000001"


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (1250, "12.50 EUR"),
        (5, "0.05 EUR"),
        (0, "0.00 EUR"),
        (100_000, "1000.00 EUR"),
        (1999, "19.99 EUR"),
    ],
)
def test_money_reads_minor_units_as_major_units(amount: int, expected: str) -> None:
    assert money(amount, "EUR") == expected
