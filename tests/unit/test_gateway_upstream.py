"""The gateway's call to one upstream: whatever each attempt meets, one logical request counts
once against the breaker, and only for what says the upstream is in trouble (no connection, no
answer in time, 502/503/504); a request the client cannot write counts nothing and is a 400; an
upstream that sheds load (503 marked `X-Load-Shed`) is alive, and is neither asked again nor
counted as failing; no free connection in the gateway's own pool is the gateway's 503."""

from __future__ import annotations

import contextlib

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pizzeria.kit.errors import BadRequest
from pizzeria.kit.resilience import BreakerState, CircuitBreaker
from pizzeria.services.gateway.upstream import GatewayBusy, Replica, Upstream, UpstreamUnavailable, outgoing

FAULTS = {
    "connect": httpx.ConnectError("refused"),
    "read": httpx.ReadError("reset"),
    "timeout": httpx.ReadTimeout("slow"),
    "remote": httpx.RemoteProtocolError("garbled"),
}
TROUBLE = {502, 503, 504}
OUTCOMES = st.sampled_from([*FAULTS, "local", "pool", "shed", 200, 201, 404, 409, 422, 500, 501, 502, 503, 504])
#: Outcomes that decide a request at once and do not count as the upstream failing.
NOT_COUNTED = ("local", "pool", "shed")
RETRIES = 2


def build(plan: list[str | int], threshold: int = 1000) -> tuple[Upstream, list[httpx.Request]]:
    calls: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        outcome = plan.pop(0)
        if outcome == "local":
            raise httpx.LocalProtocolError("illegal header value")
        if outcome == "pool":
            raise httpx.PoolTimeout("no connection free")
        if outcome == "shed":
            return httpx.Response(503, headers={"x-load-shed": "password-hashing"}, json={"n": len(calls)})
        if isinstance(outcome, str):
            raise FAULTS[outcome]
        return httpx.Response(outcome, json={"n": len(calls)})

    breaker = CircuitBreaker("upstream-test", failure_threshold=threshold, reset_timeout=60)
    replica = Replica("http://test", timeout=1, breaker=breaker, transport=httpx.MockTransport(answer))
    return Upstream("test", [replica], retries=RETRIES, backoff=0), calls


def expected(method: str, attempts: list[str | int]) -> tuple[int, str | int]:
    """How many attempts one request makes, and the outcome that decides it."""
    allowed = 1 + (RETRIES if method == "GET" else 0)
    for used, outcome in enumerate(attempts[:allowed], start=1):
        if outcome in NOT_COUNTED or (isinstance(outcome, int) and outcome not in TROUBLE):
            return used, outcome
    return allowed, attempts[allowed - 1]


@settings(max_examples=300, deadline=None)
@given(
    requests=st.lists(
        st.tuples(st.sampled_from(["GET", "POST"]), st.lists(OUTCOMES, min_size=3, max_size=3)), max_size=8
    )
)
async def test_one_request_counts_once_and_only_upstream_trouble_counts(
    requests: list[tuple[str, list[str | int]]],
) -> None:
    plan = [outcome for method, attempts in requests for outcome in attempts[: expected(method, attempts)[0]]]
    upstream, calls = build(list(plan))
    failures = 0
    try:
        for method, attempts in requests:
            used, decisive = expected(method, attempts)
            before = len(calls)
            try:
                answer = await upstream.send(method, "/thing")
            except BadRequest:
                assert decisive == "local"
            except GatewayBusy:
                assert decisive == "pool"
            except UpstreamUnavailable:
                assert decisive in FAULTS
            else:
                assert answer.status == (503 if decisive == "shed" else decisive)
            assert len(calls) - before == used
            if decisive in FAULTS or decisive in TROUBLE:
                failures += 1
            elif decisive not in ("local", "pool"):
                failures = 0  # an answer, a shed one too: the upstream is alive
            assert upstream.replicas[0].breaker.failures == failures
    finally:
        await upstream.close()


@pytest.mark.parametrize("fault", ["connect", "timeout", 503])
async def test_the_breaker_opens_after_as_many_failed_requests_as_its_threshold_not_attempts(
    fault: str | int,
) -> None:
    upstream, calls = build([fault] * 9, threshold=3)
    try:
        for n in range(3):
            assert upstream.replicas[0].breaker.state is BreakerState.CLOSED, f"open after {n} requests"
            with contextlib.suppress(UpstreamUnavailable):
                await upstream.send("GET", "/thing")
        assert upstream.replicas[0].breaker.state is BreakerState.OPEN
        assert len(calls) == 9
    finally:
        await upstream.close()


async def test_a_request_that_cannot_be_built_never_reaches_the_breaker() -> None:
    upstream, calls = build([])
    try:
        for _ in range(10):
            with pytest.raises(BadRequest):
                await upstream.send("GET", "/thing", headers={"accept": "caf\u00e9"})
        assert upstream.replicas[0].breaker.failures == 0
        assert not calls
    finally:
        await upstream.close()


@pytest.mark.parametrize("outcome", ["shed", "pool"])
async def test_shed_load_and_a_busy_pool_never_open_the_breaker(outcome: str) -> None:
    upstream, calls = build([outcome] * 20, threshold=2)
    try:
        for _ in range(10):
            with contextlib.suppress(GatewayBusy):
                await upstream.send("GET", "/thing")
        assert upstream.replicas[0].breaker.state is BreakerState.CLOSED
        assert upstream.replicas[0].breaker.failures == 0
        assert len(calls) == 10, "asked once each: neither is worth asking again at once"
    finally:
        await upstream.close()


async def test_an_answers_header_names_come_in_lower_case_without_the_hop_by_hop_ones() -> None:
    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers=[("Content-Type", "text/plain"), ("X-Many", "1"), ("x-MANY", "2"), ("Connection", "close")]
        )

    breaker = CircuitBreaker("upstream-test", failure_threshold=5, reset_timeout=60)
    upstream = Upstream(
        "test", [Replica("http://test", timeout=1, breaker=breaker, transport=httpx.MockTransport(answer))], retries=0
    )
    try:
        forwarded = await upstream.send("GET", "/thing")
    finally:
        await upstream.close()
    assert forwarded.headers == [("content-type", "text/plain"), ("x-many", "1"), ("x-many", "2")]


@pytest.mark.parametrize(
    ("path", "params", "target"),
    [
        ("/api/v1/menu", None, "/api/v1/menu"),
        ("/api/v1/menu/b%25%10%2A%C3%8B", None, "/api/v1/menu/b%25%10%2A%C3%8B"),  # escapes kept as they came
        ("/api/v1/menu/a b#c?d", None, "/api/v1/menu/a%20b%23c%3Fd"),  # what may not stand in a path, escaped
        ("/api/v1/menu/caf\u00e9%zz", None, "/api/v1/menu/caf%C3%A9%25zz"),
        ("/api/v1/orders", [("dry", "1"), ("dry", "2")], "/api/v1/orders?dry=1&dry=2"),
        ("/api/v1/orders", [("q", "a b/c&d=é")], "/api/v1/orders?q=a%20b%2Fc%26d%3D%C3%A9"),
        ("/api/v1/menu/.../..a/.b./%2E%2E%2E", None, "/api/v1/menu/.../..a/.b./%2E%2E%2E"),  # dots, no dot segment
    ],
)
def test_the_path_goes_on_as_it_came_and_the_query_encoded(
    path: str, params: list[tuple[str, str]] | None, target: str
) -> None:
    assert outgoing("GET", path, params, {}).target == target


@pytest.mark.parametrize("path", ["//elsewhere/api", "http://elsewhere/api", "api/v1/menu", ""])
def test_a_path_that_could_leave_the_upstream_is_refused(path: str) -> None:
    with pytest.raises(BadRequest):
        outgoing("GET", path, None, {})


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/ops/dlq/../replay",
        "/api/v1/ops/dlq/..",
        "/api/v1/./menu",
        "/api/v1/menu/.",
        "/api/v1/ops/dlq/%2E%2E/replay",
        "/api/v1/ops/dlq/.%2e",
        "/api/v1/%2e/menu",
    ],
)
def test_a_path_with_a_dot_segment_is_refused(path: str) -> None:
    # Whether the segment before goes with it is the receiver's choice: never left to it.
    with pytest.raises(BadRequest):
        outgoing("POST", path, None, {})


@pytest.mark.parametrize(
    "headers",
    [{"accept": "caf\u00e9"}, {"x-note": "a\r\nInjected: yes"}, {"x-note": "a\x00"}, {"bad name": "v"}, {"": "v"}],
)
def test_a_header_that_cannot_be_sent_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        outgoing("POST", "/api/v1/orders", None, headers)
