"""Client CPU per call of the Redis round trips on the hot paths, each in the shape it had (a
pipeline) beside the shape it has (one script, EVALSHA), on the Redis at `--url`:

- hit: the gateway's rate limit, once per request: MULTI/INCR/EXPIRE/EXEC against the script
  that `RedisRateLimiter.hit` runs (and the limiter's own `hit`, with its key and decision);
- invalidate: the orders read model's tombstones, twice per projected run: one `SET PX` a key
  in a pipeline against the script `RedisCache.invalidate` runs, for 1 and for 8 keys;
- incr / get: a bare command, for scale; and GET on a client without `socket_timeout` under
  one `asyncio.timeout` instead (not what the services do: redis-py sends each command of a client
  with a socket timeout under `asyncio.wait_for`, a task of its own on Python 3.11; this line
  shows what that costs).

CPU is this process's (`time.process_time`), one call at a time: the client's share, which the
services pay on every request or message; Redis's own is not counted. Each shape is run in
`--rounds` interleaved rounds of `--calls` calls and the least and the median are printed (the
machine is shared: the least is the steadiest figure). Keys go under a prefix of their own and
are deleted at the end.

    .venv/bin/python -m bench.redis_bench [--url redis://127.0.0.1:6379/15] [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as redis

from pizzeria.kit.cache import TOMBSTONE, RedisCache
from pizzeria.services.gateway.ratelimit import RedisRateLimiter

WINDOW_S = 60


async def shapes(url: str, prefix: str) -> tuple[dict[str, Callable[[], Awaitable[object]]], list[object]]:
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    limiter = RedisRateLimiter(url, WINDOW_S, prefix=f"{prefix}:ratelimit")
    cache = RedisCache("bench", url, ttl_s=30, tombstone_s=1, prefix=f"{prefix}:cache")
    hit = limiter._hit  # the script itself, on the limiter's client
    invalidate = cache._invalidate
    counter = f"{prefix}:counter"
    untimed = redis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=0.5)

    async def get_under_one_timeout() -> object:
        async with asyncio.timeout(0.5):
            return await untimed.get(f"{prefix}:cache:k0")

    async def hit_pipeline() -> object:
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr(counter)
            pipe.expire(counter, WINDOW_S + 1)
            return await pipe.execute()

    def invalidate_pipeline(count: int) -> Callable[[], Awaitable[object]]:
        keys = [f"{prefix}:cache:k{n}" for n in range(count)]

        async def run() -> object:
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(key, TOMBSTONE, px=1000)
                return await pipe.execute()

        return run

    def invalidate_script(count: int) -> Callable[[], Awaitable[object]]:
        keys = [f"{prefix}:cache:k{n}" for n in range(count)]
        return lambda: invalidate(keys=keys, args=[TOMBSTONE, 1000])

    one, eight = [f"k{n}" for n in range(1)], [f"k{n}" for n in range(8)]
    runs: dict[str, Callable[[], Awaitable[object]]] = {
        "hit: pipeline MULTI/INCR/EXPIRE/EXEC (before)": hit_pipeline,
        "hit: script INCR+EXPIRE (after)": lambda: hit(keys=[counter], args=[WINDOW_S + 1]),
        "hit: RedisRateLimiter.hit (after)": lambda: limiter.hit("ip:bench", 10**9),
        "invalidate 1 key: pipeline SET PX (before)": invalidate_pipeline(1),
        "invalidate 1 key: script (after)": invalidate_script(1),
        "invalidate 1 key: RedisCache.invalidate (after)": lambda: cache.invalidate(*one),
        "invalidate 8 keys: pipeline SET PX (before)": invalidate_pipeline(8),
        "invalidate 8 keys: script (after)": invalidate_script(8),
        "invalidate 8 keys: RedisCache.invalidate (after)": lambda: cache.invalidate(*eight),
        "bare INCR": lambda: client.incr(counter),
        "bare GET (RedisCache.get)": lambda: cache.get("k0"),
        "bare GET, no socket timeout, asyncio.timeout": get_under_one_timeout,
    }
    return runs, [client, untimed, limiter, cache]


async def main(url: str, calls: int, rounds: int) -> None:
    prefix = f"pz-bench-{uuid.uuid4().hex[:8]}"
    runs, closing = await shapes(url, prefix)
    figures: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm: connections open, scripts loaded
        for _ in range(50):
            await run()
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.process_time()
            for _ in range(calls):
                await run()
            figures[name].append((time.process_time() - started) / calls * 1e6)
    print(f"client CPU per call, µs ({rounds} rounds of {calls} calls; least / median)")
    for name, values in figures.items():
        print(f"  {name:<52} {min(values):7.1f} {statistics.median(values):7.1f}")
    admin = redis.Redis.from_url(url)
    try:
        stale = [key async for key in admin.scan_iter(match=f"{prefix}:*")]
        if stale:
            await admin.delete(*stale)
    finally:
        await admin.aclose()
    for each in closing:
        await each.aclose() if isinstance(each, redis.Redis) else await each.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.calls, args.rounds))
