"""Kitchen use cases: the saga's commands, the recipes from catalog events, and tickets moving
through the kitchen (by staff, or by the autopilot)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from pizzeria.contracts.catalog import MenuItemCreated, MenuItemRemoved, MenuItemUpdated
from pizzeria.contracts.kitchen import (
    CancelTicket,
    IngredientAmount,
    IngredientsReleased,
    IngredientsReserved,
    IngredientsUnavailable,
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
from pizzeria.kit import context, tracing
from pizzeria.kit.clock import as_utc, utcnow
from pizzeria.kit.db import hold_lock
from pizzeria.kit.errors import Conflict, NotFound
from pizzeria.kit.ids import uuid7
from pizzeria.messaging.consumer import HandlerRegistry, Incoming, NotYet
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.uow import UnitOfWork, each_in_one_transaction
from pizzeria.services.kitchen import repository
from pizzeria.services.kitchen.domain import Line, TicketStatus, UnknownRecipe, needs, next_status, shortages
from pizzeria.services.kitchen.stock import OPENING_STOCK


def _amounts(values: dict[str, int]) -> list[IngredientAmount]:
    return [IngredientAmount(ingredient=i, quantity=q) for i, q in sorted(values.items())]


def build_handlers(wake_autopilot: Callable[[], None] | None = None) -> HandlerRegistry:
    """What the kitchen consumer group handles (the saga's commands); `wake_autopilot` is
    called when a ticket is queued."""
    registry = HandlerRegistry()
    commands: dict[type[Any], Callable[[Any, UnitOfWork], Awaitable[None]]] = {
        ReserveIngredients: reserve,
        ReleaseIngredients: release,
        CancelTicket: cancel_ticket,
        QueueTicket: lambda command, uow: queue_ticket(command, uow, wake_autopilot),
    }

    @registry.on_batch(*commands)
    async def on_commands(items: Sequence[Incoming], uow: UnitOfWork) -> None:
        """A run of the saga's commands: the holdings and tickets of every order they concern,
        the recipes they need and the stock are read once; each command then acts in memory,
        and the writes are made at commit, one statement per table."""
        await repository.load_orders(uow, {item.message.order_id for item in items})
        await repository.load_recipes(
            uow, {ln.menu_item_id for item in items for ln in getattr(item.message, "lines", ())}
        )
        for item in items:
            with item.handling():
                await commands[type(item.message)](item.message, uow)

    return registry


def build_menu_handlers() -> HandlerRegistry:
    """What the kitchen-menu consumer group handles: the catalog's events, which carry the
    recipes a reservation reads."""
    registry = HandlerRegistry()

    @registry.on(MenuItemCreated)
    @registry.on(MenuItemUpdated)
    async def on_menu_item(event: MenuItemCreated | MenuItemUpdated, _: Envelope, uow: UnitOfWork) -> None:
        recipe = {r.ingredient: r.quantity for r in event.recipe}
        await repository.apply_recipe(uow.conn, event.menu_item_id, event.name, recipe, event.version)

    @registry.on(MenuItemRemoved)
    async def on_menu_item_removed(event: MenuItemRemoved, _: Envelope, uow: UnitOfWork) -> None:
        await repository.mark_recipe_removed(uow.conn, event.menu_item_id, event.version)

    return registry


async def reserve(command: ReserveIngredients, uow: UnitOfWork) -> None:
    existing = await repository.held(uow, command.order_id)
    if existing:  # the same order again (a re-sent command): answer as before, or not at all
        if all(r.status != "released" for r in existing):  # once released, the order is over
            uow.emit(
                IngredientsReserved(
                    order_id=command.order_id, reserved=_amounts({r.ingredient: r.quantity for r in existing})
                )
            )
        return
    recipes = await repository.recipes_for_run(uow, [ln.menu_item_id for ln in command.lines])
    try:
        need = needs([Line(ln.menu_item_id, ln.quantity) for ln in command.lines], recipes)
    except UnknownRecipe as exc:  # orders knew the item, so its recipe is on the way (kitchen-menu)
        raise NotYet(str(exc)) from exc
    stock = await repository.levels(uow)
    short = shortages(need, {name: level.on_hand for name, level in stock.items()})
    if short:
        uow.emit(
            IngredientsUnavailable(
                order_id=command.order_id,
                missing=[Shortage(ingredient=i, needed=n, available=a) for i, (n, a) in short.items()],
            )
        )
        return
    await repository.hold(uow, command.order_id, need, utcnow())
    uow.emit(IngredientsReserved(order_id=command.order_id, reserved=_amounts(need)))


async def release(command: ReleaseIngredients, uow: UnitOfWork) -> None:
    released = await repository.release(uow, command.order_id, utcnow())
    if not await repository.held(uow, command.order_id):
        # Released before anything was held: leave a mark, so that a reservation arriving
        # late (a replayed dead letter) holds nothing for an order that is over.
        await repository.mark_released(uow, command.order_id, utcnow())
    uow.emit(IngredientsReleased(order_id=command.order_id, released=_amounts(released)))


async def queue_ticket(command: QueueTicket, uow: UnitOfWork, wake_autopilot: Callable[[], None] | None) -> None:
    current = await repository.ticket_for_order(uow, command.order_id)
    if current is None:
        now = utcnow()
        ticket_id = uuid7()
        repository.add_ticket(
            uow,
            {
                "id": ticket_id,
                "order_id": command.order_id,
                "status": TicketStatus.QUEUED.value,
                "lines": [ln.model_dump(mode="json") for ln in command.lines],
                "created_at": now,
                "updated_at": now,
                "traceparent": context.traceparent.get(),
            },
        )
        uow.emit(TicketQueued(order_id=command.order_id, ticket_id=ticket_id))
        if wake_autopilot is not None:
            uow.after_commit(wake_autopilot)


async def cancel_ticket(command: CancelTicket, uow: UnitOfWork) -> None:
    current = await repository.ticket_for_order(uow, command.order_id)
    if current is not None and current.status not in (TicketStatus.QUEUED, TicketStatus.CANCELLED):
        uow.emit(TicketCancelRefused(order_id=command.order_id, status=current.status))
        return
    now = utcnow()
    if current is None:  # cancelled before it was queued: leave a tombstone
        repository.add_ticket(
            uow,
            {
                "id": uuid7(),
                "order_id": command.order_id,
                "status": TicketStatus.CANCELLED.value,
                "lines": [],
                "created_at": now,
                "updated_at": now,
                "traceparent": context.traceparent.get(),
            },
        )
    elif current.status == TicketStatus.QUEUED:
        await repository.set_ticket_status(uow, current, TicketStatus.CANCELLED.value, now)
    uow.emit(TicketCancelled(order_id=command.order_id))


async def advance_ticket(uow: UnitOfWork, ticket_id: UUID) -> TicketStatus:
    """Move a ticket to its next stage (staff)."""
    async with uow:
        status = await move_ticket_on(uow, ticket_id)
        assert status is not None
        await uow.commit()
    return status


async def advance_tickets(uow: UnitOfWork, due: Sequence[tuple[UUID, datetime]]) -> int:
    """The autopilot's move: every ticket whose stage is over, in one transaction. A ticket
    no longer in the stage it was seen in (staff, or another replica, moved it) is left."""

    async def move(item: tuple[UUID, datetime]) -> bool:
        return await move_ticket_on(uow, item[0], stage_began=item[1]) is not None

    async def lock_them() -> None:
        # Every ticket first, in key order, as commands lock them; then what the orders of
        # those about to start cooking hold, all at once (starting uses it up).
        await repository.lock_tickets(uow, [ticket_id for ticket_id, _ in due])
        starting = []
        for ticket_id, stage_began in due:
            row = await repository.locked_ticket(uow, ticket_id)
            if row is not None and row.status == TicketStatus.QUEUED and as_utc(row.updated_at) == as_utc(stage_began):
                starting.append(row.order_id)
        await repository.load_orders(uow, starting)

    return await each_in_one_transaction(uow, due, move, skip=(Conflict, NotFound), first=lock_them)


async def move_ticket_on(
    uow: UnitOfWork, ticket_id: UUID, *, stage_began: datetime | None = None
) -> TicketStatus | None:
    """Move a ticket to its next stage inside `uow`; starting to cook uses up the order's
    reservation. With `stage_began`, only if its current stage began then (else None)."""
    found = await repository.locked_ticket(uow, ticket_id)
    if found is None:
        raise NotFound(f"ticket {ticket_id} does not exist")
    if stage_began is not None and as_utc(found.updated_at) != as_utc(stage_began):
        return None
    ticket = repository.Ticket(found.id, found.order_id, found.status, found.traceparent)
    status = next_status(TicketStatus(ticket.status))
    now = utcnow()
    # Part of the order's trace (the ticket keeps the trace of the command that queued it).
    with tracing.span(
        f"kitchen ticket {status.value}",
        parent=ticket.traceparent,
        attributes={"order.id": str(ticket.order_id), "ticket.id": str(ticket_id)},
    ):
        await repository.set_ticket_status(uow, ticket, status.value, now)
        if status is TicketStatus.PREPARING:
            await repository.consume(uow, ticket.order_id, now)
            uow.emit(TicketStarted(order_id=ticket.order_id, ticket_id=ticket_id, at=now))
        elif status is TicketStatus.BAKING:
            uow.emit(TicketBaking(order_id=ticket.order_id, ticket_id=ticket_id, at=now))
        else:
            uow.emit(TicketReady(order_id=ticket.order_id, ticket_id=ticket_id, at=now))
    return status


async def set_stock(uow: UnitOfWork, ingredient: str, on_hand: int) -> int:
    """Set an ingredient's on-hand level (restock or count); returns the change."""
    async with uow:
        delta = await repository.set_on_hand(uow.conn, ingredient, on_hand, utcnow())
        uow.emit(StockReplenished(ingredient=ingredient, added=delta, on_hand=on_hand))
        await uow.commit()
    return delta


async def seed_opening_stock(uow: UnitOfWork) -> bool:
    """A new kitchen starts with the demo stock, once."""
    async with uow:
        await hold_lock(uow.conn, "kitchen seed")  # replicas starting together seed once
        if await repository.get_flag(uow.conn, "opening_stock"):
            return False
        now = utcnow()
        for ingredient, amount in OPENING_STOCK.items():
            await repository.set_on_hand(uow.conn, ingredient, amount, now)
        await repository.set_flag(uow.conn, "opening_stock", now.isoformat())
        await uow.commit()
    return True
