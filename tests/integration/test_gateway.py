"""The gateway in-process, its upstreams replaced by httpx transports the tests control: routing,
what is passed on, tokens and roles, rate limits on both stores, timeouts, retries, circuit
breakers, the overview, CORS and the merged OpenAPI document."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import jwt
import orjson
import pytest
import redis.asyncio as redis
from starlette.routing import BaseRoute

from pizzeria.kit.auth import ALGORITHM, AUDIENCE, ISSUER
from pizzeria.kit.settings import DEVELOPMENT_JWT_SECRET, Settings
from pizzeria.registry import entry
from pizzeria.services.gateway.app import create_app
from pizzeria.services.gateway.routes import FANNED_OUT, ROUTES, UPSTREAMS
from pizzeria.services.gateway.settings import GatewaySettings
from tests.integration.gateway import REDIS_URL, Gateway, Upstream, fresh_ip, hold_rate_limit_window, problem
from tests.support.polling import eventually

# -- routing and what is passed on ---------------------------------------------------------------


async def test_each_route_reaches_its_own_upstream(gateway: Gateway) -> None:
    for route in ROUTES:
        role = sorted(route.allowed)[0] if route.allowed else "customer"
        path = route.template.replace("{id}", str(uuid.uuid4())).replace("{ingredient}", "dough")
        headers = {**gateway.token(role), **({"X-Device-Key": "a-device-key"} if route.device else {})}
        response = await gateway.client.request(
            route.method, path, headers=headers, json={} if route.method in ("POST", "PUT") else None
        )
        assert response.status_code == 200, (route, response.text)
        assert (response.json()["upstream"], response.json()["path"]) == (route.upstream, path)


async def test_the_request_is_passed_on_with_its_identity_and_trace(gateway: Gateway) -> None:
    customer = gateway.token("customer", "ann")
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    response = await gateway.client.post(
        "/api/v1/orders?dry=1&dry=2",
        content=b'{"items": []}',
        headers={
            **customer,
            "Idempotency-Key": "k-1",
            "X-Request-ID": "req-42",
            "traceparent": traceparent,
            "content-type": "application/json",
            "Cookie": "session=secret",
        },
    )
    echo = response.json()
    assert echo["query"] == "dry=1&dry=2"
    assert echo["body"] == '{"items": []}'
    sent = echo["headers"]
    assert sent["authorization"] == customer["Authorization"]
    assert (sent["idempotency-key"], sent["x-request-id"]) == ("k-1", "req-42")
    # The same trace, one hop on: the upstream's parent is the gateway's call, not the caller.
    version, trace_id, parent, flags = sent["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    assert parent != "00f067aa0ba902b7"
    assert "x-forwarded-for" in sent
    assert "cookie" not in sent  # only the headers the services need go on
    # The upstream's own headers come back, the hop's do not, and the request id is the caller's.
    assert response.headers["x-upstream"] == "orders"
    assert response.headers["x-request-id"] == "req-42"
    assert response.headers.get("connection") != "close"


async def test_unknown_paths_methods_and_dot_segments_are_refused_clearly(gateway: Gateway) -> None:
    problem(await gateway.client.get("/api/v1/nothing-here"), 404, "not-found")
    refused = await gateway.client.delete("/api/v1/orders", headers=gateway.token("admin"))
    problem(refused, 405, "method-not-allowed")
    assert refused.headers["allow"] == "GET, POST"
    problem(await gateway.client.get("/api/v1/menu/%2e%2e/users"), 404)
    problem(await gateway.client.get("/api/v1/menu/%2e%2e"), 404)  # would match /menu/{id}
    assert all(not u.calls for u in gateway.upstreams.values())


async def test_a_path_with_any_bytes_is_passed_on_as_it_came(gateway: Gateway) -> None:
    # Found by the API fuzzer: control characters in a path segment made the upstream URL invalid.
    raw = "/api/v1/menu/b%25%10%2A%C3%8B%C2%9F%13o"
    echo = (await gateway.client.get(raw)).json()
    assert gateway.upstreams["catalog"].calls[-1].url.raw_path.decode() == raw
    assert echo["upstream"] == "catalog"
    staff = gateway.token("staff")
    assert (await gateway.client.put("/api/v1/inventory/%C2%BA%C3%AD%05", json={}, headers=staff)).status_code == 200


def _in_order(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Routes in the order the app tries them, those of included routers in place."""
    for route in routes:
        included = getattr(route, "original_router", None)
        yield from _in_order(included.routes) if included is not None else (route,)


async def test_forwarding_is_tried_before_the_browsers_routes_and_none_of_them_is_an_api_path(
    gateway: Gateway,
) -> None:
    # The forwarding route is matched before the browsers' pages (cheaper per request); that
    # changes no answer as long as none of them lies under /api/ (the catch-all last answers
    # the paths nothing else took).
    paths = [getattr(route, "path", "") for route in _in_order(gateway.app.routes)]
    after = paths[paths.index("/api/v1/{path:path}") + 1 :]
    assert after[-1] == "/{path:path}"
    assert len(after) > 10, "the browsers' pages come after forwarding"
    assert not [path for path in after[:-1] if path.startswith("/api")]


# -- tokens and roles -----------------------------------------------------------------------------


async def test_public_routes_need_no_token_and_protected_ones_do(gateway: Gateway) -> None:
    assert (await gateway.client.get("/api/v1/menu")).status_code == 200
    refused = problem(await gateway.client.get("/api/v1/orders"), 401, "unauthorized")
    assert "Bearer" in refused["detail"]
    problem(await gateway.client.get("/api/v1/kitchen/tickets", headers=gateway.token("customer")), 403, "forbidden")
    problem(await gateway.client.post("/api/v1/menu", json={}, headers=gateway.token("courier")), 403)
    assert not gateway.upstreams["kitchen"].calls
    assert not gateway.upstreams["orders"].calls


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "mallory",
        "role": "admin",
        "iat": now,
        "exp": now + 600,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "jti": uuid.uuid4().hex,
        **overrides,
    }


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def bad_tokens(good: str) -> dict[str, str]:
    header, payload, signature = good.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {
        "tampered": f"{header}.{_b64({**claims, 'role': 'admin'})}.{signature}",
        "expired": jwt.encode(
            _claims(iat=int(time.time()) - 3600, exp=int(time.time()) - 600),
            DEVELOPMENT_JWT_SECRET,
            algorithm=ALGORITHM,
        ),
        "wrong algorithm": jwt.encode(_claims(), DEVELOPMENT_JWT_SECRET, algorithm="HS384"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}.",
        "other secret": jwt.encode(_claims(), "x" * 48, algorithm=ALGORITHM),
        "garbage": "not.a.token",
    }


async def test_tampered_expired_wrong_algorithm_and_unsigned_tokens_are_refused(gateway: Gateway) -> None:
    good = gateway.token("customer")["Authorization"].removeprefix("Bearer ")
    for name, token in bad_tokens(good).items():
        for method, path in (("GET", "/api/v1/orders"), ("GET", "/api/v1/menu")):
            response = await gateway.client.request(method, path, headers={"Authorization": f"Bearer {token}"})
            problem(response, 401)
            assert "invalid_token" in response.headers["www-authenticate"], name
    problem(await gateway.client.get("/api/v1/orders", headers={"Authorization": f"Basic {good}"}), 401)
    assert not gateway.upstreams["orders"].calls
    assert not gateway.upstreams["catalog"].calls


# -- rate limits -----------------------------------------------------------------------------------


@pytest.fixture(params=["in-process", "redis"])
def store(request: pytest.FixtureRequest, gateway_env: dict[str, str]) -> str:
    # An hour-long window, held for the test (`hold_rate_limit_window`): the count never resets midway.
    gateway_env.update({"RATE_LIMIT_WINDOW_S": "3600", "RATE_LIMIT_PER_IP": "5", "RATE_LIMIT_PER_USER": "2"})
    if request.param == "redis":  # keys of this test only: counts never carry over from another run
        gateway_env.update({"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": f"pz-test-{uuid.uuid4().hex}"})
    return str(request.param)


async def test_rate_limit_per_ip_answers_429_with_retry_after(store: str, gateway: Gateway) -> None:
    answers = [(await gateway.client.get("/api/v1/menu")).status_code for _ in range(7)]
    assert answers == [200] * 5 + [429] * 2
    refused = await gateway.client.get("/api/v1/menu")
    body = problem(refused, 429, "too-many-requests")
    assert "ip" in body["detail"]
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    assert len(gateway.upstreams["catalog"].calls) == 5
    # Another address has its own allowance.
    other = httpx.ASGITransport(app=gateway.client._transport.app, client=(fresh_ip(), 40001))  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=other, base_url="http://gateway") as elsewhere:
        assert (await elsewhere.get("/api/v1/menu")).status_code == 200


async def test_rate_limit_per_user_follows_the_user_not_the_address(store: str, gateway: Gateway) -> None:
    ann, bob = gateway.token("customer"), gateway.token("customer")
    answers = [(await gateway.client.get("/api/v1/orders", headers=ann)).status_code for _ in range(3)]
    assert answers == [200, 200, 429]
    assert "user" in problem(await gateway.client.get("/api/v1/orders", headers=ann), 429)["detail"]
    assert (await gateway.client.get("/api/v1/orders", headers=bob)).status_code == 200


async def test_the_address_is_counted_first_and_a_refused_caller_not_against_their_own_limit(
    store: str, gateway: Gateway
) -> None:
    """Both limits are one hit on the limiter, counted as they were one by one: a request the
    caller may not make (403) counts against the address, not the caller; a request over the
    address's limit is 429 whatever else is wrong with it (a bad token)."""
    ann = gateway.token("customer")
    assert [(await gateway.client.get("/api/v1/users", headers=ann)).status_code for _ in range(3)] == [403] * 3
    assert [(await gateway.client.get("/api/v1/orders", headers=ann)).status_code for _ in range(2)] == [200] * 2
    bad = await gateway.client.get("/api/v1/orders", headers={"Authorization": "Bearer not-a-token"})
    assert "ip" in problem(bad, 429)["detail"]
    assert not gateway.upstreams["identity"].calls


async def test_redis_rate_limits_are_shared_by_every_gateway_process(
    gateway_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hold_rate_limit_window(monkeypatch)
    prefix = f"pz-test-{uuid.uuid4().hex}"
    settings = Settings(REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=prefix)  # type: ignore[call-arg]
    own = GatewaySettings(RATE_LIMIT_PER_IP="4", RATE_LIMIT_WINDOW_S="3600")  # type: ignore[call-arg]
    ip = fresh_ip()
    statuses = []
    for _ in range(2):  # two gateways, as two processes would be
        app = create_app(settings, own, transports={n: httpx.MockTransport(Upstream(n).handle) for n in UPSTREAMS})
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, client=(ip, 1)), base_url="http://gateway"
            ) as client,
        ):
            statuses += [(await client.get("/api/v1/menu")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200, 200, 429, 429]
    client_ = redis.Redis.from_url(REDIS_URL)
    try:
        [key] = [k async for k in client_.scan_iter(match=f"{prefix}:ratelimit:ip:{ip}:*")]
        assert 0 < await client_.ttl(key) <= 3601
    finally:
        await client_.aclose()


# -- deadlines, retries, breakers ---------------------------------------------------------------------


async def test_reads_are_retried_writes_never(gateway: Gateway) -> None:
    orders = gateway.upstreams["orders"]
    customer = gateway.token("customer")
    orders.failures = [httpx.ConnectError("blip")]
    assert (await gateway.client.get("/api/v1/orders", headers=customer)).status_code == 200
    assert len(orders.calls) == 2
    orders.calls.clear()
    orders.failures = [httpx.ReadError("connection reset")]
    problem(await gateway.client.post("/api/v1/orders", json={}, headers=customer), 503, "upstream-unavailable")
    assert len(orders.calls) == 1, "a POST is never sent twice by the gateway"


async def test_an_upstream_that_does_not_answer_in_time_is_a_503(gateway: Gateway) -> None:
    gateway.upstreams["kitchen"].failures = [httpx.ReadTimeout("slow")] * 2
    body = problem(await gateway.client.get("/api/v1/inventory", headers=gateway.token("staff")), 503)
    assert "did not answer in time" in body["detail"]


async def test_an_upstream_5xx_is_passed_on_as_its_answer(gateway: Gateway) -> None:
    # A 500 is the service's own answer about this request: passed on, neither retried nor
    # counted against its breaker.
    catalog = gateway.upstreams["catalog"]
    catalog.failures = [500] * 5
    for _ in range(5):
        assert (await gateway.client.get("/api/v1/menu")).status_code == 500
    assert len(catalog.calls) == 5
    assert (await gateway.health())["upstreams"]["catalog"]["breaker"] == "closed"


async def test_breaker_opens_fails_fast_shows_in_health_and_closes_when_the_upstream_is_back(
    gateway: Gateway,
) -> None:
    payments = gateway.upstreams["payments"]
    admin = gateway.token("admin")
    payments.down = True
    for _ in range(3):  # 3 reads (of 2 attempts each, one failure each) open it
        problem(await gateway.client.get("/api/v1/payments", headers=admin), 503)
    health = await gateway.health()
    assert health["upstreams"]["payments"]["breaker"] == "open"
    assert health["upstreams"]["orders"]["breaker"] == "closed"
    calls = len(payments.calls)
    fast = problem(await gateway.client.get("/api/v1/payments", headers=admin), 503, "upstream-unavailable")
    assert "circuit open" in fast["detail"]
    assert len(payments.calls) == calls, "while open, the upstream is not called at all"
    payments.down = False

    async def half_open() -> bool:
        return bool((await gateway.health())["upstreams"]["payments"]["breaker"] == "half-open")

    await eventually(half_open, "the breaker never half-opened", 10, every=0)
    assert (await gateway.client.get("/api/v1/payments", headers=admin)).status_code == 200
    assert (await gateway.health())["upstreams"]["payments"]["breaker"] == "closed"


# -- the overview -------------------------------------------------------------------------------------


def _listing(name: str) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        if name == "identity":
            return httpx.Response(200, json={"id": "u1", "email": "a@example.com"})
        return httpx.Response(200, json={"items": [{"from": name, "auth": request.headers.get("authorization")}]})

    return answer


async def test_overview_gathers_every_part_with_the_callers_token(gateway: Gateway) -> None:
    for name in ("identity", "orders", "payments", "notifications"):
        gateway.upstreams[name].answer = _listing(name)
    me = gateway.token("customer")
    overview = (await gateway.client.get("/api/v1/me/overview", headers=me)).json()
    assert overview["missing"] == []
    assert overview["user"]["id"] == "u1"
    for part in ("orders", "payments", "notifications"):
        assert overview[part] == [{"from": part, "auth": me["Authorization"]}]
    problem(await gateway.client.get("/api/v1/me/overview"), 401)


async def test_overview_answers_with_what_it_has_when_a_service_is_down(gateway: Gateway) -> None:
    for name in ("identity", "orders", "payments", "notifications"):
        gateway.upstreams[name].answer = _listing(name)
    gateway.upstreams["notifications"].down = True
    gateway.upstreams["payments"].failures = [httpx.ReadTimeout("slow")] * 2
    response = await gateway.client.get("/api/v1/me/overview", headers=gateway.token("customer"))
    assert response.status_code == 200
    overview = response.json()
    assert sorted(overview["missing"]) == ["notifications", "payments"]
    assert (overview["notifications"], overview["payments"]) == (None, None)
    assert overview["orders"] == [{"from": "orders", "auth": response.request.headers["authorization"]}]


# -- streams and operations ---------------------------------------------------------------------------


async def test_a_stream_is_relayed_as_it_comes_and_errors_whole(gateway: Gateway) -> None:
    orders = gateway.upstreams["orders"]
    events = b'retry: 2000\n\nevent: order\ndata: {"status": "paid"}\n\nevent: end\ndata: {}\n\n'
    orders.answer = lambda request: httpx.Response(200, content=events, headers={"content-type": "text/event-stream"})
    me = gateway.token("customer")
    streamed = await gateway.client.get(f"/api/v1/orders/{uuid.uuid4()}/stream", headers=me)
    assert streamed.status_code == 200
    assert streamed.headers["content-type"] == "text/event-stream"
    assert streamed.content == events
    orders.answer = lambda request: httpx.Response(
        404, json={"detail": "no such order"}, headers={"content-type": "application/problem+json"}
    )
    missing = await gateway.client.get(f"/api/v1/orders/{uuid.uuid4()}/stream", headers=me)
    assert (missing.status_code, missing.json()) == (404, {"detail": "no such order"})
    problem(await gateway.client.get(f"/api/v1/orders/{uuid.uuid4()}/stream", headers=gateway.token("courier")), 403)


def _dead_letters(service: str, *ids: str) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/ops/dlq":
            return httpx.Response(
                200,
                json={
                    "items": [
                        {"id": i, "service": service, "created_at": f"2026-11-22T{len(service):02d}:00:0{n}Z"}
                        for n, i in enumerate(ids)
                    ]
                },
            )
        if path.startswith("/api/v1/ops/dlq/"):
            dl_id = path.split("/")[5]
            if dl_id not in ids:
                return httpx.Response(404, json={"detail": "not here"})
            return httpx.Response(
                202 if path.endswith("/replay") else 200,
                json={"id": dl_id, "service": service, "method": request.method},
            )
        if path == "/api/v1/ops/outbox":
            return httpx.Response(200, json={"service": service, "backlog": 0, "oldest_age_s": 0.0})
        return httpx.Response(404)

    return answer


async def test_operations_ask_every_service_and_merge_the_answers(gateway: Gateway) -> None:
    for name, upstream in gateway.upstreams.items():
        upstream.answer = _dead_letters(name, *((f"{name}-1", f"{name}-2") if name in ("orders", "kitchen") else ()))
    gateway.upstreams["delivery"].down = True
    admin = gateway.token("admin")
    listing = (await gateway.client.get("/api/v1/ops/dlq", headers=admin)).json()
    assert listing["missing"] == ["delivery"]
    assert [d["id"] for d in listing["items"]] == ["kitchen-2", "kitchen-1", "orders-2", "orders-1"]  # newest first
    replayed = await gateway.client.post("/api/v1/ops/dlq/orders-2/replay", headers=admin)
    assert (replayed.status_code, replayed.json()) == (202, {"id": "orders-2", "service": "orders", "method": "POST"})
    assert [c.method for c in gateway.upstreams["kitchen"].calls].count("POST") == 0, "only the owner is told"
    problem(await gateway.client.post("/api/v1/ops/dlq/nowhere/discard", headers=admin), 404)
    outbox = (await gateway.client.get("/api/v1/ops/outbox", headers=admin)).json()
    assert outbox["missing"] == ["delivery"]
    assert sorted(outbox["services"]) == sorted(set(UPSTREAMS) - {"delivery"})
    problem(await gateway.client.get("/api/v1/ops/outbox", headers=gateway.token("staff")), 403)
    problem(await gateway.client.get("/api/v1/ops/dlq"), 401)


async def test_a_dead_letter_comes_back_with_the_content_type_its_service_gave(gateway: Gateway) -> None:
    for name, upstream in gateway.upstreams.items():
        upstream.answer = _dead_letters(name)
    gateway.upstreams["orders"].answer = lambda request: httpx.Response(
        200, content=b'{"id": "orders-1"}', headers={"Content-Type": "application/vnd.pizzeria.dead-letter+json"}
    )
    found = await gateway.client.get("/api/v1/ops/dlq/orders-1", headers=gateway.token("admin"))
    assert found.status_code == 200
    assert found.headers["content-type"] == "application/vnd.pizzeria.dead-letter+json"


@pytest.mark.parametrize("dl_id", ["%2E%2E", ".%2e", "%2e"])
async def test_a_dead_letter_id_that_is_a_dot_segment_is_refused_not_sent(gateway: Gateway, dl_id: str) -> None:
    # The id goes into the path sent on: ".." there would make it another path (the listing's).
    for name, upstream in gateway.upstreams.items():
        upstream.answer = _dead_letters(name, f"{name}-1")
    admin = gateway.token("admin")
    problem(await gateway.client.get(f"/api/v1/ops/dlq/{dl_id}", headers=admin), 400)
    problem(await gateway.client.post(f"/api/v1/ops/dlq/{dl_id}/replay", headers=admin), 400)
    assert not [call for upstream in gateway.upstreams.values() for call in upstream.calls]


# -- CORS and the API document ------------------------------------------------------------------------


async def test_cors_lets_configured_origins_in_only(gateway: Gateway) -> None:
    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,idempotency-key"}
    allowed = await gateway.client.options("/api/v1/orders", headers={"Origin": "http://localhost:8000", **asked})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:8000"
    assert "idempotency-key" in allowed.headers["access-control-allow-headers"].lower()
    stranger = await gateway.client.options("/api/v1/orders", headers={"Origin": "https://evil.example", **asked})
    assert "access-control-allow-origin" not in stranger.headers
    simple = await gateway.client.get("/api/v1/menu", headers={"Origin": "http://localhost:8000"})
    assert simple.headers["access-control-allow-origin"] == "http://localhost:8000"
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()


def _real_documents() -> dict[str, dict[str, Any]]:
    settings = Settings()
    return {name: entry(name).load().create_app(settings).openapi() for name in UPSTREAMS}


async def test_a_devices_call_needs_a_key_at_the_gateway_which_the_device_service_checks(gateway: Gateway) -> None:
    devices = gateway.upstreams["devices"]
    path = f"/api/v1/devices/{uuid.uuid4()}/reports"
    for headers in ({}, {"X-Device-Key": " "}):
        refused = problem(await gateway.client.post(path, json={}, headers=headers), 401, "invalid-device-key")
        assert "X-Device-Key" in refused["detail"]
    assert devices.calls == [], "a call without a key costs the upstream nothing"
    passed = await gateway.client.post(path, json={}, headers={"X-Device-Key": "key-1"})
    assert passed.json()["headers"]["x-device-key"] == "key-1"
    assert len(devices.calls) == 1


async def test_one_openapi_document_covers_every_public_route(gateway: Gateway) -> None:
    documents = _real_documents()
    for name, upstream in gateway.upstreams.items():
        upstream.answer = lambda request, doc=documents[name]: httpx.Response(200, json=doc)  # type: ignore[misc]
    doc = (await gateway.client.get("/openapi.json")).json()
    assert "x-missing-upstreams" not in doc["info"]
    operations = {
        (method.upper(), _shape(path)): op for path, ops in doc["paths"].items() for method, op in ops.items()
    }
    for route in (*ROUTES, *FANNED_OUT):
        op = operations.get((route.method, _shape(route.template)))
        assert op is not None, f"{route.method} {route.template} is missing from the document"
        assert ("security" in op) is (route.allowed is not None or route.device), route
        if route.device:
            assert op["security"] == [{"deviceKey": []}], route
    assert ("GET", "/api/v1/me/overview") in operations
    assert not [p for p in doc["paths"] if not p.startswith("/api/v1/")], "only the public API is documented"
    # Every reference resolves, including renamed ones.
    text = orjson.dumps(doc).decode()
    schemas = doc["components"]["schemas"]
    for ref in {part.split('"')[0] for part in text.split('"$ref":"#/components/schemas/')[1:]}:
        assert ref in schemas, ref
    # Every service's schema is in the merged document, under its name or (two services using one
    # name for different things) prefixed with the service's.
    for name, document in documents.items():
        for schema in document.get("components", {}).get("schemas", {}):
            assert schema in schemas or f"{name.capitalize()}{schema}" in schemas, (name, schema)
    docs = await gateway.client.get("/docs")
    assert docs.status_code == 200
    assert "/openapi.json" in docs.text
    assert "cdn" not in docs.text.lower(), "the UI is served from here, not a CDN"
    for asset in ("/static/swagger-ui/swagger-ui-bundle.js", "/static/swagger-ui/swagger-ui.css"):
        assert asset in docs.text
        assert (await gateway.client.get(asset)).status_code == 200


async def test_the_document_is_served_even_when_an_upstream_is_down(gateway: Gateway) -> None:
    documents = _real_documents()
    for name, upstream in gateway.upstreams.items():
        upstream.answer = lambda request, doc=documents[name]: httpx.Response(200, json=doc)  # type: ignore[misc]
    gateway.upstreams["kitchen"].down = True
    doc = (await gateway.client.get("/openapi.json")).json()
    assert doc["info"]["x-missing-upstreams"] == ["kitchen"]
    assert "/api/v1/menu" in doc["paths"]
    assert "/api/v1/inventory" not in doc["paths"]


def _shape(template: str) -> str:
    import re

    return re.sub(r"\{[^/]+\}", "{}", template)
