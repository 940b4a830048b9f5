"""The Redis rate limiter against a real Redis: a hit is one script (INCR and EXPIRE at once), so
its counts and decisions are those of the in-process limiter, a window's key always expires
`window_s + 1` seconds after its latest hit, a server that forgot the script is sent it again,
and an unreachable Redis lets every request through."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from pizzeria.services.gateway.ratelimit import Decision, InProcessRateLimiter, RedisRateLimiter
from tests.integration.gateway import REDIS_URL

WINDOW_S = 3600
NOW = 1_800_000_123.5  # within window 500_000 of an hour


@pytest.fixture
async def admin() -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def limiter() -> AsyncIterator[RedisRateLimiter]:
    made = RedisRateLimiter(REDIS_URL, WINDOW_S, clock=lambda: NOW, prefix=f"pz-test-{uuid.uuid4().hex}:ratelimit")
    yield made
    await made.close()


def key_of(limiter: RedisRateLimiter, key: str) -> str:
    return f"{limiter.prefix}:{key}:{int(NOW // WINDOW_S)}"


async def test_decisions_are_those_of_the_in_process_limiter(limiter: RedisRateLimiter) -> None:
    local = InProcessRateLimiter(WINDOW_S, clock=lambda: NOW)
    shared = [await limiter.hit("ip:a", 3) for _ in range(5)]
    assert shared == [await local.hit("ip:a", 3) for _ in range(5)]
    assert [d.allowed for d in shared] == [True, True, True, False, False]
    assert shared[-1] == Decision(allowed=False, limit=3, remaining=0, retry_after_s=3477)
    assert (await limiter.hit("ip:b", 3)).remaining == 2  # another key counts on its own


async def test_a_windows_key_expires_a_window_and_a_second_after_its_latest_hit(
    limiter: RedisRateLimiter, admin: redis.Redis
) -> None:
    name = key_of(limiter, "ip:ttl")
    await limiter.hit("ip:ttl", 10)
    assert WINDOW_S - 1 <= await admin.ttl(name) <= WINDOW_S + 1
    await admin.expire(name, 5)  # as if the first hit were long ago: the next one sets it again
    await limiter.hit("ip:ttl", 10)
    assert WINDOW_S - 1 <= await admin.ttl(name) <= WINDOW_S + 1
    assert int(await admin.get(name)) == 2


async def test_a_count_left_without_an_expiry_gets_one_on_its_next_hit(
    limiter: RedisRateLimiter, admin: redis.Redis
) -> None:
    name = key_of(limiter, "ip:stray")
    await admin.set(name, 4)
    assert (await limiter.hit("ip:stray", 5)).remaining == 0
    assert WINDOW_S - 1 <= await admin.ttl(name) <= WINDOW_S + 1


async def test_a_server_that_forgot_the_script_is_sent_it_again(limiter: RedisRateLimiter, admin: redis.Redis) -> None:
    assert (await limiter.hit("ip:flush", 5)).remaining == 4
    await admin.script_flush()
    assert (await limiter.hit("ip:flush", 5)).remaining == 3
    assert WINDOW_S - 1 <= await admin.ttl(key_of(limiter, "ip:flush")) <= WINDOW_S + 1


async def test_an_unreachable_redis_lets_every_request_through() -> None:
    down = RedisRateLimiter("redis://127.0.0.1:1/15", WINDOW_S, clock=lambda: NOW)  # nothing listens on port 1
    try:
        decisions = [await down.hit("ip:a", 1) for _ in range(3)]
    finally:
        await down.close()
    assert decisions == [Decision(allowed=True, limit=1, remaining=1, retry_after_s=0)] * 3


async def test_the_hits_of_a_request_are_one_command(limiter: RedisRateLimiter, admin: redis.Redis) -> None:
    """Several keys (a request's address and user) are counted in one script call, each as a hit
    of its own would count it."""
    local = InProcessRateLimiter(WINDOW_S, clock=lambda: NOW)
    checks = [("ip:both", 3), ("user:both", 2)]

    async def scripts_run() -> int:
        return int((await admin.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0))

    await limiter.hit("ip:warm", 1)  # the script is known to the server from here on
    before = await scripts_run()
    shared = [await limiter.hit_all(checks) for _ in range(3)]
    assert await scripts_run() - before == 3
    assert shared == [await local.hit_all(checks) for _ in range(3)]
    assert [[d.allowed for d in ds] for ds in shared] == [[True, True], [True, True], [True, False]]
    for key, _ in checks:
        assert int(await admin.get(key_of(limiter, key))) == 3
        assert WINDOW_S - 1 <= await admin.ttl(key_of(limiter, key)) <= WINDOW_S + 1
