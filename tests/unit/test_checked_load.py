"""The checked load from start to verdict (`pizzeria check`, the fault lab's panel), against an
in-memory system that does what the real one does for each order at once: its verdict is
"everything held" for a system that behaves, and names the one duplicated charge of one that
does not (a verdict that cannot fail proves nothing)."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest

from pizzeria.chaos.checker import DUPLICATED
from pizzeria.chaos.load import Refused
from pizzeria.chaos.run import CheckedLoad, Phase, run
from pizzeria.contracts.notifications import told
from pizzeria.web.checked import RATES, CheckedLab, as_rate
from pizzeria.web.render import Renderer
from tests.support.polling import eventually

MENU = [{"id": "m-margherita", "sizes": [{"size": "m"}], "recipe": [{"ingredient": "dough", "quantity": 1}]}]
DELIVERED = ["pending", "paid", "preparing", "baking", "ready", "out_for_delivery", "delivered"]


class FakeSystem:
    """Orders end the moment they are placed, each with every effect the real system has: a
    good card's is delivered (charged, cooked, delivered, notified), a declined one's cancelled."""

    url = "http://fake"

    def __init__(self, *, charge_twice: bool = False) -> None:
        self.charge_twice = charge_twice  # the first delivered order's charge made twice
        self.orders: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, str] = {}
        self.charges_made: list[dict[str, Any]] = []
        self.notified: list[dict[str, Any]] = []
        self.placed_audit: list[dict[str, Any]] = []
        self.status_audit: list[dict[str, Any]] = []
        self.consumed = 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def customer(self, name: str) -> str:
        return f"id-{name}"

    async def menu(self, *, include_unavailable: bool = False) -> list[dict[str, Any]]:
        return MENU

    async def place(
        self,
        body: dict[str, Any],
        *,
        customer: str,
        key: str | None = None,
        retry_for: float = 60.0,
        answers: list[str] | None = None,
    ) -> dict[str, Any]:
        if answers is not None:
            answers.append("202")
        if key in self.keys:
            return self.orders[self.keys[key]]
        order_id = str(uuid.uuid4())
        self.keys[key or order_id] = order_id
        good = body["payment"]["token"] != "tok_declined"
        path = DELIVERED if good else ["pending", "cancelled"]
        quantity = sum(line["quantity"] for line in body["items"])
        order = {
            "id": order_id,
            "customer_id": customer,
            "status": path[-1],
            "cancel_reason": None if good else "payment_failed",
            "cancel_requested": False,
            "payment_status": "completed" if good else "failed",
            "total": 1000 * quantity,
            "history": [{"status": s, "at": f"2026-01-01T12:00:{n:02d}+00:00"} for n, s in enumerate(path)],
            "items": body["items"],
        }
        self.orders[order_id] = order
        charge = {"id": f"ch-{order_id}", "order_id": order_id, "amount": order["total"]}
        self.charges_made.append({**charge, "status": "succeeded" if good else "declined"})
        if good and self.charge_twice:
            self.charge_twice = False
            self.charges_made.append({**charge, "id": "ch-again", "status": "succeeded"})
        if good:
            self.consumed += quantity
        contact = body["contact"]
        channels = [c for c, field in (("email", "email"), ("sms", "phone")) if contact.get(field)]
        templates = [f"order_{s.replace('pending', 'placed')}" for s in path]
        templates += ["payment_receipt"] if good else []
        for template in templates:
            for channel in told(template, channels):
                self.notified.append({"order_id": order_id, "template": template, "channel": channel})
        self.placed_audit.append({"message_id": str(uuid.uuid4()), "order_id": order_id})
        for status in path[1:]:
            self.status_audit.append(
                {"message_id": str(uuid.uuid4()), "order_id": order_id, "data": {"status": status}}
            )
        return order

    async def cancel(self, order_id: str, *, customer: str, retry_for: float = 60.0) -> tuple[int, bool]:
        if order_id not in self.orders:
            raise Refused(order_id)
        return 409, False  # it ended the moment it was placed

    async def find_order(self, order_id: str) -> dict[str, Any] | None:
        return self.orders.get(order_id)

    async def all_orders(self) -> list[dict[str, Any]]:
        return list(self.orders.values())

    async def payments(self, order_id: str) -> list[dict[str, Any]]:
        return [{"order_id": order_id}]

    async def charges(self, order_id: str | None = None) -> list[dict[str, Any]]:
        return [c for c in self.charges_made if order_id in (None, c["order_id"])]

    async def refunds(self) -> list[dict[str, Any]]:
        return []

    def _delivered(self) -> list[str]:
        return [i for i, o in self.orders.items() if o["status"] == "delivered"]

    async def tickets(self) -> list[dict[str, Any]]:
        return [{"order_id": i, "status": "ready"} for i in self._delivered()]

    async def deliveries(self) -> list[dict[str, Any]]:
        return [{"order_id": i, "status": "delivered"} for i in self._delivered()]

    async def all_notifications(self) -> list[dict[str, Any]]:
        return self.notified

    async def inventory(self) -> list[dict[str, Any]]:
        stock = 10_000
        return [
            {"ingredient": "dough", "on_hand": stock - self.consumed, "reserved": 0, "consumed": self.consumed}
            | {"received": stock}
        ]

    async def saga_counts(self) -> dict[str, int]:
        return {"completed": len(self.orders)}

    async def dead_letters(self) -> list[dict[str, Any]]:
        return []

    async def audit(self, message_type: str) -> list[dict[str, Any]]:
        return self.placed_audit if ".OrderPlaced." in message_type else self.status_audit


async def checked(system: FakeSystem) -> tuple[int, str]:
    said: list[str] = []
    status = await run(seconds=0.5, rate=20, write=said.append, shop=system, settle_for=5, agree_for=1)
    return status, "\n".join(said)


async def test_a_system_that_behaves_passes_the_check() -> None:
    status, output = await checked(FakeSystem())
    assert status == 0, output
    counts = dict(line.rsplit(maxsplit=1) for line in output.splitlines() if line[:1].isalpha() and "  " in line)
    assert int(counts["acknowledged"]) > 0
    assert int(counts["finished"]) == int(counts["acknowledged"])
    assert counts["lost"] == counts["duplicated"] == "0"
    assert "everything held" in output


async def test_one_charge_made_twice_fails_the_check_and_is_named() -> None:
    system = FakeSystem(charge_twice=True)
    status, output = await checked(system)
    assert status == 1, output
    twice = next(c["order_id"] for c in system.charges_made if c["id"] == "ch-again")
    assert f"{DUPLICATED} charges: {twice} x2" in output
    counts = dict(line.rsplit(maxsplit=1) for line in output.splitlines() if line[:1].isalpha() and "  " in line)
    assert counts["duplicated"] == "1"
    # the money kept for that order is twice its total: that is found too, and nothing else is
    wrong = [k for k, n in counts.items() if n != "0" and k not in ("acknowledged", "finished")]
    assert wrong == ["duplicated", "money unbalanced"]


async def test_the_fault_lab_panel_shows_the_violation() -> None:
    lab = CheckedLab(app=None)  # type: ignore[arg-type]  # its run is given below, not started from a form
    system = FakeSystem(charge_twice=True)
    lab.run = load = CheckedLoad(system, rate=20)
    await lab.run.start()
    await eventually(lambda: load.progress().acknowledged >= 3, "the load placed nothing", 10)
    running = render(lab)
    assert 'id="checked-phase">running<' in running
    assert "Stop and check" in running
    assert 'hx-get="/ops/faults/checked"' in running
    await lab.run.stop_and_check(settle_for=5, agree_for=1)
    assert lab.run.phase == Phase.DONE
    shown = render(lab)
    assert 'id="checked-start"' in shown
    assert "hx-get" not in shown
    assert "Violations found." in shown
    assert '<tr data-count="duplicated"><td>duplicated</td><td>1</td></tr>' in shown
    assert "duplicated charges" in shown
    assert Counter(c["status"] for c in system.charges_made)["succeeded"] >= 2


def render(lab: CheckedLab) -> str:
    return Renderer().fragment("_checked_load.html", checked=lab.view(), checked_busy=lab.busy, rates=RATES)


@pytest.mark.parametrize(("text", "rate"), [("3", 3), ("10", 10), ("0", None), ("11", None), ("2.5", None), ("", None)])
def test_the_panel_takes_only_a_whole_rate_from_1_to_10(text: str, rate: int | None) -> None:
    assert as_rate(text) == rate
