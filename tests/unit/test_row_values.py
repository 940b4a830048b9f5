"""`kit.upsert.row_values`: what takes a row's values for a planned statement's parameters."""

from __future__ import annotations

import pytest

from pizzeria.kit.upsert import row_values


def test_one_key_gives_a_tuple_of_one() -> None:
    assert row_values(("a",), (None,))({"a": 1, "b": 2}) == (1,)


def test_values_come_in_the_keys_order_each_through_its_conversion() -> None:
    take = row_values(("c", "a", "b"), (str, None, lambda v: v * 10))
    assert take({"a": 1, "b": 2, "c": 3}) == ("3", 1, 20)


def test_without_conversions_the_values_are_the_rows_own() -> None:
    value = object()
    assert row_values(("x", "y"), (None, None))({"x": value, "y": None}) == (value, None)


def test_no_keys_gives_no_values() -> None:
    assert row_values((), ())({"a": 1}) == ()


def test_a_missing_key_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        row_values(("a", "b"), (None, str))({"a": 1})
