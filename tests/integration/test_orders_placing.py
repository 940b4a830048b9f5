"""Placing orders in sets, on SQLite and PostgreSQL: placements that come in together commit in
one transaction, in the statements of a placement alone; a refused placement in a set (422, 409)
writes nothing and holds up none of the others; two placements of one customer in a set count
each other against the unpaid limit; two with one idempotency key make one order; a set whose
commit fails is placed again one by one (nothing lost, nothing doubled); each placement's
messages carry its own caller's trace; and on PostgreSQL a set that races a placement with the
same key answers with the order that won (a replay, not a 409, when the unpaid limit is on), and
a set takes its customers' placement locks in one order, whatever the order its requests came in."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import UUID

import orjson
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY as METRICS

from pizzeria.contracts.kitchen import ReserveIngredients
from pizzeria.contracts.orders import OrderPlaced
from pizzeria.kit import context, failpoints
from pizzeria.kit.db import Database
from pizzeria.kit.errors import ValidationFailed
from pizzeria.messaging.saga import SagaEngine
from pizzeria.messaging.tables import outbox, sagas
from pizzeria.services.orders import handlers, repository
from pizzeria.services.orders.domain import CEILINGS, MenuEntry, Order, OrderLimits, RequestedLine
from pizzeria.services.orders.handlers import (
    BEFORE_COMMIT,
    IdempotencyKeyReused,
    PlaceOrder,
    Placer,
    TooManyUnpaidOrders,
    build_handlers,
)
from pizzeria.services.orders.saga import place_order_saga
from pizzeria.services.orders.settings import OrdersSettings
from pizzeria.services.orders.tables import idempotency_keys, metadata, orders
from tests.support.participant import HeldCommit, Participant, on_postgres
from tests.support.polling import eventually

PIZZA = MenuEntry(uuid.UUID("00000000-0000-7000-8000-00000000000a"), "Pizza", "EUR", {"medium": 1000}, True, 1)
NOT_ON_THE_MENU = uuid.UUID("00000000-0000-7000-8000-0000000000ff")
MAX_UNPAID = 2


@pytest.fixture
def engine() -> handlers.OrderSaga:
    return SagaEngine(place_order_saga(OrdersSettings()), listener=handlers.on_saga_transition)


async def with_menu(participant: Participant) -> Participant:
    async with participant.db.transaction() as conn:
        await repository.apply_menu_entry(conn, PIZZA)
    return participant


@pytest.fixture
async def shop(db: Database, engine: handlers.OrderSaga) -> Participant:
    return await with_menu(await Participant.create(db, metadata, build_handlers(engine), service="orders"))


@pytest.fixture
async def placer(shop: Participant, engine: handlers.OrderSaga) -> AsyncIterator[Placer]:
    placer = Placer(shop.runtime.uow, engine, OrderLimits(max_unpaid=MAX_UNPAID))
    yield placer
    await placer.close()


def placement(customer: str, *, key: str = "", item: UUID = PIZZA.id, quantity: int = 1) -> PlaceOrder:
    return PlaceOrder(
        customer_id=customer,
        idempotency_key=key or str(uuid.uuid4()),
        request_hash=f"{item}x{quantity}",
        lines=[RequestedLine(item, "medium", quantity)],
        payment_token="tok_visa",
        delivery_address="1 Main St",
        email=f"{customer}@example.com",
        phone=None,
    )


def commits() -> float:
    return METRICS.get_sample_value("pizzeria_db_transactions_total") or 0.0


def statements() -> float:
    return METRICS.get_sample_value("pizzeria_db_statements_total") or 0.0


def sets() -> tuple[float, float]:
    """Sets of placements written so far, and placements in them."""
    labels = {"set": "orders.place"}
    count = METRICS.get_sample_value("pizzeria_group_commit_set_size_count", labels) or 0.0
    return count, METRICS.get_sample_value("pizzeria_group_commit_set_size_sum", labels) or 0.0


async def written(shop: Participant) -> dict[str, Any]:
    """What the orders database holds: orders by customer, keys, sagas, and the outbox's
    messages by type and order."""
    sent = Counter((type(m).__name__, m.order_id) for m in await shop.emitted())  # type: ignore[attr-defined]
    return {
        "orders": Counter(r["customer_id"] for r in await shop.rows(orders)),
        "keys": {(r["customer_id"], r["key"]): r["order_id"] for r in await shop.rows(idempotency_keys)},
        "sagas": {r["id"] for r in await shop.rows(sagas)},
        "sent": sent,
    }


def placed(answer: object) -> Order:
    """The order of a placement that was not a replay."""
    assert isinstance(answer, tuple), answer
    order, replayed = answer
    assert replayed is False
    return order


async def test_placements_that_come_in_together_commit_in_one_transaction(shop: Participant, placer: Placer) -> None:
    before, counted = commits(), statements()
    [alone] = await asyncio.gather(placer.place(placement("zoe")))
    alone_statements = statements() - counted
    assert commits() - before == 1

    cmds = [placement(f"customer-{n}") for n in range(6)]
    before, counted, sets_before = commits(), statements(), sets()
    answers = await asyncio.gather(*(placer.place(cmd) for cmd in cmds))
    assert commits() - before == 1
    assert (sets()[0] - sets_before[0], sets()[1] - sets_before[1]) == (1, 6)
    assert statements() - counted == alone_statements  # a set costs the statements of one alone

    found = await written(shop)
    assert found["orders"] == Counter({"zoe": 1, **{cmd.customer_id: 1 for cmd in cmds}})
    for cmd, answer in zip(cmds, answers, strict=True):
        order = placed(answer)
        assert (order.customer_id, order.total) == (cmd.customer_id, 1000)
        assert found["keys"][(cmd.customer_id, cmd.idempotency_key)] == order.id
        assert str(order.id) in found["sagas"]
        assert found["sent"][("OrderPlaced", order.id)] == 1
        assert found["sent"][("ReserveIngredients", order.id)] == 1
    assert placed(alone).customer_id == "zoe"


async def test_a_refused_placement_in_a_set_writes_nothing_and_holds_up_none_of_the_others(
    shop: Participant, placer: Placer
) -> None:
    placed(await placer.place(placement("mallory")))  # one of MAX_UNPAID already waits for payment
    cmds = [
        placement("alice"),
        placement("bob", item=NOT_ON_THE_MENU),  # 422, in the middle
        placement("mallory"),  # the second of MAX_UNPAID
        placement("carol", quantity=0),  # 422: no pizza on the line
        placement("mallory"),  # 409: counts the one before it in the set
        placement("dave"),
    ]
    before = commits()
    answers = await asyncio.gather(*(placer.place(cmd) for cmd in cmds), return_exceptions=True)
    assert commits() - before == 1

    assert isinstance(answers[1], ValidationFailed)
    assert answers[1].status == 422
    assert [e["field"] for e in answers[1].errors or []] == ["items.0.menu_item_id"]
    assert isinstance(answers[3], ValidationFailed)
    assert [e["field"] for e in answers[3].errors or []] == ["items.0.quantity"]
    assert isinstance(answers[4], TooManyUnpaidOrders)
    assert answers[4].status == 409
    assert answers[4].detail.startswith(f"{MAX_UNPAID} of your orders are waiting for payment")
    accepted = {cmds[n].idempotency_key: placed(answers[n]) for n in (0, 2, 5)}

    found = await written(shop)
    assert found["orders"] == Counter({"mallory": 2, "alice": 1, "dave": 1})
    for n in (1, 3, 4):  # nothing of the refused ones
        assert (cmds[n].customer_id, cmds[n].idempotency_key) not in found["keys"]
    assert len(found["keys"]) == len(found["sagas"]) == 4
    assert sum(found["sent"].values()) == 8  # OrderPlaced and ReserveIngredients of each order placed
    for key, order in accepted.items():
        assert found["keys"][(order.customer_id, key)] == order.id


async def test_a_set_of_orders_with_nothing_on_the_menu_is_refused_and_writes_nothing(
    shop: Participant, placer: Placer
) -> None:
    """The menu is read with the customers' locks: with no entry found, the locks' row alone
    comes back, and it is no entry."""
    cmds = [placement("bob", item=NOT_ON_THE_MENU), placement("carol", item=NOT_ON_THE_MENU)]
    answers = await asyncio.gather(*(placer.place(cmd) for cmd in cmds), return_exceptions=True)
    for answer in answers:
        assert isinstance(answer, ValidationFailed), answer
        assert [e["field"] for e in answer.errors or []] == ["items.0.menu_item_id"]
    found = await written(shop)
    assert (found["orders"], found["keys"], found["sagas"]) == (Counter(), {}, set())


async def test_two_placements_with_one_key_in_a_set_make_one_order(shop: Participant, placer: Placer) -> None:
    earlier = placed(await placer.place(first := placement("alice", key="k-earlier")))
    cmds = [
        placement("bob", key="k1"),
        placement("bob", key="k1"),  # the same request again: the order placed just before
        placement("bob", key="k1", quantity=2),  # another request with that key: 422
        first,  # a retry of an order placed before the set
        placement("carol", key="k1"),  # one key, another customer: an order of its own
    ]
    answers = await asyncio.gather(*(placer.place(cmd) for cmd in cmds), return_exceptions=True)

    bobs = placed(answers[0])
    assert answers[1] == (bobs, True)
    assert isinstance(answers[2], IdempotencyKeyReused)
    assert answers[2].status == 422
    assert isinstance(answers[3], tuple)
    assert (answers[3][0].id, answers[3][1]) == (earlier.id, True)
    carols = placed(answers[4])
    found = await written(shop)
    assert found["orders"] == Counter({"alice": 1, "bob": 1, "carol": 1})
    assert found["keys"] == {("alice", "k-earlier"): earlier.id, ("bob", "k1"): bobs.id, ("carol", "k1"): carols.id}
    assert found["sent"][("OrderPlaced", bobs.id)] == 1


@pytest.fixture
def first_set_fails() -> Iterator[None]:
    """The next set (or placement alone) fails just before its commit; later ones do not."""
    failpoints.configure(f"{BEFORE_COMMIT}=error@1")
    yield
    failpoints.configure("")


@pytest.mark.usefixtures("first_set_fails")
async def test_a_set_whose_commit_fails_is_placed_again_one_by_one(shop: Participant, placer: Placer) -> None:
    cmds = [placement(f"customer-{n}") for n in range(4)]
    refused = placement("bob", item=NOT_ON_THE_MENU)
    before, sets_before = commits(), sets()
    answers = await asyncio.gather(*(placer.place(cmd) for cmd in [*cmds, refused]), return_exceptions=True)
    assert sets()[0] - sets_before[0] == 1
    assert commits() - before == 4  # the set rolled back; each of its placements committed alone
    assert isinstance(answers[-1], ValidationFailed)  # refused alone as in the set

    found = await written(shop)
    assert found["orders"] == Counter({cmd.customer_id: 1 for cmd in cmds})  # nothing lost, nothing doubled
    for cmd, answer in zip(cmds, answers, strict=False):
        order = placed(answer)
        assert found["keys"][(cmd.customer_id, cmd.idempotency_key)] == order.id
        assert (found["sent"][("OrderPlaced", order.id)], found["sent"][("ReserveIngredients", order.id)]) == (1, 1)
    assert sum(found["sent"].values()) == 8


async def test_each_placements_messages_carry_the_trace_and_correlation_of_its_request(
    shop: Participant, placer: Placer
) -> None:
    traces = {f"customer-{n}": f"00-{uuid.uuid4().hex}-{'0' * 15}{n + 1}-01" for n in range(2)}

    async def place_within_its_trace(customer: str) -> Order:
        context.traceparent.set(traces[customer])
        context.correlation_id.set(f"request-{customer}")
        return placed(await placer.place(placement(customer)))

    before = commits()
    placed_orders = await asyncio.gather(*(place_within_its_trace(c) for c in traces))
    assert commits() - before == 1  # in one set, yet each message in its own trace
    headers = [orjson.loads(r["headers"]) for r in await shop.rows(outbox)]
    for order in placed_orders:
        sent = {h["ce_type"]: h for h in headers if h.get("ce_subject") == str(order.id)}
        assert set(sent) == {OrderPlaced.type_name(), ReserveIngredients.type_name()}
        for h in sent.values():
            assert (h["ce_traceparent"], h["ce_correlationid"]) == (
                traces[order.customer_id],
                f"request-{order.customer_id}",
            )


@pytest.fixture
async def shop_on_postgres(engine: handlers.OrderSaga) -> AsyncIterator[Participant]:
    async with on_postgres(metadata, build_handlers(engine), service="orders") as shop:
        yield await with_menu(shop)


async def waiting_for_a_lock(db: Database) -> bool:
    async with db.read() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        return bool((await conn.execute(sa.text(query))).scalar_one())


@contextlib.asynccontextmanager
async def placed_and_held(
    shop: Participant, engine: handlers.OrderSaga, cmd: PlaceOrder, limits: OrderLimits = CEILINGS
) -> AsyncIterator[tuple[asyncio.Task[handlers.Placed], asyncio.Event]]:
    """Another replica placing `cmd` alone: its rows are written (its key's too), its commit
    held until the event is set (on leaving, at the latest)."""
    first = shop.runtime.uow()
    held = HeldCommit(first, flushed=True)
    winning = asyncio.create_task(handlers.place_order(cmd, first, engine, limits))
    try:
        await asyncio.wait_for(held.reached.wait(), timeout=10)
        yield winning, held.release
    finally:
        held.release.set()
        await asyncio.wait_for(asyncio.gather(winning, return_exceptions=True), timeout=10)


@pytest.mark.postgres
async def test_a_set_racing_a_placement_with_the_same_key_answers_with_the_order_that_won(
    shop_on_postgres: Participant, engine: handlers.OrderSaga
) -> None:
    """A placement alone has written its key and not committed yet; a set with the same key
    (it did not see it) waits on the key's row, then fails when the placement commits. Each of
    the set's placements is then placed alone: the retry is answered with the order that won,
    its neighbour is placed. (PostgreSQL: on SQLite one transaction writes at a time.)"""
    shop = shop_on_postgres
    placer = Placer(shop.runtime.uow, engine)  # no unpaid limit: no customer's lock to wait for
    retried, neighbour = placement("alice", key="k"), placement("bob")
    try:
        async with placed_and_held(shop, engine, retried) as (winning, release):
            racing = asyncio.gather(placer.place(retried), placer.place(neighbour))
            await eventually(lambda: waiting_for_a_lock(shop.db), "the set never waited for the key", 10, every=0.01)
            release.set()
            won, _ = await asyncio.wait_for(winning, timeout=10)
            (again, replayed), (bobs, _) = await asyncio.wait_for(racing, timeout=10)
    finally:
        await placer.close()
    assert (again.id, replayed) == (won.id, True)
    found = await written(shop)
    assert found["orders"] == Counter({"alice": 1, "bob": 1})
    assert found["keys"] == {("alice", "k"): won.id, ("bob", neighbour.idempotency_key): bobs.id}


@pytest.mark.postgres
async def test_with_the_unpaid_limit_a_retry_racing_its_first_try_is_a_replay_not_a_409(
    shop_on_postgres: Participant, engine: handlers.OrderSaga
) -> None:
    """With the unpaid limit, a placement takes its customer's lock before it reads the keys:
    a set with the retry of an order another replica is placing waits for that placement's
    commit, then finds its key (the retry is the order that won, though it is the customer's
    last unpaid one) instead of counting it as one more unpaid order (409)."""
    shop = shop_on_postgres
    limits = OrderLimits(max_unpaid=MAX_UNPAID)
    placer = Placer(shop.runtime.uow, engine, limits)
    for _ in range(MAX_UNPAID - 1):
        placed(await placer.place(placement("alice")))
    retried, neighbour = placement("alice", key="k"), placement("bob")
    try:
        async with placed_and_held(shop, engine, retried, limits) as (winning, release):
            racing = asyncio.gather(placer.place(retried), placer.place(neighbour), return_exceptions=True)
            await eventually(
                lambda: waiting_for_a_lock(shop.db), "the set never waited for alice's lock", 10, every=0.01
            )
            release.set()
            won, _ = await asyncio.wait_for(winning, timeout=10)
            again, bobs = await asyncio.wait_for(racing, timeout=10)
    finally:
        await placer.close()
    assert isinstance(again, tuple), again
    assert (again[0].id, again[1]) == (won.id, True)
    assert placed(bobs).customer_id == "bob"
    assert (await written(shop))["orders"] == Counter({"alice": MAX_UNPAID, "bob": 1})


@pytest.mark.postgres
async def test_a_set_takes_its_customers_locks_in_one_order_whatever_the_order_they_came_in(
    shop_on_postgres: Participant, engine: handlers.OrderSaga
) -> None:
    """Two sets (two replicas') that took their customers' locks in the order their requests
    came could each hold one the other waits for. Every transaction takes them in the
    customers' order: a set of bob's then alice's placement, waiting for bob's lock, holds
    alice's already (and no one can hold alice's while waiting for bob's)."""
    shop = shop_on_postgres
    placer = Placer(shop.runtime.uow, engine, OrderLimits(max_unpaid=MAX_UNPAID))
    holder = shop.runtime.uow()
    try:
        async with holder:
            # another replica's set, placing bob's
            await repository.lock_customers_and_read_menu(holder.conn, ["bob"], [])
            placing = asyncio.gather(placer.place(placement("bob")), placer.place(placement("alice")))
            await eventually(lambda: waiting_for_a_lock(shop.db), "the set never waited for bob's lock", 10, every=0.01)
            async with shop.db.read() as conn:
                alices = sa.func.hashtextextended("orders.placement:alice", 0)
                taken = (await conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(alices)))).scalar_one()
            assert taken is False  # the set holds alice's
        answers = await asyncio.wait_for(placing, timeout=10)
    finally:
        await placer.close()
    assert [placed(a).customer_id for a in answers] == ["bob", "alice"]
    assert (await written(shop))["orders"] == Counter({"bob": 1, "alice": 1})
