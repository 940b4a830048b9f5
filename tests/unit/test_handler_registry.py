"""Consumer configuration: which handler takes which message type, and retry backoff bounds."""

from __future__ import annotations

import pytest

from pizzeria.messaging.consumer import HandlerRegistry, RetryPolicy, Route
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import Message
from pizzeria.messaging.uow import UnitOfWork


class KettleBoiled(Message, context="unittest_dispatch"):
    """A test event."""

    litres: int


class BoilKettle(Message, context="unittest_dispatch", kind="command"):
    """A test command."""

    litres: int


class TeaBrewed(Message, context="unittest_brew"):
    """A test event of another context."""

    cups: int


async def on_boiled(message: KettleBoiled, envelope: Envelope, uow: UnitOfWork) -> None: ...


async def on_brewed(message: TeaBrewed, envelope: Envelope, uow: UnitOfWork) -> None: ...


def test_get_dispatches_by_type_name() -> None:
    registry = HandlerRegistry()
    registry.add(KettleBoiled, on_boiled)  # type: ignore[arg-type]
    assert registry.get(KettleBoiled.type_name()) == Route(KettleBoiled, handler=on_boiled)
    assert registry.get(BoilKettle.type_name()) is None
    assert registry.get("pizzeria.unknown.Thing.v1") is None


def test_on_registers_and_returns_the_handler_unchanged() -> None:
    registry = HandlerRegistry()

    @registry.on(BoilKettle)
    async def boil(message: BoilKettle, envelope: Envelope, uow: UnitOfWork) -> None: ...

    entry = registry.get("pizzeria.unittest_dispatch.BoilKettle.v1")
    assert entry == Route(BoilKettle, handler=boil)


def test_on_batch_routes_every_type_it_names_to_one_batch_handler() -> None:
    registry = HandlerRegistry()

    @registry.on_batch(KettleBoiled, TeaBrewed)
    async def many(items: object, uow: UnitOfWork) -> None: ...

    assert registry.get(KettleBoiled.type_name()) == Route(KettleBoiled, batch=many)
    assert registry.get(TeaBrewed.type_name()) == Route(TeaBrewed, batch=many)
    assert registry.get(BoilKettle.type_name()) is None


def test_topics_are_the_sorted_distinct_topics_of_the_handled_types() -> None:
    registry = HandlerRegistry()
    registry.add(TeaBrewed, on_brewed)  # type: ignore[arg-type]
    registry.add(KettleBoiled, on_boiled)  # type: ignore[arg-type]
    registry.add(BoilKettle, on_boiled)  # type: ignore[arg-type]
    assert registry.topics() == [
        "unittest_brew.events",
        "unittest_dispatch.commands",
        "unittest_dispatch.events",
    ]
    assert HandlerRegistry().topics() == []


def test_a_later_registration_replaces_the_handler() -> None:
    registry = HandlerRegistry()
    registry.add(KettleBoiled, on_brewed)  # type: ignore[arg-type]
    registry.add(KettleBoiled, on_boiled)  # type: ignore[arg-type]
    assert registry.get(KettleBoiled.type_name()) == Route(KettleBoiled, handler=on_boiled)


@pytest.mark.parametrize("attempt", range(1, 12))
def test_retry_delay_is_jittered_within_half_to_full_ceiling(attempt: int) -> None:
    policy = RetryPolicy(max_attempts=12, initial_backoff=0.1, max_backoff=5.0)
    ceiling = min(5.0, 0.1 * 2 ** (attempt - 1))
    delays = [policy.delay(attempt) for _ in range(200)]
    assert all(ceiling * 0.5 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 1  # jittered, so retries of many consumers do not align


def test_retry_delay_never_exceeds_the_maximum() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=2.0)
    assert max(policy.delay(n) for n in range(1, 60) for _ in range(20)) <= 2.0
    assert min(policy.delay(50) for _ in range(200)) >= 1.0
