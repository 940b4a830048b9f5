"""Every request body of every service takes exactly what it declares: a number where a number
is due (not `"2"`, not `true`), a boolean where a boolean is due, and text without NUL (which
PostgreSQL cannot store). Generated wrong values, put in every place of a valid body, are all
refused."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pizzeria.kit.schemas import RequestBody
from pizzeria.registry import SERVICES

for service in SERVICES:  # every body class is defined once its service's modules are imported
    importlib.import_module(service.module)

ITEM = str(uuid4())
#: A valid body of each class (field values of every JSON type it has).
VALID: dict[str, dict[str, Any]] = {
    "SizeBody": {"size": "medium", "price": 1090},
    "IngredientBody": {"ingredient": "mozzarella", "quantity": 2},
    "MenuItemBody": {
        "name": "Margherita",
        "description": "tomato",
        "category": "pizza",
        "currency": "EUR",
        "sizes": [{"size": "medium", "price": 1090}],
        "recipe": [{"ingredient": "dough", "quantity": 1}],
        "available": True,
    },
    "RegisterBody": {"email": "carol@example.com", "password": "correct-horse-pizza", "name": "Carol"},
    "LoginBody": {"email": "carol@example.com", "password": "correct-horse-pizza"},
    "RefreshBody": {"refresh_token": "r" * 43},
    "UserUpdateBody": {"name": "Carol", "role": "staff"},
    "OrderLineBody": {"menu_item_id": ITEM, "size": "medium", "quantity": 2},
    "PaymentBody": {"method": "card", "token": "tok_visa"},
    "ContactBody": {"email": "carol@example.com", "phone": "+44 20 7946 0000"},
    "PlaceOrderBody": {
        "items": [{"menu_item_id": ITEM, "size": "medium", "quantity": 2}],
        "delivery_address": "1 Main St",
        "payment": {"method": "card", "token": "tok_visa"},
        "contact": {"email": "carol@example.com"},
    },
    "StockLevel": {"on_hand": 500},
    "ChargeBody": {"amount": 100, "currency": "EUR", "source": "tok_visa", "metadata": {"order_id": "o-1"}},
    "RefundBody": {"charge": "ch_1", "amount": 100},
    "OutageBody": {"down": True},
    "FailureRateBody": {"rate": 0.5},
    "LatencyBody": {"ms": 200},
    "NewDevice": {"kind": "oven", "name": "Oven 1", "station": "oven-1", "courier_id": "courier-1"},
    "DesiredSettings": {"temperature_c": 430, "bake_profile": "neapolitan", "report_interval_s": 5},
    "NewCommand": {"command": "set_temperature", "temperature_c": 300, "deadline_s": 10},
    "Report": {"state": {"temperature_c": 430, "door": "closed"}},
    "Acknowledgement": {"outcome": "done", "detail": "preheated"},
    "ReadingBatch": {
        "readings": [
            {"at": "2026-11-29T12:00:00Z", "temperature_c": 430.5},
            {"at": "2026-11-29T12:00:01Z", "lat": 40.85, "lon": 14.26, "speed_mps": 4.5, "battery_pct": 80},
        ]
    },
}
#: Free-form values a body carries on (checked where they are used, not by their body).
FREE_FORM = {("ChargeBody", "metadata"), ("Report", "state")}


def bodies() -> dict[str, type[RequestBody]]:
    found: dict[str, type[RequestBody]] = {}
    pending = list(RequestBody.__subclasses__())
    while pending:
        kind = pending.pop()
        if kind.__module__.startswith("pizzeria."):
            found[kind.__name__] = kind
        pending.extend(kind.__subclasses__())
    return found


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from leaves(inner, (*path, key))
    elif isinstance(value, list):
        for n, inner in enumerate(value):
            yield from leaves(inner, (*path, n))
    else:
        yield path, value


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


def test_every_request_body_is_checked_here_and_valid_as_given() -> None:
    assert set(bodies()) == set(VALID), "a request body without an example here is not checked"
    for name, kind in bodies().items():
        kind.model_validate(VALID[name])


PLACES = [
    (name, path, leaf)
    for name, body in VALID.items()
    for path, leaf in leaves(body)
    if isinstance(leaf, int | float | str) and (name, path[0]) not in FREE_FORM
]


def _wrong_for(leaf: Any) -> st.SearchStrategy[Any]:
    if isinstance(leaf, bool):
        return st.one_of(st.integers(0, 1), st.sampled_from(["true", "false", "1", "0", "yes"]), st.none())
    if isinstance(leaf, int):
        return st.one_of(st.booleans(), st.integers(1, 9).map(str), st.from_regex(r"\A ?[0-9]{1,4} ?\Z"))
    if isinstance(leaf, float):
        return st.one_of(st.booleans(), st.sampled_from(["0.5", "1", "half"]))
    # Text: the valid text with a NUL somewhere in it.
    return st.integers(0, len(leaf)).map(lambda at: leaf[:at] + "\x00" + leaf[at:])


@settings(max_examples=400, deadline=None)
@given(data=st.data(), place=st.sampled_from(PLACES))
def test_a_value_of_the_wrong_kind_or_with_a_nul_is_refused_wherever_it_is(
    data: st.DataObject, place: tuple[str, tuple[Any, ...], Any]
) -> None:
    name, path, leaf = place
    wrong = data.draw(_wrong_for(leaf))
    with pytest.raises(ValidationError) as refused:
        bodies()[name].model_validate(replaced(VALID[name], path, wrong))
    assert any(tuple(error["loc"][: len(path)]) == path for error in refused.value.errors()), refused.value
