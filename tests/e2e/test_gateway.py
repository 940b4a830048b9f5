"""The edge of the running system: every endpoint for every role, through the gateway and
straight at the service that owns it (services do not trust the network); customers never see
each other's things; a killed upstream opens its breaker and a hung one leaves the overview
partial. The demo accounts sign in through the gateway as a user would."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sqlite3
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from pizzeria.contracts.notifications import told
from pizzeria.kit.settings import Settings
from pizzeria.messaging.broker import OutgoingMessage
from pizzeria.messaging.connect import broker_from_settings
from pizzeria.services.gateway.routes import EVERY_SERVICE, FANNED_OUT, ROUTES, Route
from tests.e2e.conftest import start_system
from tests.e2e.scenario import MANY_ORDERS, wait_for_menu_sync
from tests.e2e.system import Shop, System
from tests.support.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

DEMO = {
    "customer": ("alice@pizzeria.example", "alice-pizza-1"),
    "other customer": ("bob@pizzeria.example", "bob-pizza-12"),
    "staff": ("chef@pizzeria.example", "chef-pizza-1"),
    "courier": ("rider@pizzeria.example", "rider-pizza-1"),
    "admin": ("admin@pizzeria.example", "admin-pizza-1"),
}
CALLERS = ("anonymous", "customer", "staff", "courier", "admin")
SERVICES_WITH_DATA = (
    "identity",
    "catalog",
    "orders",
    "payments",
    "notifications",
    "kitchen",
    "delivery",
    "devices",
    "telemetry",
    "audit",
)
ENV = {
    "GATEWAY_BREAKER_FAILURES": "3",
    "GATEWAY_BREAKER_RESET_S": "1",
    "GATEWAY_READ_RETRIES": "2",
    "GATEWAY_UPSTREAM_TIMEOUT_S": "1",
    "RATE_LIMIT_PER_IP": "1000000",
    "RATE_LIMIT_PER_USER": "1000000",
    # The analytics test places ten orders at once as one customer, more than may wait for payment.
    **MANY_ORDERS,
}


class Edge:
    """A client of the running system as its users see it."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.http = httpx.AsyncClient(base_url=system.url("gateway"), timeout=30)
        self.tokens: dict[str, dict[str, str]] = {}
        self.user_ids: dict[str, str] = {}

    async def sign_in(self) -> None:
        for who, (email, password) in DEMO.items():
            response = await self.http.post("/api/v1/auth/login", json={"email": email, "password": password})
            assert response.status_code == 200, response.text
            self.tokens[who] = {"Authorization": f"Bearer {response.json()['access_token']}"}
            self.user_ids[who] = (await self.http.get("/api/v1/users/me", headers=self.tokens[who])).json()["id"]

    def auth(self, who: str) -> dict[str, str]:
        return self.tokens.get(who, {})

    async def breaker(self, upstream: str) -> str:
        state: str = (await self.http.get("/health")).json()["upstreams"][upstream]["breaker"]
        return state


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def edge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    system = await start_system(Path(tmp_path_factory.mktemp("edge")), ENV)
    edge = Edge(system)
    shop = Shop(system)
    try:
        await wait_for_menu_sync(shop, await shop.menu())
        await edge.sign_in()
        yield edge
    finally:
        await shop.close()
        await edge.http.aclose()
        system.stop()


# -- who may call what ----------------------------------------------------------------------------


def expected(route: Route, caller: str) -> str:
    if route.device:
        return "401"  # no caller here sends a device's key
    if route.allowed is None:
        return "through"
    if caller == "anonymous":
        return "401"
    return "through" if caller in route.allowed else "403"


def verdict(response: httpx.Response) -> str:
    assert response.status_code < 500, f"{response.request.method} {response.request.url}: {response.text}"
    return str(response.status_code) if response.status_code in (401, 403) else "through"


def concrete(route: Route) -> str:
    return route.template.replace("{id}", str(uuid.uuid4())).replace("{ingredient}", "no-such-ingredient")


async def test_every_endpoint_for_every_role_through_the_gateway_and_at_the_service(edge: Edge) -> None:
    wrong: list[str] = []
    direct = httpx.AsyncClient(timeout=30)
    try:
        for route in (*ROUTES, *FANNED_OUT):
            if route.stream:
                continue  # a stream stays open: the live-status test covers it
            path = concrete(route)
            body = {} if route.method in ("POST", "PUT") else None
            services = SERVICES_WITH_DATA if route.upstream == EVERY_SERVICE else (route.upstream,)
            for caller in CALLERS:
                want = expected(route, caller)
                answers = [
                    ("gateway", await edge.http.request(route.method, path, json=body, headers=edge.auth(caller)))
                ]
                for service in services:
                    answers.append(
                        (
                            service,
                            await direct.request(
                                route.method, edge.system.url(service) + path, json=body, headers=edge.auth(caller)
                            ),
                        )
                    )
                for where, response in answers:
                    if verdict(response) != want:
                        wrong.append(
                            f"{route.method} {route.template} as {caller} at {where}: "
                            f"{response.status_code}, expected {want}"
                        )
    finally:
        await direct.aclose()
    assert not wrong, "\n".join(wrong)
    for caller in CALLERS:
        overview = await edge.http.get("/api/v1/me/overview", headers=edge.auth(caller))
        assert overview.status_code == (401 if caller == "anonymous" else 200), overview.text


# -- ownership ------------------------------------------------------------------------------------------


async def place(edge: Edge, who: str) -> dict[str, Any]:
    menu = (await edge.http.get("/api/v1/menu")).json()["items"]
    body = {
        "items": [{"menu_item_id": menu[0]["id"], "size": "medium", "quantity": 1}],
        "delivery_address": "1 Main St",
        "payment": {"token": "tok_visa"},
        "contact": {"email": "alice@pizzeria.example"},
    }
    response = await edge.http.post(
        "/api/v1/orders", json=body, headers={**edge.auth(who), "Idempotency-Key": str(uuid.uuid4())}
    )
    assert response.status_code == 202, response.text
    order: dict[str, Any] = response.json()
    return order


async def test_a_customer_never_sees_or_cancels_another_customers_things(edge: Edge) -> None:
    alice, bob = edge.auth("customer"), edge.auth("other customer")
    order = await place(edge, "customer")
    order_id = order["id"]

    async def payment() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (
            await edge.http.get("/api/v1/payments", params={"order_id": order_id}, headers=alice)
        ).json()["items"]
        return items

    async def notified() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (
            await edge.http.get("/api/v1/notifications", params={"order_id": order_id}, headers=alice)
        ).json()["items"]
        return items

    [paid] = await eventually(payment, "alice's payment", 60, every=0.2)
    await eventually(notified, "alice's notifications", 60, every=0.2)
    assert (await edge.http.get(f"/api/v1/orders/{order_id}", headers=alice)).status_code == 200

    for base in (str(edge.http.base_url), None):  # through the gateway, then straight at each service

        def url(service: str, path: str, base: str | None = base) -> str:
            return (base.rstrip("/") if base else edge.system.url(service)) + path

        async with httpx.AsyncClient(timeout=30, headers=bob) as as_bob:
            assert (await as_bob.get(url("orders", f"/api/v1/orders/{order_id}"))).status_code == 404
            assert (await as_bob.post(url("orders", f"/api/v1/orders/{order_id}/cancel"))).status_code == 404
            listed = (
                await as_bob.get(
                    url("orders", "/api/v1/orders"), params={"customer_id": edge.user_ids["customer"], "limit": 100}
                )
            ).json()
            assert order_id not in {o["id"] for o in listed["items"]}
            assert (await as_bob.get(url("payments", f"/api/v1/payments/{paid['id']}"))).status_code == 404
            by_order = await as_bob.get(url("payments", "/api/v1/payments"), params={"order_id": order_id})
            assert by_order.json()["items"] == []
            mine = await as_bob.get(url("payments", "/api/v1/payments"), params={"limit": 100})
            assert paid["id"] not in {p["id"] for p in mine.json()["items"]}
            notes = await as_bob.get(
                url("notifications", "/api/v1/notifications"),
                params={"order_id": order_id, "customer_id": edge.user_ids["customer"]},
            )
            assert notes.json()["items"] == []
    overview = (await edge.http.get("/api/v1/me/overview", headers=bob)).json()
    assert order_id not in {o["id"] for o in overview["orders"] or []}
    assert paid["id"] not in {p["id"] for p in overview["payments"] or []}
    assert overview["user"]["id"] == edge.user_ids["other customer"]
    mine = (await edge.http.get("/api/v1/me/overview", headers=alice)).json()
    assert order_id in {o["id"] for o in mine["orders"]}
    # The order is untouched by bob's attempts.
    assert (await edge.http.get(f"/api/v1/orders/{order_id}", headers=alice)).json()["cancel_requested"] is False


# -- live order status ------------------------------------------------------------------------------


async def read_events(response: httpx.Response) -> list[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream, until it ends."""
    events: list[tuple[str, str]] = []
    kind, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data = line.removeprefix("data:").strip()
        elif line == "" and data:
            events.append((kind, data))
            kind, data = "message", ""
    return events


async def test_an_order_streams_its_status_live_until_it_ends(edge: Edge) -> None:
    alice = edge.auth("customer")
    order = await place(edge, "customer")
    assert (
        await edge.http.get(f"/api/v1/orders/{order['id']}/stream", headers=edge.auth("other customer"))
    ).status_code == 404
    async with edge.http.stream(
        "GET", f"/api/v1/orders/{order['id']}/stream", headers=alice, timeout=httpx.Timeout(10, read=120)
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = await read_events(stream)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end"
    assert set(kinds[:-1]) == {"order"}
    seen = [orjson.loads(data) for kind, data in events if kind == "order"]
    # Each event is the whole order; together they walk its history, ending where it ended.
    assert [o["id"] for o in seen] == [order["id"]] * len(seen)
    final = seen[-1]
    assert final["status"] == "delivered"
    statuses = [s for n, s in enumerate(o["status"] for o in seen) if n == 0 or s != seen[n - 1]["status"]]
    path = iter(h["status"] for h in final["history"])
    assert all(status in path for status in statuses), f"events {statuses} out of the history's order"
    assert statuses[0] in ("pending", "paid")
    assert len(statuses) >= 2


# -- operations ------------------------------------------------------------------------------------------


async def test_dead_letters_of_every_service_listed_replayed_and_discarded_through_the_gateway(edge: Edge) -> None:
    admin = edge.auth("admin")
    settings = Settings(PIZZERIA_VAR_DIR=str(edge.system.workdir / "var"))  # type: ignore[call-arg]

    async def dead_lettered() -> float:
        counted = 0.0
        for service in SERVICES_WITH_DATA:
            exposition = (await edge.http.get(f"{edge.system.url(service)}/metrics")).text
            counted += total(samples(exposition), "pizzeria_consumer_dead_letters_total")
        return counted

    dead_before = await dead_lettered()
    broker = broker_from_settings(settings)
    await broker.start()
    message_id = str(uuid.uuid4())
    try:  # an order event whose data breaks its schema: every group that reads it gives up on it
        await broker.publish(
            [
                OutgoingMessage(
                    topic="orders.events",
                    key="k",
                    value=orjson.dumps({"order_id": "not-a-uuid"}),
                    headers={
                        "ce_id": message_id,
                        "ce_source": "/pizzeria/orders",
                        "ce_specversion": "1.0",
                        "ce_type": "pizzeria.orders.OrderPlaced.v1",
                        "ce_correlationid": "poison-1",
                    },
                )
            ]
        )
    finally:
        await broker.close()
    assert (await edge.http.get("/api/v1/ops/dlq", headers=edge.auth("staff"))).status_code == 403

    async def dead() -> list[dict[str, Any]]:
        listing = (await edge.http.get("/api/v1/ops/dlq", headers=admin, params={"status": "dead"})).json()
        assert listing["missing"] == []
        return [d for d in listing["items"] if d["message_id"] == message_id]

    letters = await eventually(dead, "the poison message in the dead letters", 60, every=0.2)
    assert {d["service"] for d in letters} <= {"orders", "notifications", "audit"}  # readers of orders.events
    letter = letters[0]
    assert await dead_lettered() > dead_before, "the dead-letter counter moved"
    assert letter["headers"]["ce_correlationid"] == "poison-1"
    assert letter["payload"] == {"order_id": "not-a-uuid"}
    shown = await edge.http.get(f"/api/v1/ops/dlq/{letter['id']}", headers=admin)
    assert shown.json()["id"] == letter["id"]

    replayed = await edge.http.post(f"/api/v1/ops/dlq/{letter['id']}/replay", headers=admin)
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["status"] == "replay_requested"

    async def dead_again() -> dict[str, Any] | None:
        found: dict[str, Any] = (await edge.http.get(f"/api/v1/ops/dlq/{letter['id']}", headers=admin)).json()
        return found if found["status"] == "dead" else None

    again = await eventually(dead_again, "the replayed poison message to be dead again", 60, every=0.2)
    assert again["attempts"] > letter["attempts"]
    discarded = await edge.http.post(f"/api/v1/ops/dlq/{letter['id']}/discard", headers=admin)
    assert discarded.json()["status"] == "discarded"
    await audited_with_actor(edge, "DeadLetterReplayRequested", dead_letter_id=letter["id"])
    await audited_with_actor(edge, "DeadLetterDiscarded", dead_letter_id=letter["id"])
    refused = await edge.http.post(f"/api/v1/ops/dlq/{letter['id']}/replay", headers=admin)
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert (await edge.http.post(f"/api/v1/ops/dlq/{uuid.uuid4()}/discard", headers=admin)).status_code == 404


async def test_outbox_backlog_of_every_service(edge: Edge) -> None:
    outbox = (await edge.http.get("/api/v1/ops/outbox", headers=edge.auth("admin"))).json()
    assert outbox["missing"] == []
    assert set(outbox["services"]) == set(SERVICES_WITH_DATA)
    for name, backlog in outbox["services"].items():
        assert backlog["service"] == name
        assert backlog["backlog"] >= 0
        assert backlog["oldest_age_s"] >= 0


# -- an upstream goes away -----------------------------------------------------------------------------


async def test_a_killed_upstream_opens_its_breaker_which_closes_when_it_is_back(edge: Edge) -> None:
    alice = edge.auth("customer")
    assert await edge.breaker("notifications") == "closed"
    await edge.system.kill("notifications")
    # Refused connections fail at once: the breaker opens before `pizzeria up` restarts it. Each
    # read is tried three times but counts once: three reads in a row open it.
    for _ in range(3):
        failed = await edge.http.get("/api/v1/notifications", headers=alice)
        assert failed.status_code == 503, failed.text
        assert failed.headers["content-type"].startswith("application/problem+json")
    assert await edge.breaker("notifications") == "open", "three failed reads in a row open it"
    fast = await edge.http.get("/api/v1/notifications", headers=alice)
    assert fast.status_code == 503
    assert "circuit open" in fast.json()["detail"]
    assert int(fast.headers["retry-after"]) >= 1

    async def recovered() -> bool:
        response = await edge.http.get("/api/v1/notifications", headers=alice)
        return response.status_code == 200

    await eventually(recovered, "notifications to answer through the gateway again", 60, every=0.2)
    assert await edge.breaker("notifications") == "closed"


async def test_the_overview_answers_with_what_it_has_while_an_upstream_hangs(edge: Edge) -> None:
    alice = edge.auth("customer")
    pid = await edge.system.pid("payments")
    os.kill(pid, signal.SIGSTOP)  # alive but silent: every call to it times out
    try:
        response = await edge.http.get("/api/v1/me/overview", headers=alice)
        assert response.status_code == 200, response.text
        overview = response.json()
        assert overview["missing"] == ["payments"]
        assert overview["payments"] is None
        assert overview["user"]["id"] == edge.user_ids["customer"]
        assert overview["orders"] is not None
        assert overview["notifications"] is not None
    finally:
        os.kill(pid, signal.SIGCONT)

    async def whole() -> bool:
        again = (await edge.http.get("/api/v1/me/overview", headers=alice)).json()
        return again["missing"] == []

    await eventually(whole, "the overview to be whole again", 60, every=0.2)


# -- metrics -----------------------------------------------------------------------------------------


def samples(text: str) -> dict[str, float]:
    """`name{labels}` → value, from a Prometheus text exposition."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def total(found: dict[str, float], family: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for name, v in found.items() if name.split("{")[0] == family and all(w in name for w in wanted))


async def test_every_metric_family_is_exported_and_moves_with_what_it_counts(edge: Edge) -> None:
    async def scrape() -> dict[str, dict[str, float]]:
        async with httpx.AsyncClient(timeout=30) as client:
            return {
                s: samples((await client.get(f"{edge.system.url(s)}/metrics")).text)
                for s in (*SERVICES_WITH_DATA, "gateway")
            }

    before = await scrape()
    order = await place(edge, "customer")

    async def delivered() -> bool:
        found = (await edge.http.get(f"/api/v1/orders/{order['id']}", headers=edge.auth("customer"))).json()
        return bool(found["status"] == "delivered")

    await eventually(delivered, "the order to be delivered", 60, every=0.2)
    for _ in range(2):  # the second read of the menu is a cache hit (once no change is in flight)
        await edge.http.get("/api/v1/menu")
    after: dict[str, dict[str, float]] = {}

    def moved(service: str, family: str, **labels: str) -> bool:
        return total(after[service], family, **labels) > total(before[service], family, **labels)

    business = {
        ("orders", "pizzeria_orders_placed_total", ()): "orders placed",
        ("orders", "pizzeria_order_status_changes_total", (("status", "delivered"),)): "deliveries",
        ("orders", "pizzeria_order_place_to_paid_seconds_count", ()): "place → paid",
        ("orders", "pizzeria_order_place_to_delivered_seconds_count", ()): "place → delivered",
        ("payments", "pizzeria_payments_total", (("outcome", "completed"),)): "payments completed",
        ("notifications", "pizzeria_notifications_sent_total", (("channel", "email"),)): "emails sent",
        ("orders", "pizzeria_outbox_published_total", ()): "events published",
        ("orders", "pizzeria_outbox_batches_total", ()): "relay batches",
        ("orders", "pizzeria_outbox_publish_latency_seconds_count", ()): "relay latency",
        ("kitchen", "pizzeria_consumer_messages_total", (("outcome", "processed"),)): "messages consumed",
        ("kitchen", "pizzeria_consumer_runs_total", (("group", "kitchen"),)): "runs consumed",
        ("kitchen", "pizzeria_consumer_handler_duration_seconds_count", ()): "handler time",
        ("gateway", "pizzeria_http_request_duration_seconds_count", (("route", "/api/v1/{path:path}"),)): "requests",
        ("orders", "pizzeria_http_request_duration_seconds_count", (("route", "/api/v1/orders"),)): "requests",
    }
    # Present (a gauge moves with its state, not with this order; consumer lag is reported once
    # the member owns its partitions).
    present = (
        ("orders", "pizzeria_outbox_backlog_messages"),
        ("orders", "pizzeria_outbox_oldest_unpublished_age_seconds"),
        ("kitchen", "pizzeria_consumer_lag_messages"),
        ("payments", "pizzeria_circuit_breaker_state"),
        ("gateway", "pizzeria_circuit_breaker_state"),
        ("catalog", "pizzeria_cache_requests_total"),
        ("orders", "pizzeria_db_pool_connections"),
    )
    still: list[str] = []

    async def all_moved() -> bool:
        # Notifications go out on their own time: the order can be delivered before its emails.
        nonlocal after, still
        after = await scrape()
        still = [w for (service, family, labels), w in business.items() if not moved(service, family, **dict(labels))]
        still += [
            f"{service} lacks {family}"
            for service, family in present
            if not any(name.split("{")[0] == family for name in after[service])
        ]
        return not still

    with contextlib.suppress(AssertionError):
        await eventually(all_moved, "every business metric to move", 30, every=0.2)
    assert not still, f"these did not move or are missing: {still}"


# -- traces ------------------------------------------------------------------------------------------


def spans_of(workdir: Path, trace_id: str) -> list[dict[str, Any]]:
    found = []
    for path in (workdir / "var" / "traces").glob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            try:
                span = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line being written right now
            if span["trace_id"] == trace_id:
                found.append(span)
    return found


async def test_one_order_is_one_trace_across_every_service_it_touched(edge: Edge) -> None:
    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    menu = (await edge.http.get("/api/v1/menu")).json()["items"]
    body = {
        "items": [{"menu_item_id": menu[0]["id"], "size": "medium", "quantity": 1}],
        "delivery_address": "1 Main St",
        "payment": {"token": "tok_visa"},
        "contact": {"email": "alice@pizzeria.example"},
    }
    placed = await edge.http.post(
        "/api/v1/orders",
        json=body,
        headers={
            **edge.auth("customer"),
            "Idempotency-Key": str(uuid.uuid4()),
            "traceparent": f"00-{trace_id}-{caller_span}-01",
        },
    )
    assert placed.status_code == 202, placed.text
    touched = {"gateway", "orders", "kitchen", "payments", "delivery", "notifications"}

    def orphans(spans: list[dict[str, Any]]) -> list[str]:
        ids = {s["span_id"] for s in spans}
        return [s["name"] for s in spans if s["parent_id"] not in ids and s["parent_id"] != caller_span]

    async def whole() -> list[dict[str, Any]] | None:
        # Each process exports its spans in batches: wait until every span's parent has arrived.
        spans = spans_of(edge.system.workdir, trace_id)
        names = {s["name"] for s in spans}
        done = any("DeliveryCompleted" in n for n in names) and any(
            n.startswith("notifications process") and "OrderStatusChanged" in n for n in names
        )
        return spans if done and touched <= {s["service"] for s in spans} and not orphans(spans) else None

    try:
        spans = await eventually(whole, "the order's trace to reach every service, every span linked", 90, every=0.2)
    except AssertionError:
        unlinked = orphans(spans_of(edge.system.workdir, trace_id))
        raise AssertionError(f"spans not linked into the trace: {unlinked}") from None
    by_id = {s["span_id"]: s for s in spans}
    [root] = [s for s in spans if s["parent_id"] == caller_span]
    assert (root["service"], root["kind"], root["name"]) == ("gateway", "server", "POST /api/v1/{path:path}")
    kinds = {(s["service"], s["kind"]) for s in spans}
    assert {
        ("gateway", "client"),
        ("orders", "server"),
        ("kitchen", "consumer"),
        ("payments", "consumer"),
        ("orders", "consumer"),
        ("delivery", "consumer"),
        ("notifications", "consumer"),
    } <= kinds
    # Messages link the services: each service's consumer spans include one whose parent is a
    # span of another service (the one that sent the message).
    crossings = {
        s["service"]
        for s in spans
        if s["kind"] == "consumer" and by_id.get(s["parent_id"], {}).get("service") not in (None, s["service"])
    }
    assert {"kitchen", "payments", "delivery", "notifications", "orders"} <= crossings


# -- audit -------------------------------------------------------------------------------------------


def published_about(workdir: Path, order_id: str) -> dict[str, dict[str, Any]]:
    """Every message any service wrote to its outbox about the order: id → (type, time)."""
    found: dict[str, dict[str, Any]] = {}
    for db in (workdir / "var").glob("*.db"):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'outbox'").fetchone():
                continue
            for message_id, headers, payload in conn.execute("SELECT id, headers, payload FROM outbox"):
                data = orjson.loads(payload)
                if isinstance(data, dict) and str(data.get("order_id")) == order_id:
                    found[message_id] = {"type": orjson.loads(headers)["ce_type"], "service": db.stem}
    return found


async def test_the_audit_log_has_every_message_of_a_saga_once_and_in_order(edge: Edge) -> None:
    admin = edge.auth("admin")
    order = await place(edge, "customer")

    async def delivered_and_notified() -> bool:
        found = (await edge.http.get(f"/api/v1/orders/{order['id']}", headers=edge.auth("customer"))).json()
        notes = (
            await edge.http.get(
                "/api/v1/notifications", params={"order_id": order["id"]}, headers=edge.auth("customer")
            )
        ).json()["items"]
        # every notification the order's statuses and payment tell its email-only customer, sent
        templates = [f"order_{h['status']}" for h in found["history"]] + ["payment_receipt"]
        told_of = {(t, c) for t in templates for c in told(t, ["email"])}
        sent = {(n["template"], n["channel"]) for n in notes if n["status"] == "sent"}
        return found["status"] == "delivered" and sent >= told_of

    await eventually(delivered_and_notified, "the order to be delivered and notified", 60, every=0.2)

    async def audited() -> list[dict[str, Any]] | None:
        entries: list[dict[str, Any]] = (
            await edge.http.get("/api/v1/ops/audit", params={"order_id": order["id"], "limit": 1000}, headers=admin)
        ).json()["items"]
        sent = published_about(edge.system.workdir, order["id"])
        return entries if sent and {e["message_id"] for e in entries} >= set(sent) else None

    entries = await eventually(audited, "every message about the order in the audit log", 60, every=0.2)
    sent = published_about(edge.system.workdir, order["id"])
    ids = [e["message_id"] for e in entries]
    assert len(ids) == len(set(ids)), "nothing is recorded twice"
    assert set(ids) == set(sent), "nothing is missing, nothing else is there"
    kinds = {e["type"].split(".")[2] for e in entries}
    assert {
        "OrderPlaced",
        "ReserveIngredients",
        "IngredientsReserved",
        "ChargePayment",
        "PaymentCompleted",
        "QueueTicket",
        "TicketReady",
        "ScheduleDelivery",
        "DeliveryCompleted",
        "OrderStatusChanged",
    } <= kinds
    # In order: every message comes after the one that caused it; all belong to the order's trace.
    at = {e["message_id"]: e["occurred_at"] for e in entries}
    for e in entries:
        if e["causation_id"] in at:
            assert at[e["causation_id"]] <= e["occurred_at"], e["type"]
    assert len({e["trace_id"] for e in entries}) == 1
    placed = next(e for e in entries if e["type"].endswith("OrderPlaced.v1"))
    assert placed["user_id"] == edge.user_ids["customer"]
    # Only administrators read it.
    assert (await edge.http.get("/api/v1/ops/audit", headers=edge.auth("staff"))).status_code == 403


# -- analytics ---------------------------------------------------------------------------------------


async def test_analytics_figures_equal_those_computed_from_the_orders(edge: Edge) -> None:
    admin = edge.auth("admin")
    menu = (await edge.http.get("/api/v1/menu")).json()["items"]
    since = datetime.now(UTC) - timedelta(milliseconds=10)
    placed = []
    for n, card in enumerate(["tok_visa"] * 7 + ["tok_declined"] * 3):
        item = menu[n % len(menu)]
        body = {
            "items": [{"menu_item_id": item["id"], "size": item["sizes"][0]["size"], "quantity": 1 + n % 3}],
            "delivery_address": "1 Main St",
            "payment": {"token": card},
        }
        response = await edge.http.post(
            "/api/v1/orders", json=body, headers={**edge.auth("customer"), "Idempotency-Key": str(uuid.uuid4())}
        )
        assert response.status_code == 202, response.text
        placed.append(response.json()["id"])

    async def settled() -> list[dict[str, Any]] | None:
        orders = [(await edge.http.get(f"/api/v1/orders/{i}", headers=admin)).json() for i in placed]
        return orders if all(o["status"] in ("delivered", "cancelled") for o in orders) else None

    orders = await eventually(settled, "every order to end", 60, every=0.2)
    until = datetime.now(UTC) + timedelta(seconds=1)
    delivered = [o for o in orders if o["status"] == "delivered"]
    times = sorted(
        (datetime.fromisoformat(o["history"][-1]["at"]) - datetime.fromisoformat(o["created_at"])).total_seconds()
        for o in delivered
    )
    sold: Counter[str] = Counter()
    for o in delivered:
        for line in o["items"]:
            sold[line["name"]] += line["quantity"]
    outcomes = Counter(o["payment_status"] for o in orders)
    expected = {
        "orders": len(orders),
        "delivered": len(delivered),
        "cancelled": len(orders) - len(delivered),
        "orders_per_minute": round(len(orders) / ((until - since).total_seconds() / 60), 4),
        "revenue": sum(o["total"] for o in delivered),
        "payment_success_rate": round(outcomes["completed"] / (outcomes["completed"] + outcomes["failed"]), 4),
        "delivery_time_avg_s": round(sum(times) / len(times), 3),
        "delivery_time_p95_s": round(times[math.ceil(0.95 * len(times)) - 1], 3),
    }
    assert (expected["delivered"], expected["cancelled"]) == (7, 3)
    params = {"since": since.isoformat(), "until": until.isoformat(), "bucket": "hour"}

    async def caught_up() -> dict[str, Any] | None:
        report: dict[str, Any] = (await edge.http.get("/api/v1/ops/analytics", params=params, headers=admin)).json()
        return report if report["summary"] == expected else None

    try:
        report = await eventually(caught_up, "the analytics read model to catch up", 30, every=0.2)
    except AssertionError:
        got = (await edge.http.get("/api/v1/ops/analytics", params=params, headers=admin)).json()["summary"]
        raise AssertionError(f"analytics {got} != computed {expected}") from None
    top = {t["name"]: t["quantity"] for t in report["top_items"]}
    assert top == dict(sold)
    assert sum(b["orders"] for b in report["buckets"]) == len(orders)
    bad = await edge.http.get(
        "/api/v1/ops/analytics", params={"since": until.isoformat(), "until": since.isoformat()}, headers=admin
    )
    assert bad.status_code == 400


# -- personal data in logs -----------------------------------------------------------------------------


async def test_personal_data_never_reaches_the_logs_unmasked(edge: Edge) -> None:
    email = f"pii-probe-{uuid.uuid4().hex[:10]}@example.com"
    phone = f"+49151{uuid.uuid4().int % 10**8:08d}"
    menu = (await edge.http.get("/api/v1/menu")).json()["items"]
    body = {
        "items": [{"menu_item_id": menu[0]["id"], "size": "medium", "quantity": 1}],
        "delivery_address": "1 Main St",
        "payment": {"token": "tok_visa"},
        "contact": {"email": email, "phone": phone},
    }
    response = await edge.http.post(
        "/api/v1/orders", json=body, headers={**edge.auth("customer"), "Idempotency-Key": str(uuid.uuid4())}
    )
    assert response.status_code == 202, response.text
    order_id = response.json()["id"]
    # A failed sign-in names an email too.
    await edge.http.post("/api/v1/auth/login", json={"email": email, "password": "not-the-password"})

    async def sent_both_ways() -> bool:
        notes = (
            await edge.http.get("/api/v1/notifications", params={"order_id": order_id}, headers=edge.auth("customer"))
        ).json()["items"]
        return {n["channel"] for n in notes if n["status"] == "sent"} >= {"email", "sms"}

    await eventually(sent_both_ways, "an email and an SMS about the order", 60, every=0.2)
    logs = {path.name: path.read_text(errors="replace") for path in (edge.system.workdir / "var" / "log").glob("*")}
    assert "notification delivered" in logs["notifications.log"], "the sends were logged"
    leaks = {name for name, text in logs.items() if email in text or phone in text or phone[1:] in text}
    assert not leaks, f"unmasked personal data in {sorted(leaks)}"


async def audited_with_actor(edge: Edge, kind: str, **data: str) -> dict[str, Any]:
    """The audit entry of an administrator's action, naming the administrator."""
    admin_id = edge.user_ids["admin"]

    async def found() -> dict[str, Any] | None:
        entries = (
            await edge.http.get(
                "/api/v1/ops/audit", params={"user_id": admin_id, "limit": 1000}, headers=edge.auth("admin")
            )
        ).json()["items"]
        return next(
            (
                e
                for e in entries
                if e["type"].split(".")[2] == kind and all(str(e["data"].get(k)) == v for k, v in data.items())
            ),
            None,
        )

    entry: dict[str, Any] = await eventually(found, f"{kind} in the audit log", 60, every=0.2)
    assert entry["actor"] == admin_id
    return entry


async def test_refunds_and_role_changes_are_audited_with_the_administrator(edge: Edge) -> None:
    admin = edge.auth("admin")
    order = await place(edge, "customer")

    async def completed() -> dict[str, Any] | None:
        items = (await edge.http.get("/api/v1/payments", params={"order_id": order["id"]}, headers=admin)).json()
        return next((p for p in items["items"] if p["status"] == "completed"), None)

    payment = await eventually(completed, "the order's payment", 60, every=0.2)
    refunded = await edge.http.post(f"/api/v1/payments/{payment['id']}/refund", headers=admin)
    assert refunded.status_code == 202, refunded.text
    entry = await audited_with_actor(edge, "PaymentRefundRequested", payment_id=payment["id"])
    assert entry["order_id"] == order["id"]
    assert entry["user_id"] == edge.user_ids["customer"]

    bob = edge.user_ids["other customer"]
    renamed = await edge.http.put(f"/api/v1/users/{bob}", json={"name": "Bob B.", "role": "customer"}, headers=admin)
    assert renamed.status_code == 200, renamed.text
    changed = await audited_with_actor(edge, "UserUpdated", user_id=bob)
    assert (changed["data"]["role"], changed["user_id"]) == ("customer", bob)
