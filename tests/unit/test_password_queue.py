"""Password hashing is bounded: with every slot busy, a few requests wait their turn, and the
rest are refused at once (503, Retry-After, `X-Load-Shed`) instead of answering after the
caller gave up; a wait that outlasts its bound is refused too. Work that must be done (the demo
accounts) waits as long as it takes. The hasher is a stand-in whose every hash waits for the
test to let it finish, so "busy" is a state the test holds, not a matter of speed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest
from argon2 import PasswordHasher

from pizzeria.kit.errors import LOAD_SHED_HEADER, Overloaded
from pizzeria.services.identity.passwords import DUMMY_HASH, Passwords


class GatedHasher:
    """Hashes that finish when the test opens the gate (or after a minute, so nothing hangs)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)

    def _wait(self) -> None:
        self.started.release()
        assert self.gate.wait(60), "the test never opened the gate"

    def hash(self, password: str) -> str:
        self._wait()
        return f"h:{password}"

    def verify(self, stored: str, password: str) -> bool:
        self._wait()
        return stored == f"h:{password}"

    def check_needs_rehash(self, stored: str) -> bool:
        return False


@pytest.fixture
async def hasher() -> AsyncIterator[GatedHasher]:
    gated = GatedHasher()
    yield gated
    gated.gate.set()


async def started(hasher: GatedHasher, count: int) -> None:
    """Until `count` hashes are running in their threads."""
    for _ in range(count):
        assert await asyncio.to_thread(hasher.started.acquire, True, 30), "a hash never started"


async def waiting(passwords: Passwords, count: int) -> None:
    """Until `count` requests wait for a turn (they queue without a thread, at once)."""
    for _ in range(1000):
        if passwords._waiting == count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{passwords._waiting} waiting, not {count}")


def assert_shed(refused: Overloaded) -> None:
    assert refused.status == 503
    assert refused.headers[LOAD_SHED_HEADER] == "password-hashing"
    assert int(refused.headers["Retry-After"]) >= 1


async def test_past_the_queue_a_check_is_refused_at_once_and_the_queued_ones_still_run(hasher: GatedHasher) -> None:
    passwords = Passwords(hasher, slots=1, queue=2, wait_s=60)  # type: ignore[arg-type]
    running = asyncio.create_task(passwords.verify("h:a", "a"))
    await started(hasher, 1)
    queued = [asyncio.create_task(passwords.verify("h:b", "b")), asyncio.create_task(passwords.hash("c"))]
    await waiting(passwords, 2)

    for _ in range(5):  # refused while the first still runs and the queue is still full
        with pytest.raises(Overloaded) as refused:
            await passwords.verify("h:d", "d")
        assert_shed(refused.value)
    assert not running.done()

    hasher.gate.set()
    assert await running is True
    assert await asyncio.gather(*queued) == [True, "h:c"]
    assert await passwords.verify("h:e", "e") is True  # room again


async def test_a_wait_that_outlasts_its_bound_is_refused(hasher: GatedHasher) -> None:
    passwords = Passwords(hasher, slots=1, queue=10, wait_s=0.05)  # type: ignore[arg-type]
    running = asyncio.create_task(passwords.hash("a"))
    await started(hasher, 1)
    with pytest.raises(Overloaded) as refused:
        await passwords.verify("h:b", "b")
    assert_shed(refused.value)
    assert not running.done(), "refused while the slot was still taken: by the bound, not by a turn"
    assert passwords._waiting == 0
    hasher.gate.set()
    assert await running == "h:a"


async def test_work_that_must_be_done_waits_its_turn_however_full_the_queue(hasher: GatedHasher) -> None:
    passwords = Passwords(hasher, slots=1, queue=0, wait_s=0.01)  # type: ignore[arg-type]
    running = asyncio.create_task(passwords.hash("a"))
    await started(hasher, 1)
    seeding = asyncio.create_task(passwords.hash("demo", shed=False))
    await waiting(passwords, 1)
    with pytest.raises(Overloaded):
        await passwords.hash("b")
    hasher.gate.set()
    assert (await running, await seeding) == ("h:a", "h:demo")


async def test_a_hash_made_ahead_is_used_only_with_the_hasher_it_was_made_for() -> None:
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    made = cheap.hash("pizza")
    assert await Passwords(cheap).made_ahead(made, "pizza") == made
    # Another hasher's parameters: a new hash, with its own parameters, of the same password.
    other = PasswordHasher(time_cost=2, memory_cost=1024, parallelism=1)
    fresh = await Passwords(other).made_ahead(made, "pizza")
    assert fresh != made
    assert not other.check_needs_rehash(fresh)
    assert other.verify(fresh, "pizza")
    dummy = await Passwords(other).dummy_hash()
    assert dummy != DUMMY_HASH
    assert not other.check_needs_rehash(dummy)
