"""Failpoints: inert unless configured; `error@N` fires on the N-th hit only.

(`crash` calls `os._exit`, so it is left to the chaos tests.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pizzeria.kit import failpoints
from pizzeria.kit.failpoints import FailpointError


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    failpoints.configure("")
    yield
    failpoints.configure("")


def hits_that_fire(name: str, times: int) -> list[int]:
    fired = []
    for n in range(1, times + 1):
        try:
            failpoints.hit(name)
        except FailpointError:
            fired.append(n)
    return fired


def test_unconfigured_points_are_inert() -> None:
    assert hits_that_fire("relay.before_publish", 100) == []


def test_error_at_n_fires_on_the_nth_hit_only() -> None:
    failpoints.configure("relay.before_publish=error@3")
    assert hits_that_fire("relay.before_publish", 10) == [3]


def test_n_defaults_to_the_first_hit() -> None:
    failpoints.configure("a=error")
    assert hits_that_fire("a", 5) == [1]


def test_only_the_named_point_fires() -> None:
    failpoints.configure(" a=error@2 , b=error@1 ,")
    assert hits_that_fire("c", 5) == []
    assert hits_that_fire("a", 5) == [2]
    assert hits_that_fire("b", 5) == [1]


def test_the_error_names_the_point() -> None:
    failpoints.configure("relay.after_publish=error@1")
    with pytest.raises(FailpointError, match=r"relay\.after_publish"):
        failpoints.hit("relay.after_publish")


def test_reconfiguring_disarms_the_old_points() -> None:
    failpoints.configure("a=error@1")
    failpoints.configure("b=error@1")
    assert hits_that_fire("a", 3) == []


def test_an_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown failpoint action"):
        failpoints.configure("a=explode@1")


def test_a_held_point_fails_every_hit_until_it_is_released() -> None:
    failpoints.hold("consume.kitchen", on=True)
    try:
        assert hits_that_fire("consume.kitchen", 4) == [1, 2, 3, 4]
        assert hits_that_fire("consume.delivery", 4) == []
        failpoints.configure("")  # configuring the environment's points leaves held ones alone
        assert failpoints.held() == {"consume.kitchen"}
    finally:
        failpoints.hold("consume.kitchen", on=False)
    assert hits_that_fire("consume.kitchen", 4) == []
    assert failpoints.held() == frozenset()
