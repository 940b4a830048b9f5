"""`resilience.retry`: retries what it is told to, backs off between attempts, and gives up."""

from __future__ import annotations

import pytest

from pizzeria.kit import resilience
from pizzeria.kit.resilience import retry


class Flaky:
    """Fails with `error` for the first `failures` calls, then answers."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "done"


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the backoff sleeps instead of sleeping."""
    delays: list[float] = []

    async def fake_sleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(resilience.asyncio, "sleep", fake_sleep)
    return delays


async def test_returns_the_first_success(slept: list[float]) -> None:
    fn = Flaky(failures=2)
    assert await retry(fn, attempts=3) == "done"
    assert fn.calls == 3
    assert len(slept) == 2


async def test_gives_up_after_the_last_attempt_with_the_last_error(slept: list[float]) -> None:
    fn = Flaky(failures=10)
    with pytest.raises(ConnectionError, match="failure 4"):
        await retry(fn, attempts=4)
    assert fn.calls == 4
    assert len(slept) == 3  # no sleep after the last attempt


async def test_other_errors_are_not_retried(slept: list[float]) -> None:
    fn = Flaky(failures=1, error=KeyError)
    with pytest.raises(KeyError):
        await retry(fn, attempts=5, retry_on=(ConnectionError,))
    assert fn.calls == 1
    assert slept == []


async def test_backoff_grows_with_jitter_and_caps(slept: list[float]) -> None:
    with pytest.raises(ConnectionError):
        await retry(Flaky(failures=10), attempts=7, initial=0.1, maximum=0.8)
    ceilings = [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]
    assert len(slept) == len(ceilings)
    for delay, ceiling in zip(slept, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


async def test_no_sleep_when_the_first_call_succeeds(slept: list[float]) -> None:
    assert await retry(Flaky(failures=0)) == "done"
    assert slept == []
