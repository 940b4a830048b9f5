"""Kitchen rules: what an order needs, whether there is enough, and the ticket's life. No I/O."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from uuid import UUID

from pizzeria.kit.errors import Conflict


class UnknownRecipe(Exception):
    """The kitchen has not learned this menu item yet (catalog events still on their way)."""


class TicketStatus(enum.StrEnum):
    QUEUED = "queued"
    PREPARING = "preparing"
    BAKING = "baking"
    READY = "ready"
    CANCELLED = "cancelled"


NEXT: dict[TicketStatus, TicketStatus] = {
    TicketStatus.QUEUED: TicketStatus.PREPARING,
    TicketStatus.PREPARING: TicketStatus.BAKING,
    TicketStatus.BAKING: TicketStatus.READY,
}


def next_status(status: TicketStatus) -> TicketStatus:
    if status not in NEXT:
        raise Conflict(f"a {status} ticket cannot move on")
    return NEXT[status]


@dataclass(frozen=True)
class Line:
    menu_item_id: UUID
    quantity: int


def needs(lines: Iterable[Line], recipes: Mapping[UUID, Mapping[str, int]]) -> dict[str, int]:
    """Ingredient → amount the lines need, from the recipes."""
    total: Counter[str] = Counter()
    for line in lines:
        recipe = recipes.get(line.menu_item_id)
        if recipe is None:
            raise UnknownRecipe(f"no recipe for menu item {line.menu_item_id} yet")
        for ingredient, amount in recipe.items():
            total[ingredient] += amount * line.quantity
    return dict(total)


def shortages(need: Mapping[str, int], on_hand: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """Ingredient → (needed, available) for everything there is not enough of."""
    return {i: (n, on_hand.get(i, 0)) for i, n in sorted(need.items()) if on_hand.get(i, 0) < n}
