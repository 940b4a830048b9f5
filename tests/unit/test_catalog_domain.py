"""Catalog domain: a menu item validates itself, and every change makes a new version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from pizzeria.kit.errors import ValidationFailed
from pizzeria.services.catalog.domain import Ingredient, MenuItem, Size

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)


def menu_item(**overrides: Any) -> MenuItem:
    fields: dict[str, Any] = {
        "id": uuid4(),
        "name": "Margherita",
        "description": "Tomato, mozzarella, basil",
        "category": "pizza",
        "currency": "EUR",
        "sizes": (Size("small", 800), Size("large", 1200)),
        "recipe": (Ingredient("dough", 1), Ingredient("mozzarella", 2)),
        "available": True,
        "version": 1,
        "created_at": T0,
        "updated_at": T0,
    }
    fields.update(overrides)
    return MenuItem(**fields)


def fields_of(exc: pytest.ExceptionInfo[ValidationFailed]) -> list[str]:
    return [e["field"] for e in exc.value.errors or []]


def test_a_valid_item_prices_its_sizes() -> None:
    item = menu_item()
    assert item.price_of("large") == 1200
    assert item.price_of("medium") is None


@pytest.mark.parametrize("name", ["", "   "])
def test_blank_name_is_refused(name: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        menu_item(name=name)
    assert fields_of(exc) == ["name"]


def test_an_item_needs_a_size() -> None:
    with pytest.raises(ValidationFailed) as exc:
        menu_item(sizes=())
    assert fields_of(exc) == ["sizes"]


def test_duplicate_sizes_are_refused() -> None:
    with pytest.raises(ValidationFailed) as exc:
        menu_item(sizes=(Size("small", 800), Size("small", 900)))
    assert fields_of(exc) == ["sizes.1.size"]


@pytest.mark.parametrize("price", [0, -100])
def test_non_positive_prices_are_refused(price: int) -> None:
    with pytest.raises(ValidationFailed) as exc:
        menu_item(sizes=(Size("small", 800), Size("large", price)))
    assert fields_of(exc) == ["sizes.1.price"]


def test_duplicate_ingredients_are_refused() -> None:
    with pytest.raises(ValidationFailed) as exc:
        menu_item(recipe=(Ingredient("basil", 1), Ingredient("basil", 2)))
    assert fields_of(exc) == ["recipe"]
    assert "listed twice" in exc.value.detail


def test_non_positive_ingredient_quantities_are_refused() -> None:
    with pytest.raises(ValidationFailed) as exc:
        menu_item(recipe=(Ingredient("basil", 0),))
    assert fields_of(exc) == ["recipe"]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValidationFailed) as exc:
        menu_item(name=" ", sizes=(Size("small", 0), Size("small", 5)))
    assert fields_of(exc) == ["name", "sizes.0.price", "sizes.1.size"]
    assert exc.value.status == 422


def test_revise_makes_the_next_version() -> None:
    item = menu_item(version=4)
    revised = item.revise(at=T1, name="Margherita DOP", sizes=(Size("large", 1400),))
    assert (revised.version, revised.updated_at, revised.name) == (5, T1, "Margherita DOP")
    assert revised.price_of("large") == 1400
    assert (revised.id, revised.created_at) == (item.id, T0)
    assert (item.version, item.name) == (4, "Margherita")  # the old version is untouched


def test_revise_validates_like_a_new_item() -> None:
    with pytest.raises(ValidationFailed) as exc:
        menu_item().revise(at=T1, sizes=())
    assert fields_of(exc) == ["sizes"]


def test_remove_makes_an_unavailable_version() -> None:
    removed = menu_item(version=2).remove(at=T1)
    assert removed.removed
    assert not removed.available
    assert (removed.version, removed.updated_at) == (3, T1)


def test_a_removed_item_cannot_be_revised() -> None:
    removed = menu_item().remove(at=T1)
    with pytest.raises(ValidationFailed, match="removed"):
        removed.revise(at=T1 + timedelta(minutes=1), available=True)
