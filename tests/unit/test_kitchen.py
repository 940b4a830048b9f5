"""Kitchen as a saga participant, on a real SQLite database through the real consumer runner:
what an order needs, all-or-nothing reservations, releasing them, tickets through the kitchen
(consuming the reservation when cooking starts), cancelling tickets, and stock staying conserved
(on_hand + reserved + consumed == received)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any
from uuid import UUID, uuid4

import pytest
from prometheus_client import REGISTRY as METRICS

from pizzeria.chassis.ops import act_on_dead_letter
from pizzeria.contracts.catalog import MenuItemCreated, MenuItemRemoved, MenuItemUpdated, MenuSize, RecipeLine
from pizzeria.contracts.kitchen import (
    CancelTicket,
    IngredientAmount,
    IngredientsReleased,
    IngredientsReserved,
    IngredientsUnavailable,
    KitchenLine,
    QueueTicket,
    ReleaseIngredients,
    ReserveIngredients,
    Shortage,
    StockReplenished,
    TicketBaking,
    TicketCancelled,
    TicketCancelRefused,
    TicketQueued,
    TicketReady,
    TicketStarted,
)
from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.errors import Conflict, NotFound
from pizzeria.messaging.consumer import Outcome, RetryPolicy
from pizzeria.messaging.deadletters import as_record
from pizzeria.messaging.envelope import Envelope
from pizzeria.services.kitchen import repository
from pizzeria.services.kitchen.domain import Line, TicketStatus, UnknownRecipe, needs, next_status, shortages
from pizzeria.services.kitchen.handlers import (
    advance_ticket,
    advance_tickets,
    build_handlers,
    build_menu_handlers,
    seed_opening_stock,
    set_stock,
)
from pizzeria.services.kitchen.stock import OPENING_STOCK
from pizzeria.services.kitchen.tables import ingredients, metadata, recipes, reservations, tickets
from tests.support.participant import ONE_ATTEMPT, Participant, decode
from tests.support.polling import eventually

MARGHERITA = UUID("00000000-0000-7000-8000-000000000001")
PEPPERONI = UUID("00000000-0000-7000-8000-000000000002")
RECIPES = {
    MARGHERITA: {"dough": 1, "tomato_sauce": 80, "mozzarella": 100},
    PEPPERONI: {"dough": 1, "tomato_sauce": 80, "mozzarella": 90, "pepperoni": 60},
}
OPENING = {"dough": 10, "tomato_sauce": 1_000, "mozzarella": 1_000, "pepperoni": 100}
# Two margheritas and a pepperoni need:
ORDER_NEEDS = {"dough": 3, "tomato_sauce": 240, "mozzarella": 290, "pepperoni": 60}


@pytest.fixture
def wakes() -> list[str]:
    return []


@pytest.fixture
async def kitchen(db: Database, wakes: list[str]) -> Participant:
    """The kitchen with two recipes and some stock."""
    participant = await Participant.create(
        db, metadata, build_handlers(lambda: wakes.append("autopilot")), service="kitchen"
    )
    # A reservation whose recipe is unknown is dead-lettered at once, not waited on (a test
    # below gives the runner the patience a recipe on its way gets).
    participant.runner.retry = dataclasses.replace(ONE_ATTEMPT, transient_patience=0.0)
    async with db.transaction() as conn:
        for item_id, recipe in RECIPES.items():
            await repository.apply_recipe(conn, item_id, "pizza", recipe, 1)
        for name, amount in OPENING.items():
            await repository.set_on_hand(conn, name, amount, utcnow())
    return participant


@pytest.fixture
def menu(db: Database, kitchen: Participant) -> Participant:
    """The kitchen's other group on the same database: the one that learns the recipes."""
    return Participant(db, build_menu_handlers(), service="kitchen", group="kitchen-menu")


def order_lines(margheritas: int = 2, pepperonis: int = 1) -> list[KitchenLine]:
    found = [(MARGHERITA, "Margherita", margheritas), (PEPPERONI, "Pepperoni", pepperonis)]
    return [KitchenLine(menu_item_id=i, name=n, size="m", quantity=q) for i, n, q in found if q]


def amounts(values: dict[str, int]) -> list[IngredientAmount]:
    return [IngredientAmount(ingredient=i, quantity=q) for i, q in sorted(values.items())]


async def stock(kitchen: Participant) -> dict[str, tuple[int, int, int, int]]:
    """Ingredient → (on_hand, reserved, consumed, received); asserts they are conserved."""
    found = {
        r["name"]: (r["on_hand"], r["reserved"], r["consumed"], r["received"]) for r in await kitchen.rows(ingredients)
    }
    for name, (on_hand, reserved, consumed, received) in found.items():
        assert on_hand + reserved + consumed == received, f"{name} is not conserved"
    return found


def expected_stock(
    *, reserved: dict[str, int] | None = None, consumed: dict[str, int] | None = None
) -> dict[str, tuple[int, int, int, int]]:
    """The stock rows after moving `reserved` and `consumed` out of the opening stock."""
    reserved, consumed = reserved or {}, consumed or {}
    return {
        name: (
            amount - reserved.get(name, 0) - consumed.get(name, 0),
            reserved.get(name, 0),
            consumed.get(name, 0),
            amount,
        )
        for name, amount in OPENING.items()
    }


async def held(kitchen: Participant, order_id: UUID) -> dict[str, tuple[int, str]]:
    """Ingredient → (quantity, status) of the order's reservation rows."""
    rows = await kitchen.rows(reservations, reservations.c.order_id == order_id)
    return {r["ingredient"]: (r["quantity"], r["status"]) for r in rows}


async def ticket_of(kitchen: Participant, order_id: UUID) -> dict[str, Any]:
    [row] = await kitchen.rows(tickets, tickets.c.order_id == order_id)
    return row


async def queued_ticket(kitchen: Participant, order_id: UUID) -> UUID:
    """Reserve for the order and queue its ticket, as the saga does once it is paid."""
    await kitchen.send(ReserveIngredients(order_id=order_id, lines=order_lines()))
    [queued] = await kitchen.send(QueueTicket(order_id=order_id, lines=order_lines()))
    assert isinstance(queued, TicketQueued)
    return queued.ticket_id


async def advance(kitchen: Participant, ticket_id: UUID) -> tuple[TicketStatus, list[Any]]:
    uow = kitchen.uow()
    status = await advance_ticket(uow, ticket_id)
    return status, [decode(e) for e in uow.emitted]


# -- the rules ---------------------------------------------------------------------------------


def test_needs_multiplies_each_recipe_by_its_quantity_and_adds_them_up() -> None:
    lines = [Line(MARGHERITA, 2), Line(PEPPERONI, 1)]
    assert needs(lines, RECIPES) == ORDER_NEEDS


def test_needs_of_the_same_item_on_two_lines_adds_up() -> None:
    assert needs([Line(PEPPERONI, 2), Line(PEPPERONI, 3)], RECIPES) == {
        "dough": 5,
        "tomato_sauce": 400,
        "mozzarella": 450,
        "pepperoni": 300,
    }


def test_needs_of_an_item_without_a_recipe_raises_unknown_recipe() -> None:
    stranger = uuid4()
    with pytest.raises(UnknownRecipe, match=str(stranger)):
        needs([Line(MARGHERITA, 1), Line(stranger, 1)], RECIPES)


def test_shortages_list_what_is_short_with_needed_and_available() -> None:
    need = {"dough": 3, "mozzarella": 290, "pepperoni": 60, "basil": 2}
    have = {"dough": 3, "mozzarella": 100, "pepperoni": 500}
    assert shortages(need, have) == {"basil": (2, 0), "mozzarella": (290, 100)}
    assert list(shortages(need, have)) == ["basil", "mozzarella"]  # by name


def test_nothing_is_short_when_everything_is_on_hand() -> None:
    assert shortages(ORDER_NEEDS, OPENING) == {}


def test_a_ticket_moves_queued_preparing_baking_ready() -> None:
    assert next_status(TicketStatus.QUEUED) is TicketStatus.PREPARING
    assert next_status(TicketStatus.PREPARING) is TicketStatus.BAKING
    assert next_status(TicketStatus.BAKING) is TicketStatus.READY


@pytest.mark.parametrize("status", [TicketStatus.READY, TicketStatus.CANCELLED])
def test_a_ready_or_cancelled_ticket_cannot_move_on(status: TicketStatus) -> None:
    with pytest.raises(Conflict):
        next_status(status)


# -- recipes from the catalog -----------------------------------------------------------------


def menu_item(
    cls: type[MenuItemCreated] | type[MenuItemUpdated], item_id: UUID, version: int, recipe: dict[str, int]
) -> MenuItemCreated | MenuItemUpdated:
    return cls(
        menu_item_id=item_id,
        version=version,
        name=f"v{version}",
        sizes=[MenuSize(size="m", price=900)],
        recipe=[RecipeLine(ingredient=i, quantity=q) for i, q in recipe.items()],
    )


async def recipe_of(kitchen: Participant, item_id: UUID) -> dict[str, Any]:
    [row] = await kitchen.rows(recipes, recipes.c.menu_item_id == item_id)
    return row


async def test_the_kitchen_learns_recipes_and_keeps_the_newest(kitchen: Participant, menu: Participant) -> None:
    item_id = uuid4()
    await menu.send(menu_item(MenuItemCreated, item_id, 1, {"dough": 1}))
    await menu.send(menu_item(MenuItemUpdated, item_id, 3, {"dough": 1, "pepperoni": 10}))
    await menu.send(menu_item(MenuItemUpdated, item_id, 2, {"dough": 2}))  # late and older
    row = await recipe_of(kitchen, item_id)
    assert (row["ingredients"], row["version"], row["removed"]) == ({"dough": 1, "pepperoni": 10}, 3, False)

    order_id = uuid4()
    line = KitchenLine(menu_item_id=item_id, name="v3", size="m", quantity=2)
    assert await kitchen.send(ReserveIngredients(order_id=order_id, lines=[line])) == [
        IngredientsReserved(order_id=order_id, reserved=amounts({"dough": 2, "pepperoni": 20}))
    ]


async def test_a_removed_item_keeps_its_recipe_for_orders_placed_before(
    kitchen: Participant, menu: Participant
) -> None:
    await menu.send(MenuItemRemoved(menu_item_id=MARGHERITA, version=2))
    row = await recipe_of(kitchen, MARGHERITA)
    assert (row["removed"], row["version"], row["ingredients"]) == (True, 2, RECIPES[MARGHERITA])
    order_id = uuid4()
    [reply] = await kitchen.send(ReserveIngredients(order_id=order_id, lines=order_lines(1, 0)))
    assert isinstance(reply, IngredientsReserved)


# -- reserving ---------------------------------------------------------------------------------


async def test_reserve_holds_everything_the_order_needs(kitchen: Participant) -> None:
    order_id = uuid4()
    replies = await kitchen.send(ReserveIngredients(order_id=order_id, lines=order_lines()))
    assert replies == [IngredientsReserved(order_id=order_id, reserved=amounts(ORDER_NEEDS))]
    assert await stock(kitchen) == expected_stock(reserved=ORDER_NEEDS)
    assert await held(kitchen, order_id) == {i: (q, "held") for i, q in ORDER_NEEDS.items()}


async def test_reservations_of_two_orders_add_up(kitchen: Participant) -> None:
    first, second = uuid4(), uuid4()
    await kitchen.send(ReserveIngredients(order_id=first, lines=order_lines()))
    await kitchen.send(ReserveIngredients(order_id=second, lines=order_lines(margheritas=1, pepperonis=0)))
    margherita = RECIPES[MARGHERITA]
    both = {i: ORDER_NEEDS[i] + margherita.get(i, 0) for i in ORDER_NEEDS}
    assert await stock(kitchen) == expected_stock(reserved=both)
    assert await held(kitchen, second) == {i: (q, "held") for i, q in margherita.items()}


async def test_a_shortage_holds_nothing_and_says_what_is_short(kitchen: Participant) -> None:
    order_id = uuid4()
    # 11 pizzas: dough, mozzarella and pepperoni run short; the sauce would do.
    replies = await kitchen.send(ReserveIngredients(order_id=order_id, lines=order_lines(9, 2)))
    assert replies == [
        IngredientsUnavailable(
            order_id=order_id,
            missing=[
                Shortage(ingredient="dough", needed=11, available=10),
                Shortage(ingredient="mozzarella", needed=1_080, available=1_000),
                Shortage(ingredient="pepperoni", needed=120, available=100),
            ],
        )
    ]
    assert await stock(kitchen) == expected_stock()  # not even the ingredients there were enough of
    assert await held(kitchen, order_id) == {}


async def test_an_ingredient_the_kitchen_never_stocked_is_short(kitchen: Participant) -> None:
    basil_pizza = uuid4()
    async with kitchen.db.transaction() as conn:
        await repository.apply_recipe(conn, basil_pizza, "basil", {"dough": 1, "basil": 5}, 1)
    order_id = uuid4()
    line = KitchenLine(menu_item_id=basil_pizza, name="Basil", size="m", quantity=1)
    replies = await kitchen.send(ReserveIngredients(order_id=order_id, lines=[line]))
    assert replies == [
        IngredientsUnavailable(order_id=order_id, missing=[Shortage(ingredient="basil", needed=5, available=0)])
    ]
    assert await stock(kitchen) == expected_stock()
    assert await held(kitchen, order_id) == {}


async def test_what_another_order_holds_is_not_available(kitchen: Participant) -> None:
    await kitchen.send(ReserveIngredients(order_id=uuid4(), lines=order_lines(0, 1)))  # 60 of 100 pepperoni
    order_id = uuid4()
    [reply] = await kitchen.send(ReserveIngredients(order_id=order_id, lines=order_lines(0, 1)))
    assert reply == IngredientsUnavailable(
        order_id=order_id, missing=[Shortage(ingredient="pepperoni", needed=60, available=40)]
    )
    assert await held(kitchen, order_id) == {}


async def test_a_resent_reserve_answers_again_without_holding_twice(kitchen: Participant) -> None:
    order_id = uuid4()
    command = ReserveIngredients(order_id=order_id, lines=order_lines())
    first = await kitchen.send(command)
    again = await kitchen.send(command)  # a new envelope: the saga sent it again
    assert again == first == [IngredientsReserved(order_id=order_id, reserved=amounts(ORDER_NEEDS))]
    assert await stock(kitchen) == expected_stock(reserved=ORDER_NEEDS)
    assert await held(kitchen, order_id) == {i: (q, "held") for i, q in ORDER_NEEDS.items()}


async def test_the_same_reserve_record_delivered_twice_is_handled_once(kitchen: Participant) -> None:
    order_id = uuid4()
    command = ReserveIngredients(order_id=order_id, lines=order_lines())
    envelope = Envelope.wrap(command, source="/pizzeria/orders")
    assert await kitchen.deliver(envelope, command.topic()) is Outcome.PROCESSED
    assert await kitchen.deliver(envelope, command.topic()) is Outcome.DUPLICATE
    assert len(await kitchen.caused_by(envelope.id)) == 1
    assert await stock(kitchen) == expected_stock(reserved=ORDER_NEEDS)


async def test_a_reserve_for_an_item_never_learnt_ends_as_a_dead_letter_holding_nothing(
    kitchen: Participant,
) -> None:
    order_id = uuid4()
    stranger = KitchenLine(menu_item_id=uuid4(), name="?", size="m", quantity=1)
    command = ReserveIngredients(order_id=order_id, lines=[*order_lines(), stranger])
    envelope = Envelope.wrap(command, source="/pizzeria/orders")
    # The handler fails rather than answering anything (the runner here has no patience for a
    # recipe not there yet; the next test gives it some, and the recipe comes).
    assert await kitchen.deliver(envelope, command.topic()) is Outcome.DEAD_LETTERED
    [dead] = await kitchen.runtime.dead_letters.recent()
    assert dead["error"].startswith(f"NotYet: no recipe for menu item {stranger.menu_item_id} yet")
    assert await kitchen.caused_by(envelope.id) == []
    assert await stock(kitchen) == expected_stock()
    assert await held(kitchen, order_id) == {}


async def test_a_reserve_that_comes_before_its_recipe_waits_for_it_past_its_attempts(
    kitchen: Participant, menu: Participant
) -> None:
    # The saga's command can overtake the catalog's event that tells the kitchen the recipe
    # (orders learnt the item first): the command waits, as for an outage, while the kitchen's
    # menu group, which reads the catalog apart from the commands, brings the recipe in.
    attempts = 3
    kitchen.runner.retry = RetryPolicy(
        max_attempts=attempts, initial_backoff=0.01, max_backoff=0.05, transient_patience=30.0
    )
    item_id, order_id = uuid4(), uuid4()
    line = KitchenLine(menu_item_id=item_id, name="New", size="m", quantity=2)
    command = ReserveIngredients(order_id=order_id, lines=[line])
    envelope = Envelope.wrap(command, source="/pizzeria/orders")

    def retried() -> float:
        return METRICS.get_sample_value("pizzeria_consumer_retries_total", {"group": "kitchen"}) or 0.0

    before = retried()
    reserving = asyncio.create_task(kitchen.deliver(envelope, command.topic()))

    def retried_past_the_attempts() -> bool:  # past the attempts an ordinary failure gets
        if retried() - before >= attempts:
            return True
        assert not reserving.done(), f"the reservation ended as {reserving.result()} without its recipe"
        return False

    await eventually(retried_past_the_attempts, "the reservation was never retried", 10, every=0.01)
    await menu.send(menu_item(MenuItemCreated, item_id, 1, {"dough": 1, "mozzarella": 50}))
    async with asyncio.timeout(10):
        assert await reserving is Outcome.PROCESSED
    assert await kitchen.caused_by(envelope.id) == [
        IngredientsReserved(order_id=order_id, reserved=amounts({"dough": 2, "mozzarella": 100}))
    ]
    assert await kitchen.runtime.dead_letters.recent() == []


# -- releasing ---------------------------------------------------------------------------------


async def test_release_puts_the_held_stock_back(kitchen: Participant) -> None:
    order_id = uuid4()
    await kitchen.send(ReserveIngredients(order_id=order_id, lines=order_lines()))
    replies = await kitchen.send(ReleaseIngredients(order_id=order_id))
    assert replies == [IngredientsReleased(order_id=order_id, released=amounts(ORDER_NEEDS))]
    assert await stock(kitchen) == expected_stock()
    assert await held(kitchen, order_id) == {i: (q, "released") for i, q in ORDER_NEEDS.items()}


async def test_release_with_nothing_held_still_answers(kitchen: Participant) -> None:
    order_id = uuid4()
    replies = await kitchen.send(ReleaseIngredients(order_id=order_id))
    assert replies == [IngredientsReleased(order_id=order_id, released=[])]
    assert await stock(kitchen) == expected_stock()


async def test_a_second_release_gives_nothing_back_twice(kitchen: Participant) -> None:
    order_id = uuid4()
    await kitchen.send(ReserveIngredients(order_id=order_id, lines=order_lines()))
    await kitchen.send(ReleaseIngredients(order_id=order_id))
    assert await kitchen.send(ReleaseIngredients(order_id=order_id)) == [
        IngredientsReleased(order_id=order_id, released=[])
    ]
    assert await stock(kitchen) == expected_stock()


async def test_release_leaves_other_orders_holdings_alone(kitchen: Participant) -> None:
    kept, released = uuid4(), uuid4()
    await kitchen.send(ReserveIngredients(order_id=kept, lines=order_lines()))
    await kitchen.send(ReserveIngredients(order_id=released, lines=order_lines()))
    await kitchen.send(ReleaseIngredients(order_id=released))
    assert await stock(kitchen) == expected_stock(reserved=ORDER_NEEDS)
    assert {s for _, s in (await held(kitchen, kept)).values()} == {"held"}


async def test_a_reserve_and_its_release_in_one_run_leave_the_reservation_released(kitchen: Participant) -> None:
    # The kitchen was behind: the saga gave up on one order's reservation and released it,
    # and another's, held earlier; the run holds both commands of the one and the release of
    # the other, handled in one transaction.
    earlier, late = uuid4(), uuid4()
    await kitchen.send(ReserveIngredients(order_id=earlier, lines=order_lines()))
    await kitchen.deliver_run(
        [
            ReleaseIngredients(order_id=earlier),
            ReserveIngredients(order_id=late, lines=order_lines()),
            ReleaseIngredients(order_id=late),
        ]
    )
    assert await stock(kitchen) == expected_stock()
    assert await held(kitchen, late) == {i: (q, "released") for i, q in ORDER_NEEDS.items()}
    assert await held(kitchen, earlier) == {i: (q, "released") for i, q in ORDER_NEEDS.items()}


async def test_a_reserve_resent_after_the_release_holds_nothing_again(kitchen: Participant) -> None:
    order_id = uuid4()
    command = ReserveIngredients(order_id=order_id, lines=order_lines())
    await kitchen.send(command)
    await kitchen.send(ReleaseIngredients(order_id=order_id))
    late = await kitchen.send(command)
    assert not any(isinstance(m, IngredientsReserved) for m in late)
    assert await stock(kitchen) == expected_stock()


async def test_a_reserve_replayed_after_the_saga_released_the_order_holds_nothing(kitchen: Participant) -> None:
    # The reserve is dead-lettered (the recipe had not arrived), the saga times out and releases
    # (nothing was held), the recipe arrives, and an operator replays the dead letter. The saga
    # is compensated and ignores any reply: whatever the replay held would stay held for good.
    order_id = uuid4()
    late_item = uuid4()
    command = ReserveIngredients(
        order_id=order_id, lines=[KitchenLine(menu_item_id=late_item, name="Late", size="m", quantity=1)]
    )
    assert (
        await kitchen.deliver(Envelope.wrap(command, source="/pizzeria/orders"), command.topic())
        is Outcome.DEAD_LETTERED
    )
    assert await kitchen.send(ReleaseIngredients(order_id=order_id)) == [
        IngredientsReleased(order_id=order_id, released=[])
    ]
    async with kitchen.db.transaction() as conn:
        await repository.apply_recipe(conn, late_item, "late", {"dough": 1, "mozzarella": 100}, 1)

    [dead] = await kitchen.runtime.dead_letters.recent()
    await act_on_dead_letter(kitchen.runtime.dead_letters, kitchen.uow, "kitchen", dead["id"], "replay", actor="staff")
    assert await kitchen.runner.process(as_record(dead), replay_of=dead["id"]) is Outcome.PROCESSED
    assert all(status != "held" for _, status in (await held(kitchen, order_id)).values())
    assert await stock(kitchen) == expected_stock()


async def test_release_after_cooking_started_gives_nothing_back(kitchen: Participant) -> None:
    order_id = uuid4()
    await advance(kitchen, await queued_ticket(kitchen, order_id))
    assert await kitchen.send(ReleaseIngredients(order_id=order_id)) == [
        IngredientsReleased(order_id=order_id, released=[])
    ]
    assert await stock(kitchen) == expected_stock(consumed=ORDER_NEEDS)


# -- tickets -----------------------------------------------------------------------------------


async def test_queue_ticket_queues_it_once_and_wakes_the_autopilot(kitchen: Participant, wakes: list[str]) -> None:
    order_id = uuid4()
    [queued] = await kitchen.send(QueueTicket(order_id=order_id, lines=order_lines()))
    assert isinstance(queued, TicketQueued)
    assert queued.order_id == order_id
    ticket = await ticket_of(kitchen, order_id)
    assert (ticket["id"], ticket["status"]) == (queued.ticket_id, "queued")
    assert [ln["quantity"] for ln in ticket["lines"]] == [2, 1]
    assert wakes == ["autopilot"]

    assert await kitchen.send(QueueTicket(order_id=order_id, lines=order_lines())) == []
    assert (await ticket_of(kitchen, order_id))["id"] == queued.ticket_id
    assert wakes == ["autopilot"]


async def test_advance_moves_a_ticket_through_every_stage(kitchen: Participant) -> None:
    order_id = uuid4()
    ticket_id = await queued_ticket(kitchen, order_id)

    status, events = await advance(kitchen, ticket_id)
    assert status is TicketStatus.PREPARING
    [started] = events
    assert isinstance(started, TicketStarted)
    assert (started.order_id, started.ticket_id) == (order_id, ticket_id)
    # Cooking began: the reservation is used up.
    assert await stock(kitchen) == expected_stock(consumed=ORDER_NEEDS)
    assert await held(kitchen, order_id) == {i: (q, "consumed") for i, q in ORDER_NEEDS.items()}
    assert (await ticket_of(kitchen, order_id))["status"] == "preparing"

    status, events = await advance(kitchen, ticket_id)
    assert status is TicketStatus.BAKING
    [baking] = events
    assert isinstance(baking, TicketBaking)
    assert (baking.order_id, baking.ticket_id) == (order_id, ticket_id)

    status, events = await advance(kitchen, ticket_id)
    assert status is TicketStatus.READY
    [ready] = events
    assert isinstance(ready, TicketReady)
    assert (ready.order_id, ready.ticket_id) == (order_id, ticket_id)
    assert (await ticket_of(kitchen, order_id))["status"] == "ready"
    assert await stock(kitchen) == expected_stock(consumed=ORDER_NEEDS)  # consumed once only
    assert [type(m) for m in await kitchen.emitted()][-3:] == [TicketStarted, TicketBaking, TicketReady]


async def test_a_released_reservation_is_not_consumed_by_cooking(kitchen: Participant) -> None:
    order_id = uuid4()
    ticket_id = await queued_ticket(kitchen, order_id)
    await kitchen.send(ReleaseIngredients(order_id=order_id))
    await advance(kitchen, ticket_id)
    assert await stock(kitchen) == expected_stock()


async def test_a_ready_ticket_cannot_advance(kitchen: Participant) -> None:
    order_id = uuid4()
    ticket_id = await queued_ticket(kitchen, order_id)
    for _ in range(3):
        await advance(kitchen, ticket_id)
    uow = kitchen.uow()
    with pytest.raises(Conflict):
        await advance_ticket(uow, ticket_id)
    assert uow.emitted == []
    assert (await ticket_of(kitchen, order_id))["status"] == "ready"


async def test_a_cancelled_ticket_cannot_advance(kitchen: Participant) -> None:
    order_id = uuid4()
    ticket_id = await queued_ticket(kitchen, order_id)
    await kitchen.send(CancelTicket(order_id=order_id))
    with pytest.raises(Conflict):
        await advance_ticket(kitchen.uow(), ticket_id)
    assert (await ticket_of(kitchen, order_id))["status"] == "cancelled"
    assert await stock(kitchen) == expected_stock(reserved=ORDER_NEEDS)  # nothing consumed


async def test_advancing_an_unknown_ticket_is_not_found(kitchen: Participant) -> None:
    with pytest.raises(NotFound):
        await advance_ticket(kitchen.uow(), uuid4())
    assert await kitchen.emitted() == []


# -- cancelling tickets ------------------------------------------------------------------------


async def test_cancel_takes_a_queued_ticket_out_of_the_queue(kitchen: Participant) -> None:
    order_id = uuid4()
    await queued_ticket(kitchen, order_id)
    assert await kitchen.send(CancelTicket(order_id=order_id)) == [TicketCancelled(order_id=order_id)]
    assert (await ticket_of(kitchen, order_id))["status"] == "cancelled"
    # Said again, the answer is the same.
    assert await kitchen.send(CancelTicket(order_id=order_id)) == [TicketCancelled(order_id=order_id)]


@pytest.mark.parametrize(("advances", "status"), [(1, "preparing"), (2, "baking"), (3, "ready")])
async def test_cancel_is_refused_once_cooking_started(kitchen: Participant, advances: int, status: str) -> None:
    order_id = uuid4()
    ticket_id = await queued_ticket(kitchen, order_id)
    for _ in range(advances):
        await advance(kitchen, ticket_id)
    replies = await kitchen.send(CancelTicket(order_id=order_id))
    assert replies == [TicketCancelRefused(order_id=order_id, status=status)]
    assert (await ticket_of(kitchen, order_id))["status"] == status


async def test_cancel_before_the_ticket_exists_leaves_a_tombstone(kitchen: Participant, wakes: list[str]) -> None:
    order_id = uuid4()
    assert await kitchen.send(CancelTicket(order_id=order_id)) == [TicketCancelled(order_id=order_id)]
    tombstone = await ticket_of(kitchen, order_id)
    assert tombstone["status"] == "cancelled"

    # The QueueTicket that was overtaken arrives late: the kitchen must not cook it.
    assert await kitchen.send(QueueTicket(order_id=order_id, lines=order_lines())) == []
    assert await ticket_of(kitchen, order_id) == tombstone
    assert wakes == []


# -- stock levels ------------------------------------------------------------------------------


async def test_set_stock_of_a_new_ingredient_receives_it(kitchen: Participant) -> None:
    uow = kitchen.uow()
    assert await set_stock(uow, "basil", 50) == 50
    assert [decode(e) for e in uow.emitted] == [StockReplenished(ingredient="basil", added=50, on_hand=50)]
    assert (await stock(kitchen))["basil"] == (50, 0, 0, 50)


async def test_set_stock_keeps_stock_conserved_while_some_is_held_and_cooked(kitchen: Participant) -> None:
    cooked, waiting = uuid4(), uuid4()
    await advance(kitchen, await queued_ticket(kitchen, cooked))
    await kitchen.send(ReserveIngredients(order_id=waiting, lines=order_lines(1, 0)))
    before = (await stock(kitchen))["dough"]
    assert before == (10 - 3 - 1, 1, 3, 10)

    uow = kitchen.uow()
    assert await set_stock(uow, "dough", 20) == 14
    assert [decode(e) for e in uow.emitted] == [StockReplenished(ingredient="dough", added=14, on_hand=20)]
    assert (await stock(kitchen))["dough"] == (20, 1, 3, 24)

    assert await set_stock(kitchen.uow(), "dough", 5) == -15  # a count found less
    assert (await stock(kitchen))["dough"] == (5, 1, 3, 9)  # `stock` checks conservation too


async def test_opening_stock_is_seeded_only_once(db: Database) -> None:
    fresh = await Participant.create(db, metadata, build_handlers(lambda: None), service="kitchen")
    assert await seed_opening_stock(fresh.uow()) is True
    assert {n: s[0] for n, s in (await stock(fresh)).items()} == OPENING_STOCK

    await set_stock(fresh.uow(), "dough", 7)
    assert await seed_opening_stock(fresh.uow()) is False
    levels = await stock(fresh)
    assert levels["dough"] == (7, 0, 0, 7)  # not topped up again
    assert {n: s[0] for n, s in levels.items() if n != "dough"} == {
        n: a for n, a in OPENING_STOCK.items() if n != "dough"
    }


# -- the autopilot -----------------------------------------------------------------------------


async def test_the_autopilot_moves_every_due_ticket_in_one_transaction_and_leaves_one_moved_meanwhile(
    kitchen: Participant,
) -> None:
    await set_stock(kitchen.uow(), "pepperoni", 1_000)  # enough for three orders
    orders = [uuid4() for _ in range(3)]
    ticket_ids = [await queued_ticket(kitchen, order_id) for order_id in orders]
    async with kitchen.db.read() as conn:
        seen = await repository.cooking(conn, limit=10)
    assert [t for t, _ in seen] == ticket_ids
    await advance(kitchen, ticket_ids[1])  # staff (or another replica) moved this one meanwhile
    before = len(await kitchen.emitted())
    uow = kitchen.uow()
    moved = await advance_tickets(uow, seen)
    assert (moved, uow.committed) == (2, True)
    statuses = [(await ticket_of(kitchen, order_id))["status"] for order_id in orders]
    assert statuses == ["preparing", "preparing", "preparing"], "the one moved meanwhile was not moved twice"
    started = [e for e in (await kitchen.emitted())[before:] if isinstance(e, TicketStarted)]
    assert sorted(e.ticket_id for e in started) == sorted([ticket_ids[0], ticket_ids[2]])
    consumed = {name: row[2] for name, row in (await stock(kitchen)).items()}
    assert consumed == {name: 3 * amount for name, amount in ORDER_NEEDS.items()}, "each order's reservation used once"
