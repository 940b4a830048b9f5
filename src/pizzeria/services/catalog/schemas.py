"""Catalog request and response bodies."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from pizzeria.kit.schemas import RequestBody

Name = Field(min_length=1, max_length=120)


class SizeBody(RequestBody):
    size: str = Field(min_length=1, max_length=20, pattern=r"^[a-z][a-z0-9_-]*$", examples=["medium"])
    price: int = Field(gt=0, le=1_000_000, description="price in minor units (cents)", examples=[1090])


class IngredientBody(RequestBody):
    ingredient: str = Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$", examples=["mozzarella"])
    quantity: int = Field(gt=0, le=10_000, description="stock units one pizza uses")


class MenuItemBody(RequestBody):
    """A menu item as sent by staff: the whole item (PUT replaces it)."""

    name: str = Name
    description: str = Field("", max_length=1000)
    category: str = Field("pizza", min_length=1, max_length=40)
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    sizes: list[SizeBody] = Field(min_length=1, max_length=10)
    recipe: list[IngredientBody] = Field(default_factory=list, max_length=30)
    available: bool = True


class MenuItemView(BaseModel):
    id: UUID
    name: str
    description: str
    category: str
    currency: str
    sizes: list[SizeBody]
    recipe: list[IngredientBody]
    available: bool
    version: int
    created_at: datetime
    updated_at: datetime


class MenuView(BaseModel):
    items: list[MenuItemView]
