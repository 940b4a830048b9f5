"""`status.probe`: how a replica's `/ready` answered, or how it failed to, in words an operator
can act on; the gateway's own full pool is not the replica's fault."""

from __future__ import annotations

import httpx
import pytest

from pizzeria.kit.resilience import CircuitBreaker
from pizzeria.services.gateway.status import PROBE_TIMEOUT_S, probe
from pizzeria.services.gateway.upstream import Replica


def replica(answer: httpx.MockTransport) -> Replica:
    breaker = CircuitBreaker("upstream-test", failure_threshold=5, reset_timeout=60)
    return Replica("http://test", timeout=1, breaker=breaker, transport=answer)


@pytest.mark.parametrize(
    ("fault", "detail"),
    [
        (httpx.ConnectError("refused"), "cannot be reached"),
        (httpx.ReadTimeout("slow"), f"no answer within {PROBE_TIMEOUT_S} s"),
        (httpx.PoolTimeout("no connection free"), "not asked: the gateway's connections to it are all in use"),
    ],
    ids=["refused", "silent", "gateway-pool-full"],
)
async def test_a_replica_that_was_not_heard_says_why(fault: Exception, detail: str) -> None:
    def answer(_: httpx.Request) -> httpx.Response:
        raise fault

    found = await probe("kitchen", replica(httpx.MockTransport(answer)))
    assert (found.state, found.detail, found.lag) == ("down", detail, None)


async def test_a_replica_not_ready_names_its_failing_checks() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metrics":
            return httpx.Response(200, text='pizzeria_consumer_lag_messages{group="kitchen"} 3.0\n')
        checks = {"database": "ok", "kafka": "unreachable"}
        return httpx.Response(503, json={"checks": checks}, headers={"Content-Type": "application/problem+json"})

    found = await probe("kitchen", replica(httpx.MockTransport(answer)))
    assert (found.state, found.detail, found.lag) == ("not-ready", "kafka: unreachable", {"kitchen": 3.0})


@pytest.mark.parametrize(
    "body", [b"{not json", b"[1, 2]", b'{"checks": "all bad"}'], ids=["broken", "a-list", "checks-not-an-object"]
)
async def test_a_replica_whose_readiness_answer_is_not_ours_is_not_ready_by_its_status(body: bytes) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metrics":
            return httpx.Response(200, text="")
        return httpx.Response(503, content=body, headers={"Content-Type": "application/json"})

    found = await probe("kitchen", replica(httpx.MockTransport(answer)))
    assert (found.state, found.detail) == ("not-ready", "/ready answered 503")
