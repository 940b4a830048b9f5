"""Resilience for calls to other systems: a circuit breaker and retries with backoff.

The breaker opens after `failure_threshold` consecutive failures and then fails fast; after
`reset_timeout` seconds it lets one trial call through (half-open): success closes it, failure
opens it again for another cool-down. With `min_sources`, the failures in a row must also come
from that many different sources (calls made for different customers, say): what fails for one
source only is that source's trouble, not the dependency's, and must not stop everyone's calls.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Gauge

T = TypeVar("T")

breaker_state = Gauge(
    "pizzeria_circuit_breaker_state",
    "Circuit breaker state by name: 0 closed, 1 half-open, 2 open.",
    ["name"],
)


class BreakerState(enum.Enum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpen(Exception):
    """The breaker is open: the call was not attempted."""


class CircuitBreaker:
    """Consecutive-failure circuit breaker (one per remote dependency)."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 10.0,
        min_sources: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.min_sources = min_sources
        self.clock = clock
        self.failures = 0
        #: The sources of the failures in a row (a failure that names none is one of its own).
        self._sources: set[str] = set()
        self._unnamed = 0
        self.opened_at = 0.0
        self._state = BreakerState.CLOSED
        self._trial_in_flight = False
        breaker_state.labels(name).set(0)

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.clock() - self.opened_at >= self.reset_timeout:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def _set(self, state: BreakerState) -> None:
        self._state = state
        breaker_state.labels(self.name).set(state.value)

    def before_call(self) -> None:
        """Raise CircuitOpen unless a call may go through now."""
        state = self.state
        if state is BreakerState.OPEN:
            raise CircuitOpen(
                f"{self.name}: circuit open, retry in {self.reset_timeout - (self.clock() - self.opened_at):.1f}s"
            )
        if state is BreakerState.HALF_OPEN:
            if self._trial_in_flight:
                raise CircuitOpen(f"{self.name}: circuit half-open, trial call in flight")
            self._trial_in_flight = True

    def record_success(self) -> None:
        self._trial_in_flight = False
        self.failures = 0
        self._sources.clear()
        self._unnamed = 0
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def release(self) -> None:
        """A call let through by `before_call` ended without saying anything about the
        dependency (cancelled, or refused before it was sent): neither success nor failure."""
        self._trial_in_flight = False

    def record_failure(self, source: str | None = None) -> None:
        """A failed call, made for `source` (when it was made for someone in particular)."""
        self._trial_in_flight = False
        self.failures += 1
        if source is None:
            self._unnamed += 1
        else:
            self._sources.add(source)
        widespread = len(self._sources) + self._unnamed >= self.min_sources
        if self._state is BreakerState.HALF_OPEN or (self.failures >= self.failure_threshold and widespread):
            self.opened_at = self.clock()
            self._set(BreakerState.OPEN)

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        is_failure: Callable[[BaseException], bool] = lambda e: True,
        source: str | None = None,
    ) -> T:
        """Run `fn` through the breaker, for `source`; exceptions for which `is_failure` is False
        (a declined card, a 4xx) pass through without counting against the dependency."""
        self.before_call()
        try:
            result = await fn()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) or not is_failure(exc):
                self.release()
                raise
            self.record_failure(source)
            raise
        self.record_success()
        return result


async def retry(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int = 3,
    initial: float = 0.05,
    maximum: float = 1.0,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Call `fn` up to `attempts` times, sleeping with jittered exponential backoff between."""
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except retry_on:
            if attempt == attempts:
                raise
            await asyncio.sleep(min(maximum, initial * 2 ** (attempt - 1)) * (0.5 + random.random() / 2))
    raise AssertionError("unreachable")
