"""Cache-aside for reads: Redis when several processes must share it (production), a dict in
the process otherwise (embedded). Both keep the same promise: a read after a change never
returns what was there before it.

Invalidation writes a short-lived tombstone instead of deleting the key, and a read fills the
cache only if the key is absent (`SET NX`). A read that loaded the old value before a change
committed cannot put it back afterwards: the tombstone is in its way. Writers invalidate before
their transaction (covering it) and again after it commits.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from prometheus_client import Counter

from pizzeria.kit.logging import get_logger

if TYPE_CHECKING:
    import redis.asyncio as redis

log = get_logger(__name__)

cache_requests = Counter(
    "pizzeria_cache_requests_total", "Cache look-ups by cache and result (hit, miss).", ["cache", "result"]
)
cache_errors = Counter(
    "pizzeria_cache_errors_total", "Cache operations that failed (served from the database).", ["cache"]
)

TOMBSTONE = b"\x00invalidated"


class Cache(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def fill(self, key: str, value: bytes) -> None: ...

    async def invalidate(self, *keys: str) -> None: ...

    async def close(self) -> None: ...


async def cached(cache: Cache, key: str, load: Callable[[], Awaitable[bytes | None]]) -> bytes | None:
    """The value under `key`, loaded (and kept) on a miss; None (not kept) when `load` finds nothing."""
    value = await cache.get(key)
    if value is not None:
        return value
    value = await load()
    if value is not None:
        await cache.fill(key, value)
    return value


class InProcessCache:
    """A bounded dict with expiry: one process, nothing shared."""

    def __init__(
        self,
        name: str,
        *,
        ttl_s: float,
        tombstone_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.ttl_s = ttl_s
        self.tombstone_s = tombstone_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def _live(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._entries[key]
            return None
        return entry[1]

    async def get(self, key: str) -> bytes | None:
        value = self._live(key)
        hit = value is not None and value != TOMBSTONE
        cache_requests.labels(self.name, "hit" if hit else "miss").inc()
        return value if hit else None

    async def fill(self, key: str, value: bytes) -> None:
        if self._live(key) is not None:
            return  # a fresher value, or a tombstone of a change in flight
        self._entries[key] = (self.clock() + self.ttl_s, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def invalidate(self, *keys: str) -> None:
        until = self.clock() + self.tombstone_s
        for key in keys:
            self._entries[key] = (until, TOMBSTONE)
            self._entries.move_to_end(key)

    async def close(self) -> None:
        self._entries.clear()


#: Tombstones for every key of `KEYS`: the value `ARGV[1]`, each expiring `ARGV[2]` ms later. One
#: command for any number of keys (sent by its digest, EVALSHA; a server that does not know the
#: script yet is sent it once), which costs the client less than a pipeline of one SET a key.
_INVALIDATE = """
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
end
return #KEYS
"""


class RedisCache:
    """Keys in Redis under `prefix`, shared by every process of the service (Redis's client is
    imported only here: the embedded stack never loads it). Each operation is one command."""

    def __init__(self, name: str, url: str, *, ttl_s: float, tombstone_s: float, prefix: str) -> None:
        import redis.asyncio as redis

        self.name = name
        self.client: redis.Redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        #: What a call that could not reach Redis raises.
        self.unavailable: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self.ttl_ms = int(ttl_s * 1000)
        self.tombstone_ms = int(tombstone_s * 1000)
        self.prefix = prefix
        self._invalidate = self.client.register_script(_INVALIDATE)

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self.client.get(f"{self.prefix}:{key}")
        except self.unavailable as exc:
            self._failed("get", exc)
            return None
        hit = isinstance(value, bytes) and value != TOMBSTONE
        cache_requests.labels(self.name, "hit" if hit else "miss").inc()
        return value if hit and isinstance(value, bytes) else None

    async def fill(self, key: str, value: bytes) -> None:
        try:
            await self.client.set(f"{self.prefix}:{key}", value, px=self.ttl_ms, nx=True)
        except self.unavailable as exc:
            self._failed("fill", exc)

    async def invalidate(self, *keys: str) -> None:
        if not keys:
            return
        try:
            await self._invalidate(keys=[f"{self.prefix}:{key}" for key in keys], args=[TOMBSTONE, self.tombstone_ms])
        except self.unavailable as exc:
            # The write itself stands; what was cached may be served until its TTL runs out.
            self._failed("invalidate", exc)

    def _failed(self, operation: str, exc: BaseException) -> None:
        cache_errors.labels(self.name).inc()
        log.warning("cache unavailable", cache=self.name, operation=operation, error=str(exc))

    async def close(self) -> None:
        await self.client.aclose()


def build_cache(name: str, *, redis_url: str, ttl_s: float, tombstone_s: float, key_prefix: str = "pizzeria") -> Cache:
    if redis_url:
        return RedisCache(name, redis_url, ttl_s=ttl_s, tombstone_s=tombstone_s, prefix=f"{key_prefix}:cache:{name}")
    return InProcessCache(name, ttl_s=ttl_s, tombstone_s=tombstone_s)
