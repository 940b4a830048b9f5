"""Catalog HTTP routes: parse, call a handler, shape the answer."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response, status

from pizzeria.kit.auth import Staff
from pizzeria.kit.errors import NotFound
from pizzeria.messaging.service import Runtime
from pizzeria.services.catalog import handlers, repository
from pizzeria.services.catalog.domain import MenuItem
from pizzeria.services.catalog.schemas import MenuItemBody, MenuItemView, MenuView

router = APIRouter(prefix="/api/v1/menu", tags=["menu"])


def view(item: MenuItem) -> MenuItemView:
    return MenuItemView(
        id=item.id, name=item.name, description=item.description, category=item.category,
        currency=item.currency,
        sizes=[{"size": s.size, "price": s.price} for s in item.sizes],
        recipe=[{"ingredient": r.ingredient, "quantity": r.quantity} for r in item.recipe],
        available=item.available, version=item.version, created_at=item.created_at, updated_at=item.updated_at,
    )


@router.get("", response_model=MenuView, summary="The menu: every available item")
async def list_menu(runtime: Runtime, include_unavailable: bool = False) -> MenuView:
    async with runtime.db.read() as conn:
        items = await repository.listing(conn, include_unavailable=include_unavailable)
    return MenuView(items=[view(i) for i in items])


@router.get("/{item_id}", response_model=MenuItemView, summary="One menu item")
async def get_item(item_id: UUID, runtime: Runtime) -> MenuItemView:
    async with runtime.db.read() as conn:
        item = await repository.get(conn, item_id)
    if item is None or item.removed:
        raise NotFound(f"menu item {item_id} does not exist")
    return view(item)


@router.post("", response_model=MenuItemView, status_code=status.HTTP_201_CREATED, summary="Add an item")
async def create_item(body: MenuItemBody, _: Staff, runtime: Runtime, response: Response) -> MenuItemView:
    item = await handlers.create_item(body, runtime.uow())
    response.headers["Location"] = f"/api/v1/menu/{item.id}"
    return view(item)


@router.put("/{item_id}", response_model=MenuItemView, summary="Replace an item (new version)")
async def update_item(item_id: UUID, body: MenuItemBody, _: Staff, runtime: Runtime) -> MenuItemView:
    return view(await handlers.update_item(item_id, body, runtime.uow()))


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Take an item off the menu")
async def delete_item(item_id: UUID, _: Staff, runtime: Runtime) -> Response:
    await handlers.remove_item(item_id, runtime.uow())
    return Response(status_code=status.HTTP_204_NO_CONTENT)
