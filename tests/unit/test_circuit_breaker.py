"""The circuit breaker: opens after N consecutive failures, fails fast, half-opens after the
cool-down (on an injected clock), and closes or reopens on the trial call's outcome."""

from __future__ import annotations

import asyncio
from itertools import count

import pytest

from pizzeria.kit.resilience import BreakerState, CircuitBreaker, CircuitOpen
from tests.fakes import FakeClock


class Declined(Exception):
    """An answer, not an outage: must not count against the dependency."""


class Calls:
    """A dependency that fails while `down` is set and counts the calls that reached it."""

    def __init__(self) -> None:
        self.down = False
        self.reached = 0

    async def __call__(self) -> str:
        self.reached += 1
        if self.down:
            raise ConnectionError("down")
        return "ok"


_names = count()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(f"unit-{next(_names)}", failure_threshold=3, reset_timeout=10.0, clock=clock)


async def fail_times(breaker: CircuitBreaker, dep: Calls, n: int) -> None:
    dep.down = True
    for _ in range(n):
        with pytest.raises(ConnectionError):
            await breaker.call(dep)


async def test_stays_closed_below_the_threshold(breaker: CircuitBreaker) -> None:
    dep = Calls()
    await fail_times(breaker, dep, 2)
    assert breaker.state is BreakerState.CLOSED
    dep.down = False
    assert await breaker.call(dep) == "ok"
    assert breaker.failures == 0


async def test_only_consecutive_failures_count(breaker: CircuitBreaker) -> None:
    dep = Calls()
    for _ in range(3):
        await fail_times(breaker, dep, 2)
        dep.down = False
        await breaker.call(dep)
    assert breaker.state is BreakerState.CLOSED


async def test_opens_after_n_failures_and_fails_fast(breaker: CircuitBreaker) -> None:
    dep = Calls()
    await fail_times(breaker, dep, 3)
    assert breaker.state is BreakerState.OPEN
    dep.down = False
    with pytest.raises(CircuitOpen):
        await breaker.call(dep)
    assert dep.reached == 3  # the call while open never reached the dependency


async def test_half_opens_after_the_reset_timeout(breaker: CircuitBreaker, clock: FakeClock) -> None:
    await fail_times(breaker, Calls(), 3)
    clock.advance(9.9)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN


async def test_a_successful_trial_closes(breaker: CircuitBreaker, clock: FakeClock) -> None:
    dep = Calls()
    await fail_times(breaker, dep, 3)
    clock.advance(10)
    dep.down = False
    assert await breaker.call(dep) == "ok"
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 0


async def test_a_failed_trial_reopens_for_another_cool_down(breaker: CircuitBreaker, clock: FakeClock) -> None:
    dep = Calls()
    await fail_times(breaker, dep, 3)
    clock.advance(10)
    await fail_times(breaker, dep, 1)
    assert breaker.state is BreakerState.OPEN
    clock.advance(9)
    with pytest.raises(CircuitOpen):
        await breaker.call(dep)
    clock.advance(1)
    assert breaker.state is BreakerState.HALF_OPEN


async def test_half_open_lets_one_trial_through_at_a_time(breaker: CircuitBreaker, clock: FakeClock) -> None:
    await fail_times(breaker, Calls(), 3)
    clock.advance(10)
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "ok"

    trial = asyncio.create_task(breaker.call(slow))
    await asyncio.sleep(0)  # let the trial start
    with pytest.raises(CircuitOpen, match="trial"):
        await breaker.call(slow)
    release.set()
    assert await trial == "ok"
    assert breaker.state is BreakerState.CLOSED


async def test_non_failures_pass_through_without_counting(breaker: CircuitBreaker) -> None:
    async def declined() -> str:
        raise Declined("card declined")

    for _ in range(10):
        with pytest.raises(Declined):
            await breaker.call(declined, is_failure=lambda e: not isinstance(e, Declined))
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 0


async def test_a_non_failure_during_the_trial_keeps_it_half_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    await fail_times(breaker, Calls(), 3)
    clock.advance(10)

    async def declined() -> str:
        raise Declined("no")

    with pytest.raises(Declined):
        await breaker.call(declined, is_failure=lambda e: not isinstance(e, Declined))
    assert breaker.state is BreakerState.HALF_OPEN
    dep = Calls()
    assert await breaker.call(dep) == "ok"  # the next trial is allowed
    assert breaker.state is BreakerState.CLOSED


# -- failures of one source are that source's ----------------------------------------------------


@pytest.fixture
def shared(clock: FakeClock) -> CircuitBreaker:
    """A breaker that must see failures for two sources in a row before it opens."""
    return CircuitBreaker(f"unit-{next(_names)}", failure_threshold=3, reset_timeout=10.0, min_sources=2, clock=clock)


async def fail_for(breaker: CircuitBreaker, dep: Calls, source: str | None, n: int) -> None:
    dep.down = True
    for _ in range(n):
        with pytest.raises(ConnectionError):
            await breaker.call(dep, source=source)


async def test_one_sources_failures_never_open_it_for_everyone(shared: CircuitBreaker) -> None:
    dep = Calls()
    await fail_for(shared, dep, "mallory", 50)
    assert shared.state is BreakerState.CLOSED
    dep.down = False
    assert await shared.call(dep, source="alice") == "ok"


async def test_failures_of_several_sources_in_a_row_open_it(shared: CircuitBreaker) -> None:
    dep = Calls()
    await fail_for(shared, dep, "mallory", 5)
    await fail_for(shared, dep, "alice", 1)
    assert shared.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        await shared.call(dep, source="bob")


async def test_a_success_forgets_who_failed(shared: CircuitBreaker) -> None:
    dep = Calls()
    await fail_for(shared, dep, "alice", 1)
    dep.down = False
    await shared.call(dep, source="bob")
    await fail_for(shared, dep, "mallory", 5)
    assert shared.state is BreakerState.CLOSED


async def test_a_failure_that_names_no_source_is_a_source_of_its_own(shared: CircuitBreaker) -> None:
    await fail_for(shared, Calls(), None, 3)
    assert shared.state is BreakerState.OPEN


async def test_a_failed_trial_reopens_whoever_it_was_for(shared: CircuitBreaker, clock: FakeClock) -> None:
    dep = Calls()
    await fail_for(shared, dep, "mallory", 2)
    await fail_for(shared, dep, "alice", 1)
    clock.advance(10)
    await fail_for(shared, dep, "mallory", 1)
    assert shared.state is BreakerState.OPEN
