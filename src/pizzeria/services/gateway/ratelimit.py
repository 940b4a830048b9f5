"""Rate limits: fixed-window counters per key, in Redis when several gateway processes must
share them (production) or in this process (embedded).

A window is `window_s` seconds aligned to the epoch; a key's count resets when the next one
starts. On refusal the caller learns when that is (`Retry-After`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
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

    async def hit_all(self, checks: Sequence[tuple[str, int]]) -> list[Decision]:
        """A hit on each key of `checks` (a key and its limit) at once: their decisions, in order."""
        ...

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
        return (await self.hit_all([(key, limit)]))[0]

    async def hit_all(self, checks: Sequence[tuple[str, int]]) -> list[Decision]:
        now = self.clock()
        window = int(now // self.window_s)
        if window != self._window:  # a new window: every count starts again
            self._window, self._counts = window, {}
        decisions = []
        for key, limit in checks:
            count = self._counts[key] = self._counts.get(key, 0) + 1
            decisions.append(_decision(count, limit, now, self.window_s))
        return decisions

    async def close(self) -> None:
        return None


#: A hit on each key: its count goes up and it expires `ARGV[1]` seconds later, in one command
#: (the script is atomic: no key is ever left without an expiry); the counts, in the keys' order.
#: Sent by its digest (EVALSHA); a server that does not know it yet is sent the script once.
_HIT = """
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[1])
end
return counts
"""


class RedisRateLimiter:
    """Counters in Redis, shared by every gateway process: INCR on a key named after the window,
    which expires when the window is over (Redis's client is imported only here: the embedded
    stack never loads it). The hits of a request (its address's and its user's) are one round
    trip of one command: a script, which costs the client less than a MULTI/EXEC pipeline."""

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
        return (await self.hit_all([(key, limit)]))[0]

    async def hit_all(self, checks: Sequence[tuple[str, int]]) -> list[Decision]:
        now = self.clock()
        window = int(now // self.window_s)
        names = [f"{self.prefix}:{key}:{window}" for key, _ in checks]
        try:
            counts = await self._hit(keys=names, args=[self.window_s + 1])
        except self.unavailable as exc:
            # Fail open: an unreachable limiter must not take the whole API down with it.
            log.warning("rate limiter unavailable; letting the request through", error=str(exc))
            return [Decision(allowed=True, limit=limit, remaining=limit, retry_after_s=0) for _, limit in checks]
        limits = [limit for _, limit in checks]
        return [_decision(int(count), limit, now, self.window_s) for count, limit in zip(counts, limits, strict=True)]

    async def close(self) -> None:
        await self.client.aclose()


def build_rate_limiter(redis_url: str, window_s: int, key_prefix: str = "pizzeria") -> RateLimiter:
    if redis_url:
        return RedisRateLimiter(redis_url, window_s, prefix=f"{key_prefix}:ratelimit")
    return InProcessRateLimiter(window_s)
