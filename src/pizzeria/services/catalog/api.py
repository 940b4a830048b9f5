"""Catalog HTTP routes: parse, call a handler, shape the answer."""

from __future__ import annotations

from uuid import UUID

import orjson
from fastapi import APIRouter, Response, status

from pizzeria.chassis.deps import RuntimeDep
from pizzeria.kit.auth import Staff
from pizzeria.kit.cache import cached
from pizzeria.kit.errors import NotFound
from pizzeria.services.catalog import handlers, repository
from pizzeria.services.catalog.deps import CatalogDep
from pizzeria.services.catalog.domain import MenuItem
from pizzeria.services.catalog.schemas import MenuItemBody, MenuItemView, MenuView

router = APIRouter(prefix="/api/v1/menu", tags=["menu"])


def view(item: MenuItem) -> MenuItemView:
    return MenuItemView(
        id=item.id,
        name=item.name,
        description=item.description,
        category=item.category,
        currency=item.currency,
        sizes=[{"size": s.size, "price": s.price} for s in item.sizes],
        recipe=[{"ingredient": r.ingredient, "quantity": r.quantity} for r in item.recipe],
        available=item.available,
        version=item.version,
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


LISTINGS = ("menu:available", "menu:all")


def _item_key(item_id: UUID) -> str:
    return f"menu:item:{item_id}"


def _json(data: bytes) -> Response:
    return Response(content=data, media_type="application/json")


@router.get("", response_model=MenuView, summary="The menu: every available item")
async def list_menu(runtime: RuntimeDep, parts: CatalogDep, include_unavailable: bool = False) -> Response:
    async def load() -> bytes:
        async with runtime.db.read() as conn:
            items = await repository.listing(conn, include_unavailable=include_unavailable)
        return orjson.dumps(MenuView(items=[view(i) for i in items]).model_dump(mode="json"))

    found = await cached(parts.cache, LISTINGS[1] if include_unavailable else LISTINGS[0], load)
    return _json(found if found is not None else await load())


@router.get("/{item_id}", response_model=MenuItemView, summary="One menu item")
async def get_item(item_id: UUID, runtime: RuntimeDep, parts: CatalogDep) -> Response:
    async def load() -> bytes | None:
        async with runtime.db.read() as conn:
            item = await repository.get(conn, item_id)
        return None if item is None or item.removed else orjson.dumps(view(item).model_dump(mode="json"))

    found = await cached(parts.cache, _item_key(item_id), load)
    if found is None:
        raise NotFound(f"menu item {item_id} does not exist")
    return _json(found)


@router.post("", response_model=MenuItemView, status_code=status.HTTP_201_CREATED, summary="Add an item")
async def create_item(
    body: MenuItemBody, _: Staff, runtime: RuntimeDep, parts: CatalogDep, response: Response
) -> MenuItemView:
    await parts.cache.invalidate(*LISTINGS)  # before the change (covering it) and after it committed
    item = await handlers.create_item(body, runtime.uow())
    await parts.cache.invalidate(*LISTINGS, _item_key(item.id))
    response.headers["Location"] = f"/api/v1/menu/{item.id}"
    return view(item)


@router.put("/{item_id}", response_model=MenuItemView, summary="Replace an item (new version)")
async def update_item(
    item_id: UUID, body: MenuItemBody, _: Staff, runtime: RuntimeDep, parts: CatalogDep
) -> MenuItemView:
    keys = (*LISTINGS, _item_key(item_id))
    await parts.cache.invalidate(*keys)
    try:
        return view(await handlers.update_item(item_id, body, runtime.uow()))
    finally:
        await parts.cache.invalidate(*keys)


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Take an item off the menu")
async def delete_item(item_id: UUID, _: Staff, runtime: RuntimeDep, parts: CatalogDep) -> Response:
    keys = (*LISTINGS, _item_key(item_id))
    await parts.cache.invalidate(*keys)
    try:
        await handlers.remove_item(item_id, runtime.uow())
    finally:
        await parts.cache.invalidate(*keys)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
