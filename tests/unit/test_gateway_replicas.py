"""The gateway spreads a service's requests over its replicas: in turn while they are equally
busy, to the least busy one otherwise; a replica that is down costs the requests that found it
nothing but a detour, its own breaker keeps it out, and the others carry the service."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter

import httpx
import pytest

from pizzeria.kit.resilience import BreakerState, CircuitBreaker
from pizzeria.services.gateway.upstream import Replica, Upstream, UpstreamUnavailable

THRESHOLD = 3


class Fake:
    """One replica's server: answers 200 naming itself, or fails as told."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[str] = []
        self.down = False
        self.fail_with: Exception | int | None = None
        self.hold: asyncio.Event | None = None  # answers wait for this while set

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.method)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if isinstance(self.fail_with, Exception):
            raise self.fail_with
        if self.fail_with is not None:
            return httpx.Response(self.fail_with)
        if self.hold is not None:
            await self.hold.wait()
        return httpx.Response(200, json={"replica": self.name})


def service(*names: str, retries: int = 2, reset: float = 60.0) -> tuple[Upstream, dict[str, Fake]]:
    fakes = {name: Fake(name) for name in names}
    replicas = [
        Replica(
            f"http://{name}:5002",
            timeout=1,
            breaker=CircuitBreaker(f"upstream-{name}", failure_threshold=THRESHOLD, reset_timeout=reset),
            transport=httpx.MockTransport(fake.handle),
        )
        for name, fake in fakes.items()
    ]
    return Upstream("orders", replicas, retries=retries, backoff=0), fakes


async def answered_by(upstream: Upstream, method: str = "GET") -> str:
    answer = await upstream.send(method, "/api/v1/orders")
    assert answer.status == 200
    replica: str = httpx.Response(200, content=answer.body).json()["replica"]
    return replica


async def test_requests_take_turns_over_equally_busy_replicas() -> None:
    upstream, _ = service("a", "b", "c")
    try:
        served = [await answered_by(upstream, method) for method in ["GET", "POST"] * 6]
        assert Counter(served) == {"a": 4, "b": 4, "c": 4}
        assert all(x != y for x, y in itertools.pairwise(served)), served
    finally:
        await upstream.close()


async def test_a_request_goes_to_the_replica_with_the_fewest_in_flight() -> None:
    upstream, fakes = service("a", "b")
    try:
        assert [await answered_by(upstream) for _ in range(2)] == ["a", "b"]
        hold = fakes["a"].hold = asyncio.Event()
        stuck = asyncio.create_task(answered_by(upstream))  # a's turn: held
        while upstream.replicas[0].in_flight == 0:
            await asyncio.sleep(0)
        # a is busy: every request goes to b, whoever's turn it is, until a answers.
        assert [await answered_by(upstream) for _ in range(4)] == ["b"] * 4
        hold.set()
        assert await stuck == "a"
    finally:
        await upstream.close()


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_replica_that_is_down_is_skipped_and_then_kept_out_by_its_own_breaker(method: str) -> None:
    upstream, fakes = service("a", "b")
    fakes["a"].down = True
    try:
        # Nothing was sent to a (no connection): a write goes on to b as well as a read.
        served = [await answered_by(upstream, method) for _ in range(2 * THRESHOLD)]
        assert served == ["b"] * len(served)
        a, b = upstream.replicas
        assert a.breaker.state is BreakerState.OPEN, "a's breaker opens after its threshold of failed requests"
        assert b.breaker.state is BreakerState.CLOSED
        assert upstream.state() == "closed", "the service takes requests while one replica does"
        tried = len(fakes["a"].calls)
        assert tried == THRESHOLD
        for _ in range(5):
            assert await answered_by(upstream, method) == "b"
        assert len(fakes["a"].calls) == tried, "while its breaker is open, a is not called at all"
    finally:
        await upstream.close()


async def test_a_write_that_reached_a_replica_is_never_sent_to_another() -> None:
    upstream, fakes = service("a", "b")
    fakes["a"].fail_with = httpx.ReadError("connection reset")
    try:
        with pytest.raises(UpstreamUnavailable):
            await upstream.send("POST", "/api/v1/orders")
        assert (fakes["a"].calls, fakes["b"].calls) == (["POST"], [])
    finally:
        await upstream.close()


@pytest.mark.parametrize("trouble", [503, httpx.ReadTimeout("slow")])
async def test_a_read_is_retried_on_another_replica(trouble: Exception | int) -> None:
    upstream, fakes = service("a", "b")
    fakes["a"].fail_with = trouble
    try:
        assert await answered_by(upstream) == "b"
        assert (len(fakes["a"].calls), len(fakes["b"].calls)) == (1, 1)
        a, b = upstream.replicas
        assert (a.breaker.failures, b.breaker.failures) == (1, 0), "each replica counts what it did"
    finally:
        await upstream.close()


async def test_when_every_replica_is_down_the_service_fails_fast_until_the_cool_down() -> None:
    upstream, fakes = service("a", "b", retries=0, reset=30)
    for fake in fakes.values():
        fake.down = True
    try:
        for _ in range(THRESHOLD):
            with pytest.raises(UpstreamUnavailable):
                await upstream.send("GET", "/api/v1/orders")
        assert upstream.state() == "open"
        calls = sum(len(f.calls) for f in fakes.values())
        with pytest.raises(UpstreamUnavailable) as refused:
            await upstream.send("GET", "/api/v1/orders")
        assert "circuit open" in refused.value.detail
        assert refused.value.headers == {"Retry-After": "30"}
        assert sum(len(f.calls) for f in fakes.values()) == calls
    finally:
        await upstream.close()


async def test_a_half_open_replica_gets_one_trial_and_the_others_the_rest() -> None:
    clock = [0.0]
    fakes = {name: Fake(name) for name in ("a", "b")}
    replicas = [
        Replica(
            f"http://{name}:5002",
            timeout=1,
            breaker=CircuitBreaker(f"upstream-{name}", failure_threshold=1, reset_timeout=10, clock=lambda: clock[0]),
            transport=httpx.MockTransport(fake.handle),
        )
        for name, fake in fakes.items()
    ]
    upstream = Upstream("orders", replicas, retries=0, backoff=0)
    fakes["a"].down = True
    try:
        with contextlib.suppress(UpstreamUnavailable):
            await upstream.send("POST", "/api/v1/orders")
        assert replicas[0].breaker.state is BreakerState.OPEN
        fakes["a"].down = False
        hold = fakes["a"].hold = asyncio.Event()
        clock[0] = 11.0  # a's cool-down is over: one trial may go to it
        trial = asyncio.create_task(answered_by(upstream))
        while replicas[0].in_flight == 0:
            await asyncio.sleep(0)
        assert [await answered_by(upstream) for _ in range(3)] == ["b"] * 3, "one trial at a time"
        hold.set()
        assert await trial == "a"
        assert replicas[0].breaker.state is BreakerState.CLOSED
    finally:
        await upstream.close()
