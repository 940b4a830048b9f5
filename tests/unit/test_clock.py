"""The clock: UTC and timezone-aware; a simulation's clock in the system's place for a block."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pizzeria.kit import clock
from pizzeria.kit.clock import utcnow
from tests.fakes import ManualClock

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_utcnow_is_timezone_aware_utc() -> None:
    assert utcnow().tzinfo is UTC
    assert abs(utcnow() - datetime.now(UTC)) < timedelta(seconds=5)


def test_use_makes_utcnow_read_the_given_clock_until_the_block_ends() -> None:
    manual = ManualClock(START)
    with clock.use(manual):
        assert utcnow() == START
        manual.advance(1.5)
        assert utcnow() == START + timedelta(seconds=1.5)
        assert (manual.time(), manual.monotonic()) == (START.timestamp() + 1.5, 1.5)
    assert abs(utcnow() - datetime.now(UTC)) < timedelta(seconds=5)


def test_the_system_clock_is_back_after_a_block_that_failed() -> None:
    with pytest.raises(RuntimeError), clock.use(ManualClock(START)):
        raise RuntimeError("boom")
    assert utcnow() != START
