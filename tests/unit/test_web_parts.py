"""The web UI's pure parts: the cart cookie, prices and times in words, an order's timeline and
why it was cancelled, the charts, and where a sign-in may send the browser."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from pizzeria.web import cart, charts, words
from pizzeria.web.maps import HEIGHT, HOME, MARGIN, WIDTH, courier_map, eta_words
from pizzeria.web.render import duration, money
from pizzeria.web.session import local_path

A, B = str(uuid.uuid4()), str(uuid.uuid4())
MENU = [
    {"id": A, "name": "Margherita", "currency": "EUR", "sizes": [{"size": "small", "price": 750}]},
    {"id": B, "name": "Diavola", "currency": "EUR", "sizes": [{"size": "large", "price": 1400}]},
]


def test_the_cart_cookie_round_trips_and_merges_lines() -> None:
    lines = cart.add(cart.add([], A, "small", 2), A, "small", 3)
    lines = cart.add(lines, B, "large", 1)
    assert cart.parse(cart.dump(lines)) == [cart.Line(A, "small", 5), cart.Line(B, "large", 1)]
    assert cart.count(lines) == 6
    assert cart.set_quantity(lines, A, "small", 0) == [cart.Line(B, "large", 1)]
    assert cart.add([], A, "small", 500) == [cart.Line(A, "small", cart.MAX_QUANTITY)]


@pytest.mark.parametrize(
    "cookie",
    ["", "garbage", "not-a-uuid:small:1", f"{A}:Small:1", f"{A}:small:0", f"{A}:small:x", f"{A}:small:51", "|||"],
)
def test_a_tampered_cart_cookie_gives_no_line(cookie: str) -> None:
    assert cart.parse(cookie) == []


def test_the_cart_is_priced_from_the_menu_and_leaves_out_what_is_gone() -> None:
    lines = [cart.Line(A, "small", 2), cart.Line(B, "small", 1), cart.Line(str(uuid.uuid4()), "small", 1)]
    priced = cart.price(lines, MENU)
    assert [(ln.name, ln.total) for ln in priced.lines] == [("Margherita", 1500)]
    assert priced.total == 1500
    assert len(priced.gone) == 2


def test_money_and_durations_read_as_people_write_them() -> None:
    assert money(1090, "EUR") == "€10.90"
    assert money(5, "USD") == "$0.05"
    assert money(123456, "CHF") == "1234.56 CHF"
    assert money(-250) == "-€2.50"
    assert duration(0.25) == "250 ms"
    assert duration(42) == "42.0 s"
    assert duration(600) == "10.0 min"


def order(status: str, history: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "history": [{"status": s, "at": f"2026-01-01T12:0{i}:00+00:00"} for i, s in enumerate(history)],
        "payment_status": extra.get("payment_status", "pending"),
        "cancel_reason": extra.get("cancel_reason"),
        "cancel_requested": extra.get("cancel_requested", False),
    }


def test_the_timeline_marks_steps_done_current_and_to_come() -> None:
    steps = words.timeline(order("baking", ["pending", "paid", "preparing", "baking"]))
    assert [s["state"] for s in steps] == ["done", "done", "done", "current", "todo", "todo", "todo"]
    assert steps[1]["at"] == "2026-01-01T12:01:00+00:00"
    delivered = words.timeline(order("delivered", ["pending", "paid", "delivered"]))
    assert delivered[-1]["state"] == "done"


def test_a_cancelled_order_ends_its_timeline_where_it_stopped_and_says_why() -> None:
    cancelled = order("cancelled", ["pending", "paid", "cancelled"], cancel_reason="customer_cancelled")
    cancelled["payment_status"] = "refunded"
    steps = words.timeline(cancelled)
    assert [(s["status"], s["state"]) for s in steps] == [
        ("pending", "done"),
        ("paid", "done"),
        ("cancelled", "cancelled"),
    ]
    assert words.cancel_reason(cancelled) == "You cancelled this order. Your payment has been refunded."
    declined = order("cancelled", ["pending", "cancelled"], cancel_reason="payment_failed", payment_status="failed")
    assert "card was declined" in words.cancel_reason(declined)
    assert "Nothing was charged" in words.cancel_reason(declined)
    assert "took too long" in words.cancel_reason(order("cancelled", ["pending"], cancel_reason="timeout"))
    assert "something new" in words.cancel_reason(order("cancelled", ["pending"], cancel_reason="something_new"))


def test_an_order_can_be_cancelled_until_the_kitchen_starts_once() -> None:
    assert words.can_cancel(order("pending", ["pending"]))
    assert words.can_cancel(order("paid", ["pending", "paid"]))
    assert not words.can_cancel(order("paid", ["pending", "paid"], cancel_requested=True))
    assert not words.can_cancel(order("preparing", ["pending", "paid", "preparing"]))


def test_charts_are_svg_with_a_title_and_a_summary_or_say_there_is_nothing() -> None:
    bars = charts.bars("Orders per minute", ["10:00", "11:00", "12:00"], [0.5, 0.0, 2.0], lambda v: f"{v:.1f}")
    assert bars.startswith("<svg")
    assert "<title" in bars
    assert "highest 2.0, latest 2.0" in bars
    assert bars.count('class="bar"') == 3
    line = charts.lines(
        "Success", ["10:00", "11:00", "12:00"], [charts.Series("rate", [1.0, None, 0.5], "s1")], str, top=1.0
    )
    assert line.count("<circle") == 2
    assert "<polyline" not in line  # a gap between the two points: no line drawn across it
    assert "nothing measured" in charts.lines("Success", ["10:00"], [charts.Series("rate", [None], "s1")], str)
    assert "<script" not in charts.bars("<script>", ["a"], [1.0], str)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/orders", "/orders"),
        ("/cart?x=1", "/cart?x=1"),
        ("//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_a_sign_in_only_ever_sends_the_browser_to_this_site(target: str | None, expected: str) -> None:
    assert local_path(target) == expected


def test_the_courier_map_keeps_every_point_inside_with_north_up() -> None:
    north_east = (HOME[0] + 0.02, HOME[1] + 0.01)
    halfway = (HOME[0] + 0.01, HOME[1] + 0.005)
    drawn = courier_map(north_east, halfway)
    corners = [tuple(map(float, p.split(","))) for p in drawn.route.split()]
    placed = [(drawn.pizzeria.x, drawn.pizzeria.y), (drawn.address.x, drawn.address.y), *corners]
    assert drawn.courier is not None
    placed.append((drawn.courier.x, drawn.courier.y))
    assert all(
        MARGIN - 0.5 <= x <= WIDTH - MARGIN + 0.5 and MARGIN - 0.5 <= y <= HEIGHT - MARGIN + 0.5 for x, y in placed
    )
    assert drawn.address.y < drawn.courier.y < drawn.pizzeria.y, "north is up"
    assert drawn.pizzeria.x < drawn.address.x, "east is right"
    assert (corners[0], corners[-1]) == (placed[0], placed[1]), "the route runs from the pizzeria to the address"
    assert courier_map(north_east, None).courier is None


def test_an_eta_is_said_in_words() -> None:
    assert [eta_words(s) for s in (None, 20, 60, 600)] == [
        "Estimating arrival…",
        "Arriving now",
        "About a minute away",
        "About 10 minutes away",
    ]
