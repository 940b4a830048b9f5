"""Password hashing with argon2id, off the event loop.

A hash costs ~0.1 s of CPU and 64 MiB (argon2-cffi's RFC 9106 low-memory profile): it runs in a
worker thread (argon2 releases the GIL) and at most one per CPU at a time, so a burst of sign-ins
neither stalls other requests nor exhausts memory.
"""

from __future__ import annotations

import asyncio
import os

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


def default_hasher() -> PasswordHasher:
    """argon2id with the RFC 9106 low-memory parameters (t=3, m=64 MiB, p=4)."""
    return PasswordHasher()


class Passwords:
    """Hashes and verifies passwords; verifying for an unknown user costs the same as for a known
    one, so response times do not tell which emails have accounts."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or default_hasher()
        self._slots = asyncio.Semaphore(os.cpu_count() or 1)
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

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
            self._dummy_hash = await self.hash(os.urandom(16).hex())
        return self._dummy_hash

    async def _check(self, stored_hash: str, password: str) -> bool:
        async with self._slots:
            try:
                return await asyncio.to_thread(self._hasher.verify, stored_hash, password)
            except (VerificationError, InvalidHashError):
                return False
