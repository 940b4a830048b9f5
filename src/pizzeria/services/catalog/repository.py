"""Loading and saving menu items (the only module that knows the table layout)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.errors import Conflict
from pizzeria.services.catalog.domain import Ingredient, MenuItem, Size
from pizzeria.services.catalog.tables import catalog_meta, menu_items


def _row(item: MenuItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "name": item.name,
        "description": item.description,
        "category": item.category,
        "currency": item.currency,
        "sizes": [{"size": s.size, "price": s.price} for s in item.sizes],
        "recipe": [{"ingredient": r.ingredient, "quantity": r.quantity} for r in item.recipe],
        "available": item.available,
        "removed": item.removed,
        "version": item.version,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
    }


def to_item(row: Any) -> MenuItem:
    return MenuItem(
        id=row.id,
        name=row.name,
        description=row.description,
        category=row.category,
        currency=row.currency,
        sizes=tuple(Size(**s) for s in row.sizes),
        recipe=tuple(Ingredient(**r) for r in row.recipe),
        available=row.available,
        removed=row.removed,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def get(conn: AsyncConnection, item_id: UUID) -> MenuItem | None:
    row = (await conn.execute(sa.select(menu_items).where(menu_items.c.id == item_id))).first()
    return to_item(row) if row else None


async def listing(conn: AsyncConnection, *, include_unavailable: bool = False) -> list[MenuItem]:
    query = sa.select(menu_items).where(menu_items.c.removed.is_(False))
    if not include_unavailable:
        query = query.where(menu_items.c.available.is_(True))
    rows = (await conn.execute(query.order_by(menu_items.c.category, menu_items.c.name))).all()
    return [to_item(r) for r in rows]


async def add(conn: AsyncConnection, item: MenuItem) -> None:
    await conn.execute(menu_items.insert().values(**_row(item)))


async def save(conn: AsyncConnection, item: MenuItem) -> None:
    """Write a new version; fails if someone else wrote one since it was loaded."""
    result = await conn.execute(
        menu_items.update()
        .where(menu_items.c.id == item.id, menu_items.c.version == item.version - 1)
        .values(**_row(item))
    )
    if result.rowcount != 1:
        raise Conflict(f"menu item {item.id} was changed concurrently; reload and retry")


async def get_flag(conn: AsyncConnection, key: str) -> str | None:
    return (await conn.execute(sa.select(catalog_meta.c.value).where(catalog_meta.c.key == key))).scalar()


async def set_flag(conn: AsyncConnection, key: str, value: str) -> None:
    await conn.execute(catalog_meta.insert().values(key=key, value=value))
