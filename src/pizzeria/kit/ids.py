"""Identifiers: UUIDv7 (RFC 9562), time-ordered so that ids sort by creation time."""

from __future__ import annotations

import os
import threading
import time
import uuid


class _Uuid7Source:
    """Issues UUIDv7s that strictly increase within this process: 48-bit Unix milliseconds,
    then a 12-bit counter for ids made in the same millisecond, then 62 random bits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def next(self) -> uuid.UUID:
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # room to count up
            else:
                self._counter += 1
                if self._counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                    self._last_ms += 1
                    self._counter = 0
            ms, counter = self._last_ms, self._counter
        rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
        return uuid.UUID(int=value)


_source = _Uuid7Source()


def uuid7() -> uuid.UUID:
    """A new UUIDv7."""
    return _source.next()


def new_id() -> str:
    """A new UUIDv7 as its canonical string."""
    return str(uuid7())
