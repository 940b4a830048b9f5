"""An independent history checker, in the manner of Jepsen's: the load generator records every
request it made and the answer it got (a `History`); once the faults are healed and the system
has settled, everything is read back through the public and ops APIs (`observe`: orders,
payments, the provider's charges and refunds, kitchen tickets, deliveries, notifications, stock,
sagas, the audit log, dead letters) and `check` holds the two against each other:

- every order answered 2xx reaches exactly one terminal state, the one its story allows, by a
  valid path of the order state machine, in order; none is missing (**lost**);
- no charge, refund, payment, ticket, delivery, notification or audit entry is **duplicated**,
  and no order exists that no request asked for;
- each paid order that ended cancelled was refunded exactly once; the money taken is the money
  of the delivered orders (**money**); stock is conserved and nothing stays reserved (**stock**);
- no saga is left under way; every dead letter is **explained** (it belongs to a consumer group
  the nemesis made fail on purpose).

`check` is a pure function of the two records, so its logic is unit-tested against hand-made
histories (tests/unit/test_history_checker.py); `Result.assert_ok()` fails loudly on any
violation, and `Result.table()` prints the counts. The read-back is `pizzeria.chaos.readback`.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pizzeria.chaos.stories import AT_MOST_ONCE, TERMINAL, Placed, allowed_endings, expected_notifications
from pizzeria.contracts.orders import is_valid_path

#: Kinds of violation, each a count of the result; any non-zero fails the check.
LOST = "lost"  # answered 2xx, then missing or never finished
WRONG_ENDING = "wrong endings"  # finished otherwise than its story allows
INVALID_PATH = "invalid paths"  # a status history the state machine does not allow
PHANTOM = "phantom orders"  # orders no request asked for
UNREFUNDED = "unrefunded"  # cancelled after its charge, and not refunded
MONEY = "money unbalanced"  # charges, refunds and delivered orders disagree
STOCK = "stock unbalanced"  # an ingredient not conserved, still reserved, or consumed beyond the orders cooked
UNDER_WAY = "sagas under way"
UNEXPLAINED = "unexplained dead letters"
MISSING_EFFECTS = "missing effects"  # a delivered order without its ticket, delivery, charge or notification
FAILED = "run failed"  # the run itself broke off (a deadline passed, a service never answered)
DUPLICATED = "duplicated"  # one of the DUPLICATES below
DUPLICATES = ("charges", "refunds", "payments", "tickets", "deliveries", "notifications", "audit entries")


@dataclass
class Call:
    """One request of the load as its client saw it: when it began and ended (epoch seconds),
    and the answer of each attempt (a status code, or the name of the transport error)."""

    started: float
    ended: float | None = None
    answers: list[str] = field(default_factory=list)

    @property
    def status(self) -> int | None:
        """The last attempt's status code; None if it got none."""
        return int(self.answers[-1]) if self.answers and self.answers[-1].isdigit() else None


@dataclass
class OrderRecord:
    """An order the load asked for, with its story: its card, its contacts, and whether its
    customer asked to cancel it (and what they were answered)."""

    key: str  # the Idempotency-Key of every attempt
    customer: str
    card: str
    email: str | None
    phone: str | None
    place: Call
    order_id: str | None = None  # set once the order was answered 2xx
    cancel: Call | None = None
    cancel_uncertain: bool = False  # a 409 after an attempt whose fate is unknown

    @property
    def acknowledged(self) -> bool:
        return self.order_id is not None

    def as_placed(self, order: dict[str, Any]) -> Placed:
        """The record as the whole-system scenarios keep it, to ask them what it may end as."""
        cancel = self.cancel.status if self.cancel is not None else None
        return Placed(self.key, self.card, self.email, self.phone, order, cancel, self.cancel_uncertain)


@dataclass(frozen=True)
class Excuse:
    """Endings a fault makes legitimate for the orders it overlapped: with the payment provider
    unreachable past the saga's payment deadline, an order is cancelled (and its charge, should
    one go through late, refunded) — the system's promise is that it ends, not that it is
    delivered. An order overlaps the fault when it was placed at most `before` seconds before
    the fault began (its payment may still have been under way) and before it ended."""

    fault: str
    start: float
    end: float
    endings: frozenset[tuple[str, str | None]]
    before: float = 30.0

    def covers(self, record: OrderRecord) -> bool:
        return self.start - self.before <= record.place.started <= self.end


#: What the payment provider being unreachable may do to an order: cancelled on its deadline.
PROVIDER_UNREACHABLE = frozenset({("cancelled", "timeout"), ("cancelled", "payment_failed")})
#: What a saga step's deadline passing while the service (or the broker) that answers it is
#: down may do to an order: cancelled for the timeout, nothing else — the card was not refused,
#: so `payment_failed` is not excused; a charge made late must still be refunded exactly once.
DEADLINE_PASSED = frozenset({("cancelled", "timeout")})


def deadline_passed(fault: str, start: float, end: float, deadline: float) -> Excuse:
    """The excuse of a fault from `start` to `end` that a saga step's `deadline` (seconds) may
    outlast: only an order placed at most `deadline` seconds before the fault began can have had
    a step whose deadline fell inside it (a step starts when its order does, or later)."""
    return Excuse(fault, start, end, DEADLINE_PASSED, before=deadline)


@dataclass
class History:
    """What the load did and what it was answered; also which consumer groups a nemesis made
    fail on purpose (their dead letters are explained), the dead letters there were before, and
    the endings faults excuse."""

    records: list[OrderRecord] = field(default_factory=list)
    customers: set[str] = field(default_factory=set)
    failing_groups: set[str] = field(default_factory=set)
    excuses: list[Excuse] = field(default_factory=list)
    #: Dead letters the system already had when the load began (a run on a system in use):
    #: none of this run's doing.
    earlier_dead_letters: set[str] = field(default_factory=set)

    def allowed_endings(self, record: OrderRecord, order: dict[str, Any]) -> set[tuple[str, str | None]]:
        """(status, cancel reason) pairs the order may end with: its story's, and those the
        faults it overlapped excuse."""
        allowed = allowed_endings(record.as_placed(order))
        for excuse in self.excuses:
            if excuse.covers(record):
                allowed |= excuse.endings
        return allowed

    def begin(self, key: str, customer: str, card: str, email: str | None, phone: str | None) -> OrderRecord:
        record = OrderRecord(key, customer, card, email, phone, Call(time.time()))
        self.records.append(record)
        self.customers.add(customer)
        return record

    @property
    def acknowledged(self) -> list[OrderRecord]:
        return [r for r in self.records if r.acknowledged]


@dataclass
class Observed:
    """Everything read back from the system after it settled."""

    orders: dict[str, dict[str, Any]]  # acknowledged order id → its view (absent: not found)
    listed: list[dict[str, Any]]  # every order the orders API lists
    payments: dict[str, list[dict[str, Any]]]  # acknowledged order id → its payments
    charges: list[dict[str, Any]]  # every charge the provider made
    refunds: list[dict[str, Any]]
    tickets: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    notifications: list[dict[str, Any]]
    inventory: list[dict[str, Any]]
    menu: list[dict[str, Any]]  # every item, with its recipe
    sagas: dict[str, int]  # saga state → how many
    dead_letters: list[dict[str, Any]]
    placed_audit: list[dict[str, Any]]  # audit entries of OrderPlaced
    status_audit: list[dict[str, Any]]  # audit entries of OrderStatusChanged


@dataclass
class Result:
    """The verdict: counts of what went right, and every violation found, by kind."""

    acknowledged: int = 0
    finished: int = 0
    unanswered: int = 0  # requests never answered 2xx (indeterminate: they may or may not exist)
    excused: int = 0  # ended as only a fault they overlapped allows (see `Excuse`)
    violations: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, detail: str) -> None:
        self.violations[kind].append(detail)

    def count(self, kind: str) -> int:
        if kind == DUPLICATED:
            return sum(len(self.violations.get(f"{DUPLICATED} {d}", [])) for d in DUPLICATES)
        return len(self.violations.get(kind, []))

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def counts(self) -> dict[str, int]:
        kinds = [LOST, DUPLICATED, PHANTOM, WRONG_ENDING, INVALID_PATH, UNREFUNDED, MONEY, STOCK]
        kinds += [UNDER_WAY, UNEXPLAINED, MISSING_EFFECTS, FAILED]
        return {
            "acknowledged": self.acknowledged,
            "finished": self.finished,
            "unanswered": self.unanswered,
            "excused": self.excused,
            **{kind: self.count(kind) for kind in kinds},
        }

    def table(self) -> str:
        width = max(len(k) for k in self.counts())
        lines = [f"{kind:<{width}}  {n:>6}" for kind, n in self.counts().items()]
        for kind, details in sorted(self.violations.items()):
            if details:
                more = f" (+{len(details) - 5} more)" if len(details) > 5 else ""
                lines.append(f"{kind}: {'; '.join(details[:5])}{more}")
        return "\n".join(lines)

    def assert_ok(self) -> None:
        if not self.ok:
            raise AssertionError(f"the history checker found violations:\n{self.table()}")


def _twice(kind: str, keys: Iterable[Any], result: Result) -> None:
    for key, n in Counter(keys).items():
        if n > 1:
            result.add(f"{DUPLICATED} {kind}", f"{key} x{n}")


def check(history: History, seen: Observed) -> Result:
    """Hold what the system answers against what the load did and was told."""
    result = Result(acknowledged=len(history.acknowledged))
    result.unanswered = sum(1 for r in history.records if not r.acknowledged)
    acknowledged: dict[str, OrderRecord] = {}
    for record in history.acknowledged:
        assert record.order_id is not None
        if record.order_id in acknowledged:  # two requests, one order: the other one's is lost
            result.add(LOST, f"keys {acknowledged[record.order_id].key} and {record.key} got {record.order_id}")
        acknowledged[record.order_id] = record

    for order_id, record in acknowledged.items():
        order = seen.orders.get(order_id)
        if order is None:
            result.add(LOST, f"{order_id}: answered {record.place.status}, then not found")
            continue
        if order["status"] not in TERMINAL or order.get("cancel_requested"):
            result.add(LOST, f"{order_id}: still {order['status']}")
            continue
        result.finished += 1
        path = [h["status"] for h in order["history"]]
        if not is_valid_path(path) or [h["at"] for h in order["history"]] != sorted(h["at"] for h in order["history"]):
            result.add(INVALID_PATH, f"{order_id}: {path}")
        ending = (order["status"], order["cancel_reason"])
        if ending not in history.allowed_endings(record, order):
            cancel = record.cancel.status if record.cancel else None
            result.add(WRONG_ENDING, f"{order_id} ({record.card}, cancel {cancel}) ended {ending}")
        elif ending not in allowed_endings(record.as_placed(order)):
            result.excused += 1
        refused = record.cancel is not None and record.cancel.status == 409 and not record.cancel_uncertain
        if refused and "preparing" not in path and order["cancel_reason"] in (None, "customer_cancelled"):
            result.add(WRONG_ENDING, f"{order_id}: its cancel was refused while it could be cancelled: {path}")

    # Orders nobody asked for: any of the load's customers' orders that was never answered 2xx,
    # beyond one per request whose answer never came.
    unasked = [o["id"] for o in seen.listed if o["customer_id"] in history.customers and o["id"] not in acknowledged]
    if len(unasked) > result.unanswered:
        for order_id in unasked:
            result.add(PHANTOM, f"{order_id}: no request was answered with it")

    _check_money(acknowledged, seen, result)
    _check_effects(acknowledged, seen, result)
    _check_notifications(acknowledged, seen, result)

    _check_stock(seen, result)
    for state in ("running", "compensating"):
        if seen.sagas.get(state):
            result.add(UNDER_WAY, f"{seen.sagas[state]} {state}")
    for letter in seen.dead_letters:
        if letter["group_id"] not in history.failing_groups and letter.get("id") not in history.earlier_dead_letters:
            result.add(UNEXPLAINED, f"{letter['service']}/{letter['group_id']}: {letter['error'][:120]}")
    return result


def _check_money(acknowledged: dict[str, OrderRecord], seen: Observed, result: Result) -> None:
    """One charge at most per order, and one refund at most per charge; a cancelled order's
    charge refunded; the money kept is the delivered orders' total."""
    succeeded = [c for c in seen.charges if c["status"] == "succeeded"]
    _twice("charges", [c["order_id"] for c in succeeded if c.get("order_id")], result)
    _twice("refunds", [r["charge"] for r in seen.refunds], result)
    for order_id, payments in seen.payments.items():
        if len(payments) > 1:
            result.add(f"{DUPLICATED} payments", f"{order_id} x{len(payments)}")
    refunded = Counter(r["charge"] for r in seen.refunds)
    refunds_of: Counter[str] = Counter()
    for r in seen.refunds:
        refunds_of[r["charge"]] += r["amount"]
    kept = Counter[str]()
    for charge in succeeded:
        kept[charge["order_id"]] += charge["amount"] - refunds_of[charge["id"]]
    for order_id, order in seen.orders.items():
        if order_id not in acknowledged or order["status"] not in TERMINAL:
            continue
        charges = [c for c in succeeded if c["order_id"] == order_id]
        if order["status"] == "cancelled":
            for charge in charges:
                if not refunded[charge["id"]]:
                    result.add(UNREFUNDED, f"{order_id}: charge {charge['id']} kept")
        if order["cancel_reason"] == "out_of_stock" and any(c["order_id"] == order_id for c in seen.charges):
            result.add(MONEY, f"{order_id}: charged although nothing could be reserved")
        if order["status"] == "delivered" and order["payment_status"] != "completed":
            result.add(MONEY, f"{order_id} delivered, its payment {order['payment_status']}")
        if order["status"] == "cancelled" and charges and order["payment_status"] != "refunded":
            result.add(MONEY, f"{order_id} cancelled after its charge, its payment {order['payment_status']}")
        want = order["total"] if order["status"] == "delivered" else 0
        if kept[order_id] != want:
            result.add(MONEY, f"{order_id} {order['status']}: kept {kept[order_id]}, its total is {order['total']}")


def _check_stock(seen: Observed, result: Result) -> None:
    """Stock is conserved, nothing stays reserved, and what was consumed is exactly what the
    orders that were cooked (every order of the system that reached `preparing`) need: a
    reservation made twice and consumed would show here."""
    for item in seen.inventory:
        if item["on_hand"] + item["reserved"] + item["consumed"] != item["received"]:
            result.add(STOCK, f"{item['ingredient']}: on hand + reserved + consumed != received")
    recipes = {m["id"]: {r["ingredient"]: r["quantity"] for r in m["recipe"]} for m in seen.menu}
    needed: Counter[str] = Counter()
    for order in seen.listed:
        if any(h["status"] == "preparing" for h in order["history"]):
            for line in order["items"]:
                for ingredient, amount in recipes.get(line["menu_item_id"], {}).items():
                    needed[ingredient] += amount * line["quantity"]
    for item in seen.inventory:
        if item["reserved"]:
            result.add(STOCK, f"{item['ingredient']}: {item['reserved']} still reserved")
        need = needed[item["ingredient"]]
        if item["consumed"] != need:
            result.add(STOCK, f"{item['ingredient']}: {item['consumed']} consumed, the cooked orders need {need}")


def _check_effects(acknowledged: dict[str, OrderRecord], seen: Observed, result: Result) -> None:
    """One ticket, delivery and audit record of each kind per order; a delivered order has a
    finished ticket, a finished delivery and one status-change record per step of its history."""
    for kind, rows in (("tickets", seen.tickets), ("deliveries", seen.deliveries)):
        _twice(kind, [r["order_id"] for r in rows], result)
    _twice("audit entries", [e["message_id"] for e in [*seen.placed_audit, *seen.status_audit]], result)
    _twice("audit entries", [f"{e['order_id']} placed" for e in seen.placed_audit], result)
    _twice("audit entries", [f"{e['order_id']} {e['data']['status']}" for e in seen.status_audit], result)
    finished = {t["order_id"] for t in seen.tickets if t["status"] == "ready"}
    handed_over = {d["order_id"] for d in seen.deliveries if d["status"] == "delivered"}
    placed = {e["order_id"] for e in seen.placed_audit}
    changes = Counter(e["order_id"] for e in seen.status_audit)
    for order_id, order in seen.orders.items():
        if order_id not in acknowledged or order["status"] not in TERMINAL:
            continue
        if order_id not in placed:
            result.add(MISSING_EFFECTS, f"{order_id}: no OrderPlaced in the audit log")
        if changes[order_id] < len(order["history"]) - 1:
            result.add(MISSING_EFFECTS, f"{order_id}: {changes[order_id]} status changes audited")
        if order["status"] != "delivered":
            continue
        has = {
            "a finished ticket": order_id in finished,
            "a delivery": order_id in handed_over,
            "a charge": any(c["order_id"] == order_id and c["status"] == "succeeded" for c in seen.charges),
        }
        for what, there in has.items():
            if not there:
                result.add(MISSING_EFFECTS, f"{order_id}: delivered without {what}")


def _check_notifications(acknowledged: dict[str, OrderRecord], seen: Observed, result: Result) -> None:
    """One notification per status a customer is told of and channel (plus receipts and
    refunds), as `expected_notifications` says: more is a duplicate, fewer a missing effect."""
    got: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for n in seen.notifications:
        if n["order_id"] is not None:
            got[str(n["order_id"])][(n["template"], n["channel"])] += 1
    for order_id, order in seen.orders.items():
        record = acknowledged.get(order_id)
        if record is None or order["status"] not in TERMINAL:
            continue
        wants = expected_notifications(record.as_placed(order), order)
        found = got[order_id].copy()
        went_out = any(h["status"] == "out_for_delivery" for h in order["history"])
        channels = record.as_placed(order).channels
        once = [k for k, n in found.items() if k[0] in AT_MOST_ONCE and k[1] in channels and n == 1 and went_out]
        for template, channel in once:
            del found[(template, channel)]  # sent once, as it may be (more is a duplicate)
        if found in wants:
            continue
        expected = {
            k: "at most 1" if k[0] in AT_MOST_ONCE and k[1] in channels and went_out else min(w[k] for w in wants)
            for k in found
        }
        extra = [
            f"{t}/{c} sent {n}, expected {expected[(t, c)]}"
            for (t, c), n in found.items()
            if all(n > w[(t, c)] for w in wants)
        ]
        if extra:
            result.add(f"{DUPLICATED} notifications", f"{order_id}: {', '.join(extra)}")
        else:
            result.add(MISSING_EFFECTS, f"{order_id}: notifications {dict(found)} != {dict(wants[0])}")
