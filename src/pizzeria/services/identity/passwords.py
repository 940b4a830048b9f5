"""Password hashing with argon2id, off the event loop, within a bounded queue.

A hash costs ~0.1 s of CPU and 64 MiB (argon2-cffi's RFC 9106 low-memory profile): it runs in a
worker thread (argon2 releases the GIL) and at most one per CPU at a time, so a burst of sign-ins
neither stalls other requests nor exhausts memory. Beyond that, at most `queue` requests wait
for their turn, each at most `wait_s`: the rest are refused at once (`Overloaded`, 503 with
Retry-After), instead of answering after the caller (the gateway) has given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from pizzeria.kit.errors import Overloaded
from pizzeria.services.identity import metrics

T = TypeVar("T")

#: What a refusal names as full (the `X-Load-Shed` header).
CAPACITY = "password-hashing"

#: A hash of random bytes nobody kept, with the default parameters: what a sign-in for an unknown
#: email is checked against (a new one is made when the hasher's parameters differ).
DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$nh/8xE73FfHJCyiqZbyk1Q$nsrGWhZQIdV2ko21AkfZKH6PhT6FUqQhJlejfOYIZso"


def default_hasher() -> PasswordHasher:
    """argon2id with the RFC 9106 low-memory parameters (t=3, m=64 MiB, p=4)."""
    return PasswordHasher()


class Passwords:
    """Hashes and verifies passwords; verifying for an unknown user costs the same as for a known
    one, so response times do not tell which emails have accounts."""

    def __init__(
        self,
        hasher: PasswordHasher | None = None,
        *,
        slots: int | None = None,
        queue: int = 32,
        wait_s: float = 2.0,
    ) -> None:
        self._hasher = hasher or default_hasher()
        self._slots = asyncio.Semaphore(slots or os.cpu_count() or 1)
        self._queue = queue
        self._wait_s = wait_s
        self._waiting = 0
        self._dummy_hash: str | None = None

    async def hash(self, password: str, *, shed: bool = True) -> str:
        """The password's hash; `shed=False` waits however long it takes (work that must be
        done, not a caller's request: the demo accounts)."""
        return await self._run(self._hasher.hash, password, shed=shed)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """True if `password` matches; with no stored hash, spend the same effort and say False."""
        if stored_hash is None:
            await self._check(await self.dummy_hash(), password)
            return False
        return await self._check(stored_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made with other parameters than today's (rehash on sign-in)."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    async def dummy_hash(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.made_ahead(DUMMY_HASH, os.urandom(16).hex())
        return self._dummy_hash

    async def made_ahead(self, made: str, password: str) -> str:
        """`made`, a hash of `password` made ahead of time, when it has this hasher's
        parameters; else a new hash of `password`."""
        return await self.hash(password, shed=False) if self.needs_rehash(made) else made

    async def _check(self, stored_hash: str, password: str) -> bool:
        try:
            return await self._run(self._hasher.verify, stored_hash, password, shed=True)
        except (VerificationError, InvalidHashError):
            return False

    async def _run(self, work: Callable[..., T], *args: str, shed: bool) -> T:
        async with self._turn(shed=shed):
            return await asyncio.to_thread(work, *args)

    @contextlib.asynccontextmanager
    async def _turn(self, *, shed: bool) -> AsyncIterator[None]:
        """A hashing slot: at once if one is free; else after waiting in the queue, if there is
        room in it and a slot frees up in time; else `Overloaded`."""
        if shed and self._slots.locked() and self._waiting >= self._queue:
            raise self._refusal(f"{self._queue} are waiting already")
        self._waiting += 1
        try:
            async with asyncio.timeout(self._wait_s if shed else None):
                await self._slots.acquire()
        except TimeoutError:
            raise self._refusal(f"no turn came within {self._wait_s:g} s") from None
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    @staticmethod
    def _refusal(why: str) -> Overloaded:
        metrics.hashing_refused.inc()
        return Overloaded(f"password checks are at capacity ({why}); try again in a moment", capacity=CAPACITY)
