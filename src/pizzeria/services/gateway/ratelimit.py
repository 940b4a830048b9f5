"""Rate limits: fixed-window counters per key, in Redis when several gateway processes must
share them (production) or in this process (embedded).

A window is `window_s` seconds aligned to the epoch; a key's count resets when the next one
starts. On refusal the caller learns when that is (`Retry-After`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pizzeria.kit.logging import get_logger

if TYPE_CHECKING:
    import redis.asyncio as redis

log = get_logger(__name__)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int  # until the window resets


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int) -> Decision: ...

    async def close(self) -> None: ...


def _decision(count: int, limit: int, now: float, window_s: int) -> Decision:
    resets_in = max(1, math.ceil((math.floor(now / window_s) + 1) * window_s - now))
    return Decision(allowed=count <= limit, limit=limit, remaining=max(0, limit - count), retry_after_s=resets_in)


class InProcessRateLimiter:
    """Counters in a dict: right for one process (the embedded gateway)."""

    def __init__(self, window_s: int, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self.clock = clock
        self._window = -1
        self._counts: dict[str, int] = {}

    async def hit(self, key: str, limit: int) -> Decision:
        now = self.clock()
        window = int(now // self.window_s)
        if window != self._window:  # a new window: every count starts again
            self._window, self._counts = window, {}
        count = self._counts[key] = self._counts.get(key, 0) + 1
        return _decision(count, limit, now, self.window_s)

    async def close(self) -> None:
        return None


#: One hit: the count goes up and the key expires `ARGV[1]` seconds later, in one command (the
#: script is atomic: no key is ever left without an expiry). Sent by its digest (EVALSHA); a
#: server that does not know it yet is sent the script once.
_HIT = """
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return count
"""


class RedisRateLimiter:
    """Counters in Redis, shared by every gateway process: INCR on a key named after the window,
    which expires when the window is over (Redis's client is imported only here: the embedded
    stack never loads it). A hit is one round trip of one command: a script, which costs the
    client less than a MULTI/EXEC pipeline of two."""

    def __init__(
        self, url: str, window_s: int, clock: Callable[[], float] = time.time, prefix: str = "pizzeria:ratelimit"
    ) -> None:
        import redis.asyncio as redis

        self.client: redis.Redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        #: What a call that could not reach Redis raises.
        self.unavailable: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self.window_s = window_s
        self.clock = clock
        self.prefix = prefix
        self._hit = self.client.register_script(_HIT)

    async def hit(self, key: str, limit: int) -> Decision:
        now = self.clock()
        window = int(now // self.window_s)
        name = f"{self.prefix}:{key}:{window}"
        try:
            count = await self._hit(keys=[name], args=[self.window_s + 1])
        except self.unavailable as exc:
            # Fail open: an unreachable limiter must not take the whole API down with it.
            log.warning("rate limiter unavailable; letting the request through", error=str(exc))
            return Decision(allowed=True, limit=limit, remaining=limit, retry_after_s=0)
        return _decision(int(count), limit, now, self.window_s)

    async def close(self) -> None:
        await self.client.aclose()


def build_rate_limiter(redis_url: str, window_s: int, key_prefix: str = "pizzeria") -> RateLimiter:
    if redis_url:
        return RedisRateLimiter(redis_url, window_s, prefix=f"{key_prefix}:ratelimit")
    return InProcessRateLimiter(window_s)
