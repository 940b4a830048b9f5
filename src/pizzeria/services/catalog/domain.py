"""The menu item and its rules. No I/O."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from uuid import UUID

from pizzeria.kit.errors import ValidationFailed


@dataclass(frozen=True)
class Size:
    size: str
    price: int  # minor units


@dataclass(frozen=True)
class Ingredient:
    ingredient: str
    quantity: int


@dataclass(frozen=True)
class MenuItem:
    """A dish on the menu. Every change makes a new version."""

    id: UUID
    name: str
    description: str
    category: str
    currency: str
    sizes: tuple[Size, ...]
    recipe: tuple[Ingredient, ...]
    available: bool
    version: int
    created_at: datetime
    updated_at: datetime
    removed: bool = field(default=False)

    def __post_init__(self) -> None:
        errors: list[dict[str, str]] = []
        if not self.name.strip():
            errors.append({"field": "name", "message": "must not be blank"})
        if not self.sizes:
            errors.append({"field": "sizes", "message": "at least one size is required"})
        seen: set[str] = set()
        for i, s in enumerate(self.sizes):
            if s.size in seen:
                errors.append({"field": f"sizes.{i}.size", "message": f"size {s.size!r} listed twice"})
            seen.add(s.size)
            if s.price <= 0:
                errors.append({"field": f"sizes.{i}.price", "message": "price must be positive"})
        names = [r.ingredient for r in self.recipe]
        if len(names) != len(set(names)):
            errors.append({"field": "recipe", "message": "an ingredient is listed twice"})
        if any(r.quantity <= 0 for r in self.recipe):
            errors.append({"field": "recipe", "message": "ingredient quantities must be positive"})
        if errors:
            raise ValidationFailed("; ".join(e["message"] for e in errors), errors=errors)

    def price_of(self, size: str) -> int | None:
        return next((s.price for s in self.sizes if s.size == size), None)

    def revise(self, *, at: datetime, **changes: object) -> MenuItem:
        """The next version with `changes` applied (validated like a new item)."""
        if self.removed:
            raise ValidationFailed("a removed item cannot be changed")
        return replace(self, **changes, version=self.version + 1, updated_at=at)  # type: ignore[arg-type]

    def remove(self, *, at: datetime) -> MenuItem:
        return replace(self, removed=True, available=False, version=self.version + 1, updated_at=at)
