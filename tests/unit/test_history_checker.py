"""The chaos campaign's history checker, held against hand-made histories: a good one passes, and
each kind of violation it exists to find is found (a checker that cannot fail proves nothing)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from pizzeria.chaos.checker import (
    DUPLICATED,
    INVALID_PATH,
    LOST,
    MISSING_EFFECTS,
    MONEY,
    PHANTOM,
    PROVIDER_UNREACHABLE,
    STOCK,
    UNDER_WAY,
    UNEXPLAINED,
    UNREFUNDED,
    WRONG_ENDING,
    Call,
    Excuse,
    History,
    Observed,
    check,
    deadline_passed,
)
from pizzeria.chaos.stories import expected_notifications

DELIVERED_PATH = ["pending", "paid", "preparing", "baking", "ready", "out_for_delivery", "delivered"]


def at(second: int) -> str:
    return f"2026-01-01T12:00:{second:02d}+00:00"


def order_view(order_id: str, customer: str, path: list[str], **fields: Any) -> dict[str, Any]:
    return {
        "id": order_id,
        "customer_id": customer,
        "status": path[-1],
        "cancel_reason": None,
        "cancel_requested": False,
        "payment_status": "completed",
        "total": 2500,
        "history": [{"status": s, "at": at(n)} for n, s in enumerate(path)],
        "items": [{"menu_item_id": "m-margherita", "quantity": 2}],
        **fields,
    }


def good() -> tuple[History, Observed]:
    """Three orders, each ending as its story says: delivered; declined; paid, then cancelled
    by its customer and refunded."""
    history = History()
    views: dict[str, dict[str, Any]] = {}
    stories = [
        ("o-delivered", "tok_visa", None, DELIVERED_PATH, {}),
        (
            "o-declined",
            "tok_declined",
            None,
            ["pending", "cancelled"],
            {"cancel_reason": "payment_failed", "payment_status": "failed"},
        ),
        (
            "o-refunded",
            "tok_visa",
            202,
            ["pending", "paid", "cancelled"],
            {"cancel_reason": "customer_cancelled", "payment_status": "refunded"},
        ),
    ]
    for n, (order_id, card, cancel, path, fields) in enumerate(stories):
        record = history.begin(f"key-{n}", f"c{n}", card, f"c{n}@example.com", "+491500000000")
        record.place.answers.append("202")
        record.place.ended = record.place.started + 0.1
        record.order_id = order_id
        if cancel is not None:
            record.cancel = Call(record.place.ended, record.place.ended + 0.1, [str(cancel)])
        views[order_id] = order_view(order_id, record.customer, path, **fields)
    charges = [
        {"id": "ch_1", "order_id": "o-delivered", "status": "succeeded", "amount": 2500},
        {"id": "ch_2", "order_id": "o-declined", "status": "declined", "amount": 2500},
        {"id": "ch_3", "order_id": "o-refunded", "status": "succeeded", "amount": 2500},
    ]
    notifications = []
    for record in history.records:
        assert record.order_id is not None
        view = views[record.order_id]
        for (template, channel), count in expected_notifications(record.as_placed(view), view)[0].items():
            notifications += [{"order_id": record.order_id, "template": template, "channel": channel}] * count
    observed = Observed(
        orders=views,
        listed=list(views.values()),
        payments={order_id: [{"order_id": order_id}] for order_id in views},
        charges=charges,
        refunds=[{"id": "re_1", "charge": "ch_3", "amount": 2500}],
        tickets=[{"order_id": "o-delivered", "status": "ready"}],
        deliveries=[{"order_id": "o-delivered", "status": "delivered"}],
        notifications=notifications,
        # the delivered order's two pizzas, 5 units of cheese each, were cooked
        inventory=[{"ingredient": "cheese", "on_hand": 90, "reserved": 0, "consumed": 10, "received": 100}],
        menu=[{"id": "m-margherita", "recipe": [{"ingredient": "cheese", "quantity": 5}]}],
        sagas={"completed": 1, "compensated": 2},
        dead_letters=[],
        placed_audit=[{"message_id": f"m-{i}", "order_id": i} for i in views],
        status_audit=[
            {"message_id": f"m-{i}-{h['status']}", "order_id": i, "data": {"status": h["status"]}}
            for i, v in views.items()
            for h in v["history"][1:]
        ],
    )
    return history, observed


def test_a_good_history_passes() -> None:
    result = check(*good())
    result.assert_ok()
    assert (result.acknowledged, result.finished, result.unanswered) == (3, 3, 0)
    assert "acknowledged" in result.table()


def lose_an_order(history: History, seen: Observed) -> None:
    del seen.orders["o-delivered"]


def leave_an_order_unfinished(history: History, seen: Observed) -> None:
    seen.orders["o-delivered"]["status"] = "baking"


def answer_two_requests_with_one_order(history: History, seen: Observed) -> None:
    history.records[1].order_id = "o-delivered"


def charge_twice(history: History, seen: Observed) -> None:
    seen.charges.append({"id": "ch_9", "order_id": "o-delivered", "status": "succeeded", "amount": 2500})


def refund_twice(history: History, seen: Observed) -> None:
    seen.refunds.append({"id": "re_9", "charge": "ch_3", "amount": 1})


def forget_a_refund(history: History, seen: Observed) -> None:
    seen.refunds.clear()


def skip_a_status(history: History, seen: Observed) -> None:
    del seen.orders["o-delivered"]["history"][2]  # paid → baking


def reorder_the_history(history: History, seen: Observed) -> None:
    steps = seen.orders["o-delivered"]["history"]
    steps[1]["at"], steps[2]["at"] = steps[2]["at"], steps[1]["at"]


def deliver_a_declined_card(history: History, seen: Observed) -> None:
    seen.orders["o-declined"].update(status="delivered", cancel_reason=None)
    seen.orders["o-declined"]["history"] = [{"status": s, "at": at(n)} for n, s in enumerate(DELIVERED_PATH)]


def create_an_order_nobody_asked_for(history: History, seen: Observed) -> None:
    seen.listed.append(order_view("o-ghost", "c0", ["pending", "cancelled"]))


def ticket_twice(history: History, seen: Observed) -> None:
    seen.tickets.append({"order_id": "o-delivered", "status": "cancelled"})


def deliver_twice(history: History, seen: Observed) -> None:
    seen.deliveries.append({"order_id": "o-delivered", "status": "waiting"})


def notify_twice(history: History, seen: Observed) -> None:
    seen.notifications.append({"order_id": "o-delivered", "template": "order_delivered", "channel": "sms"})


def tell_what_is_not_told(history: History, seen: Observed) -> None:
    seen.notifications.append({"order_id": "o-delivered", "template": "order_baking", "channel": "email"})


def arriving(order_id: str, channel: str = "sms") -> dict[str, str]:
    return {"order_id": order_id, "template": "courier_arriving", "channel": channel}


def announce_arrival_twice(history: History, seen: Observed) -> None:
    seen.notifications += [arriving("o-delivered"), arriving("o-delivered")]


def announce_arrival_of_an_order_never_out(history: History, seen: Observed) -> None:
    cancelled = next(o for o in seen.orders.values() if o["status"] == "cancelled")
    seen.notifications.append(arriving(cancelled["id"]))


def announce_arrival_on_a_channel_the_customer_lacks(history: History, seen: Observed) -> None:
    seen.notifications.append(arriving("o-delivered", channel="push"))


def forget_a_notification(history: History, seen: Observed) -> None:
    seen.notifications.remove({"order_id": "o-delivered", "template": "order_delivered", "channel": "sms"})


def audit_twice(history: History, seen: Observed) -> None:
    seen.status_audit.append({"message_id": "m-other", "order_id": "o-delivered", "data": {"status": "paid"}})


def pay_twice(history: History, seen: Observed) -> None:
    seen.payments["o-delivered"].append({"order_id": "o-delivered"})


def undercharge(history: History, seen: Observed) -> None:
    seen.charges[0]["amount"] = 2000


def show_a_stale_payment_status(history: History, seen: Observed) -> None:
    seen.orders["o-refunded"]["payment_status"] = "completed"


def refuse_a_cancel_while_cancellable(history: History, seen: Observed) -> None:
    history.records[1].cancel = Call(0.0, 0.1, ["409"])  # o-declined, cancelled by its payment


def refuse_a_cancel_of_a_paid_order(history: History, seen: Observed) -> None:
    record = history.records[0]  # o-delivered
    record.cancel = Call(0.0, 0.1, ["409"])
    seen.orders["o-delivered"]["history"] = [{"status": s, "at": at(n)} for n, s in enumerate(DELIVERED_PATH[:2])]
    seen.orders["o-delivered"]["history"].append({"status": "cancelled", "at": at(3)})


def lose_stock(history: History, seen: Observed) -> None:
    seen.inventory[0]["on_hand"] -= 1


def consume_twice(history: History, seen: Observed) -> None:
    seen.inventory[0].update(on_hand=80, consumed=20)


def keep_a_reservation(history: History, seen: Observed) -> None:
    seen.inventory[0].update(on_hand=89, reserved=1)


def leave_a_saga_running(history: History, seen: Observed) -> None:
    seen.sagas["running"] = 1


def dead_letter(history: History, seen: Observed) -> None:
    seen.dead_letters.append({"service": "kitchen", "group_id": "kitchen", "error": "boom"})


def deliver_without_a_ticket(history: History, seen: Observed) -> None:
    seen.tickets[0]["status"] = "baking"


@pytest.mark.parametrize(
    ("break_it", "kind"),
    [
        (lose_an_order, LOST),
        (leave_an_order_unfinished, LOST),
        (answer_two_requests_with_one_order, LOST),
        (charge_twice, f"{DUPLICATED} charges"),
        (refund_twice, f"{DUPLICATED} refunds"),
        (forget_a_refund, UNREFUNDED),
        (skip_a_status, INVALID_PATH),
        (reorder_the_history, INVALID_PATH),
        (deliver_a_declined_card, WRONG_ENDING),
        (create_an_order_nobody_asked_for, PHANTOM),
        (ticket_twice, f"{DUPLICATED} tickets"),
        (deliver_twice, f"{DUPLICATED} deliveries"),
        (notify_twice, f"{DUPLICATED} notifications"),
        (tell_what_is_not_told, f"{DUPLICATED} notifications"),
        (announce_arrival_twice, f"{DUPLICATED} notifications"),
        (announce_arrival_of_an_order_never_out, f"{DUPLICATED} notifications"),
        (announce_arrival_on_a_channel_the_customer_lacks, f"{DUPLICATED} notifications"),
        (forget_a_notification, MISSING_EFFECTS),
        (audit_twice, f"{DUPLICATED} audit entries"),
        (pay_twice, f"{DUPLICATED} payments"),
        (undercharge, MONEY),
        (show_a_stale_payment_status, MONEY),
        (refuse_a_cancel_of_a_paid_order, WRONG_ENDING),
        (lose_stock, STOCK),
        (keep_a_reservation, STOCK),
        (consume_twice, STOCK),
        (leave_a_saga_running, UNDER_WAY),
        (dead_letter, UNEXPLAINED),
        (deliver_without_a_ticket, MISSING_EFFECTS),
    ],
)
def test_each_violation_is_caught(break_it: Callable[[History, Observed], None], kind: str) -> None:
    history, seen = copy.deepcopy(good())
    break_it(history, seen)
    result = check(history, seen)
    assert result.violations.get(kind), f"{break_it.__name__} was not found: {dict(result.violations)}"
    with pytest.raises(AssertionError, match="violations"):
        result.assert_ok()


def test_a_cancel_refused_once_payment_failed_is_no_violation() -> None:
    history, seen = good()
    refuse_a_cancel_while_cancellable(history, seen)
    check(history, seen).assert_ok()


def test_a_dead_letter_of_a_group_made_to_fail_is_explained() -> None:
    history, seen = good()
    dead_letter(history, seen)
    history.failing_groups.add("kitchen")
    check(history, seen).assert_ok()


def test_an_order_created_by_an_unanswered_request_is_no_phantom() -> None:
    history, seen = good()
    history.begin("key-lost-answer", "c0", "tok_visa", None, "+491500000001").place.answers.append("ReadTimeout")
    create_an_order_nobody_asked_for(history, seen)
    result = check(history, seen)
    result.assert_ok()
    assert result.unanswered == 1


def test_the_counts_say_how_many_of_each() -> None:
    history, seen = good()
    lose_an_order(history, seen)
    charge_twice(history, seen)
    notify_twice(history, seen)
    counts = check(history, seen).counts()
    assert (counts["acknowledged"], counts["finished"], counts[LOST]) == (3, 2, 1)
    # the lost order's effects are still read: its second charge is a duplicate
    assert counts[DUPLICATED] >= 1


def cancel_for_timeout(history: History, seen: Observed, reason: str = "timeout") -> None:
    """The delivered order of `good()` cancelled on its saga's deadline instead, its card charged
    late and refunded once: nothing cooked, no ticket or delivery, a cancelled order's
    notifications and audit entries."""
    seen.orders["o-delivered"].update(status="cancelled", cancel_reason=reason, payment_status="refunded")
    seen.orders["o-delivered"]["history"] = [{"status": s, "at": at(n)} for n, s in enumerate(["pending", "cancelled"])]
    seen.refunds.append({"id": "re_2", "charge": "ch_1", "amount": 2500})  # charged late, then refunded
    seen.tickets.clear()
    seen.deliveries.clear()
    seen.inventory[0].update(on_hand=100, consumed=0)  # nothing was cooked
    seen.notifications = [n for n in seen.notifications if n["order_id"] != "o-delivered"]
    view, record = seen.orders["o-delivered"], history.records[0]
    for (template, channel), count in expected_notifications(record.as_placed(view), view)[0].items():
        seen.notifications += [{"order_id": "o-delivered", "template": template, "channel": channel}] * count
    seen.status_audit = [e for e in seen.status_audit if e["order_id"] != "o-delivered"]
    seen.status_audit.append({"message_id": "m-x", "order_id": "o-delivered", "data": {"status": "cancelled"}})


def test_a_fault_excuses_the_endings_it_allows_for_the_orders_it_overlapped() -> None:
    history, seen = good()
    cancel_for_timeout(history, seen)
    placed = history.records[0].place.started
    assert check(history, seen).violations.get(WRONG_ENDING)
    history.excuses.append(Excuse("provider down", placed - 100, placed - 50, PROVIDER_UNREACHABLE))
    assert check(history, seen).violations.get(WRONG_ENDING), "a fault long over excuses nothing"
    history.excuses.append(Excuse("provider down", placed + 1, placed + 20, PROVIDER_UNREACHABLE))
    result = check(history, seen)
    result.assert_ok()
    assert result.excused == 1


def test_a_deadline_passed_during_a_fault_excuses_a_timeout_only() -> None:
    history, seen = good()
    cancel_for_timeout(history, seen)
    placed = history.records[0].place.started
    # payments stopped from 5 s after the order until 30 s after, its deadline 8 s: excused
    history.excuses.append(deadline_passed("payments stopped", placed + 5, placed + 30, deadline=8.0))
    result = check(history, seen)
    result.assert_ok()
    assert result.excused == 1


def test_a_deadline_fault_excuses_no_order_placed_longer_than_the_deadline_before_it() -> None:
    history, seen = good()
    cancel_for_timeout(history, seen)
    placed = history.records[0].place.started
    # the fault began 9 s after the order: the order's steps had their whole 8 s with payments up
    history.excuses.append(deadline_passed("payments stopped", placed + 9, placed + 30, deadline=8.0))
    assert check(history, seen).violations.get(WRONG_ENDING)


def test_a_deadline_fault_does_not_excuse_a_refused_card() -> None:
    history, seen = good()
    cancel_for_timeout(history, seen, reason="payment_failed")
    placed = history.records[0].place.started
    history.excuses.append(deadline_passed("payments stopped", placed, placed + 30, deadline=8.0))
    assert check(history, seen).violations.get(WRONG_ENDING), "a good card was not refused by a stopped service"


def test_a_late_charge_of_an_excused_order_is_refunded_exactly_once() -> None:
    history, seen = good()
    cancel_for_timeout(history, seen)
    placed = history.records[0].place.started
    history.excuses.append(deadline_passed("payments stopped", placed, placed + 30, deadline=8.0))
    refunded_twice = copy.deepcopy(seen)
    refunded_twice.refunds.append({"id": "re_3", "charge": "ch_1", "amount": 2500})
    assert check(history, refunded_twice).count(DUPLICATED) == 1
    kept = copy.deepcopy(seen)
    kept.refunds = [r for r in kept.refunds if r["charge"] != "ch_1"]
    assert check(history, kept).violations.get(UNREFUNDED)
    charged_twice = copy.deepcopy(seen)
    charged_twice.charges.append({"id": "ch_4", "order_id": "o-delivered", "status": "succeeded", "amount": 2500})
    charged_twice.refunds.append({"id": "re_4", "charge": "ch_4", "amount": 2500})
    assert check(history, charged_twice).count(DUPLICATED) >= 1, "two charges are one too many, refunded or not"


def test_a_courier_arriving_may_be_announced_once_per_channel_or_not_at_all() -> None:
    """ "About N minutes away" goes out when the courier's tracker reports them near (never
    without trackers): once per channel is as expected as none."""
    history, seen = copy.deepcopy(good())
    assert check(history, seen).ok
    seen.notifications.append(arriving("o-delivered"))
    assert check(history, seen).ok
    seen.notifications.append(arriving("o-delivered"))
    result = check(history, seen)
    assert result.violations[f"{DUPLICATED} notifications"] == [
        "o-delivered: courier_arriving/sms sent 2, expected at most 1"
    ]
