"""The cart: what the visitor chose, kept in a cookie as `item:size:quantity` lines, priced from
the current menu each time it is shown (orders prices it again when the order is placed)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

CART_COOKIE = "pz_cart"
MAX_LINES = 30
MAX_QUANTITY = 50
_SIZE = re.compile(r"^[a-z][a-z0-9_-]{0,19}$")


@dataclass(frozen=True)
class Line:
    menu_item_id: str
    size: str
    quantity: int


def parse(cookie: str | None) -> list[Line]:
    """The cart in a cookie; whatever is not a well-formed line is left out."""
    lines: list[Line] = []
    for part in (cookie or "").split("|"):
        item, _, rest = part.partition(":")
        size, _, quantity = rest.partition(":")
        try:
            uuid.UUID(item)
            count = int(quantity)
        except ValueError:
            continue
        if _SIZE.match(size) and 1 <= count <= MAX_QUANTITY:
            lines.append(Line(item, size, count))
    return merge(lines)[:MAX_LINES]


def dump(lines: list[Line]) -> str:
    return "|".join(f"{ln.menu_item_id}:{ln.size}:{ln.quantity}" for ln in lines)


def merge(lines: list[Line]) -> list[Line]:
    """One line per item and size, quantities added up (within the limit)."""
    merged: dict[tuple[str, str], int] = {}
    for ln in lines:
        key = (ln.menu_item_id, ln.size)
        merged[key] = min(MAX_QUANTITY, merged.get(key, 0) + ln.quantity)
    return [Line(item, size, quantity) for (item, size), quantity in merged.items()]


def add(lines: list[Line], item: str, size: str, quantity: int) -> list[Line]:
    return merge([*lines, Line(item, size, max(1, min(MAX_QUANTITY, quantity)))])[:MAX_LINES]


def set_quantity(lines: list[Line], item: str, size: str, quantity: int) -> list[Line]:
    """The cart with that line's quantity changed; 0 removes it."""
    changed = []
    for ln in lines:
        if (ln.menu_item_id, ln.size) == (item, size):
            if quantity > 0:
                changed.append(Line(item, size, min(MAX_QUANTITY, quantity)))
        else:
            changed.append(ln)
    return changed


def count(lines: list[Line]) -> int:
    return sum(ln.quantity for ln in lines)


@dataclass(frozen=True)
class PricedLine:
    menu_item_id: str
    name: str
    size: str
    quantity: int
    unit_price: int
    currency: str

    @property
    def total(self) -> int:
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class PricedCart:
    lines: list[PricedLine]
    gone: list[Line]  # lines whose item or size is no longer on the menu

    @property
    def total(self) -> int:
        return sum(ln.total for ln in self.lines)

    @property
    def currency(self) -> str:
        return self.lines[0].currency if self.lines else "EUR"


def price(lines: list[Line], menu: list[dict[str, Any]]) -> PricedCart:
    by_id = {str(item["id"]): item for item in menu}
    priced, gone = [], []
    for ln in lines:
        item = by_id.get(ln.menu_item_id)
        size = next((s for s in item["sizes"] if s["size"] == ln.size), None) if item else None
        if item is None or size is None:
            gone.append(ln)
            continue
        priced.append(PricedLine(ln.menu_item_id, item["name"], ln.size, ln.quantity, size["price"], item["currency"]))
    return PricedCart(priced, gone)
