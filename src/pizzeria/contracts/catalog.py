"""Catalog facts: the menu. Each event carries the whole item and its version, so a reader can
apply them idempotently and ignore one that arrives after a newer version."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, ConfigDict

from pizzeria.messaging.message import Message

CONTEXT = "catalog"


class MenuSize(BaseModel):
    model_config = ConfigDict(frozen=True)

    size: str
    price: int  # minor units


class RecipeLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    ingredient: str
    quantity: int  # units of stock one pizza uses


class MenuItemSnapshot(Message):
    menu_item_id: UUID
    version: int
    name: str
    description: str = ""
    category: str = "pizza"
    currency: str = "EUR"
    sizes: list[MenuSize]
    recipe: list[RecipeLine] = []
    available: bool = True


class MenuItemCreated(MenuItemSnapshot, context=CONTEXT, key="menu_item_id"):
    """A new item is on the menu."""


class MenuItemUpdated(MenuItemSnapshot, context=CONTEXT, key="menu_item_id"):
    """An item changed (name, prices, recipe or availability); carries the whole new state."""


class MenuItemRemoved(Message, context=CONTEXT, key="menu_item_id"):
    """An item left the menu; orders for it are no longer accepted."""

    menu_item_id: UUID
    version: int
