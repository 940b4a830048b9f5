"""Catalog use cases: each loads, acts through the domain, saves, emits, commits."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pizzeria.contracts.catalog import (
    MenuItemCreated,
    MenuItemRemoved,
    MenuItemUpdated,
    MenuSize,
    RecipeLine,
)
from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import hold_lock
from pizzeria.kit.errors import NotFound
from pizzeria.kit.ids import uuid7
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.catalog import repository
from pizzeria.services.catalog.demo_menu import DEMO_MENU
from pizzeria.services.catalog.domain import Ingredient, MenuItem, Size
from pizzeria.services.catalog.schemas import MenuItemBody


def _snapshot(item: MenuItem) -> dict[str, Any]:
    return {
        "menu_item_id": item.id,
        "version": item.version,
        "name": item.name,
        "description": item.description,
        "category": item.category,
        "currency": item.currency,
        "sizes": [MenuSize(size=s.size, price=s.price) for s in item.sizes],
        "recipe": [RecipeLine(ingredient=r.ingredient, quantity=r.quantity) for r in item.recipe],
        "available": item.available,
    }


def _fields(body: MenuItemBody) -> dict[str, Any]:
    return {
        "name": body.name.strip(),
        "description": body.description,
        "category": body.category,
        "currency": body.currency,
        "sizes": tuple(Size(size=s.size, price=s.price) for s in body.sizes),
        "recipe": tuple(Ingredient(ingredient=r.ingredient, quantity=r.quantity) for r in body.recipe),
        "available": body.available,
    }


async def create_item(body: MenuItemBody, uow: UnitOfWork) -> MenuItem:
    now = utcnow()
    item = MenuItem(id=uuid7(), version=1, created_at=now, updated_at=now, **_fields(body))
    async with uow:
        await repository.add(uow.conn, item)
        uow.emit(MenuItemCreated(**_snapshot(item)))
        await uow.commit()
    return item


async def _load(uow: UnitOfWork, item_id: UUID) -> MenuItem:
    item = await repository.get(uow.conn, item_id)
    if item is None or item.removed:
        raise NotFound(f"menu item {item_id} does not exist")
    return item


async def update_item(item_id: UUID, body: MenuItemBody, uow: UnitOfWork) -> MenuItem:
    async with uow:
        item = (await _load(uow, item_id)).revise(at=utcnow(), **_fields(body))
        await repository.save(uow.conn, item)
        uow.emit(MenuItemUpdated(**_snapshot(item)))
        await uow.commit()
    return item


async def remove_item(item_id: UUID, uow: UnitOfWork) -> None:
    async with uow:
        item = (await _load(uow, item_id)).remove(at=utcnow())
        await repository.save(uow.conn, item)
        uow.emit(MenuItemRemoved(menu_item_id=item.id, version=item.version))
        await uow.commit()


async def seed_demo_menu(uow: UnitOfWork) -> bool:
    """Put the demo menu on a brand-new catalog, once; False if it was seeded before."""
    async with uow:
        await hold_lock(uow.conn, "catalog seed")  # replicas starting together seed once
        if await repository.get_flag(uow.conn, "demo_menu_seeded"):
            return False
        now = utcnow()
        for body in DEMO_MENU:
            item = MenuItem(id=uuid7(), version=1, created_at=now, updated_at=now, **_fields(body))
            await repository.add(uow.conn, item)
            uow.emit(MenuItemCreated(**_snapshot(item)))
        await repository.set_flag(uow.conn, "demo_menu_seeded", now.isoformat())
        await uow.commit()
    return True
