"""Identifiers: UUIDv7 (RFC 9562), time-ordered so that ids sort by creation time."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator


class Uuid7Source:
    """Issues UUIDv7s that strictly increase within this process: 48-bit Unix milliseconds,
    then a 12-bit counter for ids made in the same millisecond, then 62 random bits. The time
    (`now_ns`, nanoseconds) and the random bytes (`entropy`) are the system's unless a
    simulation gives its own, to make the same ids on every run."""

    def __init__(
        self, *, now_ns: Callable[[], int] = time.time_ns, entropy: Callable[[int], bytes] = os.urandom
    ) -> None:
        self._now_ns = now_ns
        self._entropy = entropy
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def next(self) -> uuid.UUID:
        return uuid.UUID(int=self.next_int())

    def next_int(self) -> int:
        """The next UUIDv7's 128 bits."""
        with self._lock:
            now_ms = self._now_ns() // 1_000_000
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._counter = int.from_bytes(self._entropy(2), "big") & 0x3FF  # room to count up
            else:
                self._counter += 1
                if self._counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                    self._last_ms += 1
                    self._counter = 0
            ms, counter = self._last_ms, self._counter
            rand = int.from_bytes(self._entropy(8), "big") & ((1 << 62) - 1)
        return (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand


class _Issuing:
    source = Uuid7Source()


def uuid7() -> uuid.UUID:
    """A new UUIDv7."""
    return _Issuing.source.next()


def new_id() -> str:
    """A new UUIDv7 as its canonical string (`str(uuid7())`, without making the UUID)."""
    digits = f"{_Issuing.source.next_int():032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


@contextlib.contextmanager
def use(source: Uuid7Source) -> Iterator[Uuid7Source]:
    """Inside the block every id of this process comes from `source` (for simulations)."""
    previous, _Issuing.source = _Issuing.source, source
    try:
        yield source
    finally:
        _Issuing.source = previous
