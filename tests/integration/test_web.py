"""The web UI in the gateway, in-process, its upstreams replaced by fakes the tests control: pages
render what the services answer and stay up when one cannot; the session cookies, their refresh
and the cross-site check; checkout with an idempotency key; the live order panel; the console's
service status."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest

from pizzeria.kit.auth import Principal, TokenIssuer
from pizzeria.kit.settings import Settings
from pizzeria.services.gateway.app import create_app
from pizzeria.services.gateway.routes import UPSTREAMS
from pizzeria.services.gateway.settings import GatewaySettings
from pizzeria.services.gateway.status import consumer_lag

ORIGIN = "http://shop.test"
ITEM = str(uuid.uuid4())
NOW = datetime.now(UTC).isoformat()
_ips = itertools.count(1)

Handler = Callable[[httpx.Request], httpx.Response]


def order(order_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": order_id,
        "customer_id": "ann",
        "status": status,
        "items": [{"menu_item_id": ITEM, "name": "Margherita", "size": "medium", "quantity": 2, "unit_price": 950}],
        "total": 1900,
        "currency": "EUR",
        "cancel_reason": extra.get("cancel_reason"),
        "cancel_requested": False,
        "payment_status": extra.get("payment_status", "pending"),
        "delivery_address": "1 Main St",
        "courier_name": None,
        "created_at": NOW,
        "updated_at": NOW,
        "history": [{"status": "pending", "at": NOW}]
        + ([{"status": status, "at": NOW}] if status != "pending" else []),
    }


@dataclass
class Fakes:
    """The services behind the gateway: a handler per (upstream, method, path), or down."""

    settings: Settings
    handlers: dict[tuple[str, str, str], Handler] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    calls: list[httpx.Request] = field(default_factory=list)

    def tokens(self, role: str = "customer", user: str = "ann", ttl_s: int | None = None) -> dict[str, Any]:
        issued = TokenIssuer.from_settings(self.settings).issue(
            Principal(user_id=user, role=role, email=f"{user}@example.com"),  # type: ignore[arg-type]
            ttl_s=ttl_s,
        )
        return {"access_token": issued.token, "refresh_token": f"refresh-{uuid.uuid4().hex}", "expires_in": 900}

    def upstream(self, name: str) -> httpx.MockTransport:
        async def handle(request: httpx.Request) -> httpx.Response:
            self.calls.append(request)
            if name in self.down:
                raise httpx.ConnectError("connection refused", request=request)
            handler = self.handlers.get((name, request.method, request.url.path))
            if handler is None:
                return httpx.Response(404, json={"detail": "not here"})
            return handler(request)

        return httpx.MockTransport(handle)


@dataclass
class Browser:
    client: httpx.AsyncClient
    fakes: Fakes

    async def sign_in(self, role: str = "customer") -> None:
        tokens = self.fakes.tokens(role)
        self.fakes.handlers["identity", "POST", "/api/v1/auth/login"] = lambda _: httpx.Response(200, json=tokens)
        response = await self.client.post(
            "/signin", data={"email": "ann@example.com", "password": "pw"}, headers={"Origin": ORIGIN}
        )
        assert response.status_code == 303, response.text


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    env = {
        "GATEWAY_BREAKER_FAILURES": "3",
        "GATEWAY_BREAKER_RESET_S": "30",
        "GATEWAY_READ_RETRIES": "0",
        "CORS_ORIGINS": ORIGIN,
    }
    settings = Settings(**env)  # type: ignore[arg-type]
    fakes = Fakes(settings)
    menu = {
        "items": [
            {
                "id": ITEM,
                "name": "Margherita",
                "description": "Tomato, mozzarella, basil",
                "category": "pizza",
                "currency": "EUR",
                "sizes": [{"size": "small", "price": 750}, {"size": "medium", "price": 950}],
                "recipe": [{"ingredient": "dough", "quantity": 1}],
                "available": True,
            }
        ]
    }
    fakes.handlers["catalog", "GET", "/api/v1/menu"] = lambda _: httpx.Response(200, json=menu)
    app = create_app(
        settings,
        GatewaySettings(**env),  # type: ignore[arg-type]
        transports={name: fakes.upstream(name) for name in (*UPSTREAMS, "provider")},
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(f"10.9.{next(_ips)}.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
            yield Browser(client, fakes)


async def test_the_storefront_shows_the_menu_with_sizes_and_prices(browser: Browser) -> None:
    page = await browser.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Margherita" in page.text
    assert "€9.50" in page.text
    assert "€7.50" in page.text
    assert "/static/vendor/htmx/htmx.min.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert (await browser.client.get("/static/vendor/htmx/htmx.min.js")).status_code == 200


async def test_an_unknown_page_is_a_page_and_an_unknown_api_path_a_problem(browser: Browser) -> None:
    page = await browser.client.get("/no-such-page")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "Page not found" in page.text
    api = await browser.client.get("/api/v2/menu")
    assert api.status_code == 404
    assert api.headers["content-type"].startswith("application/problem+json")
    assert (await browser.client.get("/health")).status_code == 200
    assert (await browser.client.get("/docs")).status_code == 200


async def test_a_page_stays_up_when_its_service_is_down(browser: Browser) -> None:
    browser.fakes.down.add("catalog")
    page = await browser.client.get("/")
    assert page.status_code == 200
    assert "The menu is unavailable right now" in page.text
    assert "Sign in" in page.text  # the rest of the page is there


async def test_signing_in_keeps_the_tokens_in_httponly_samesite_cookies(browser: Browser) -> None:
    tokens = browser.fakes.tokens("customer")
    browser.fakes.handlers["identity", "POST", "/api/v1/auth/login"] = lambda _: httpx.Response(200, json=tokens)
    response = await browser.client.post(
        "/signin",
        data={"email": "ann@example.com", "password": "pw", "next": "/orders"},
        headers={"Origin": ORIGIN},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/orders"
    cookies = response.headers.get_list("set-cookie")
    access = next(c for c in cookies if c.startswith("pz_access="))
    refresh = next(c for c in cookies if c.startswith("pz_refresh="))
    for cookie in (access, refresh):
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie
    assert tokens["access_token"] in access
    login = next(c for c in browser.fakes.calls if c.url.path == "/api/v1/auth/login")
    assert orjson.loads(login.content) == {"email": "ann@example.com", "password": "pw"}


async def test_a_wrong_password_is_said_in_words_and_next_never_leaves_the_site(browser: Browser) -> None:
    browser.fakes.handlers["identity", "POST", "/api/v1/auth/login"] = lambda _: httpx.Response(
        401, json={"detail": "wrong email or password"}
    )
    refused = await browser.client.post("/signin", data={"email": "a@b.c", "password": "x"}, headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert "do not match an account" in refused.text
    tokens = browser.fakes.tokens("customer")
    browser.fakes.handlers["identity", "POST", "/api/v1/auth/login"] = lambda _: httpx.Response(200, json=tokens)
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        response = await browser.client.post(
            "/signin", data={"email": "a@b.c", "password": "x", "next": target}, headers={"Origin": ORIGIN}
        )
        assert response.headers["location"] == "/", target


async def test_a_form_from_another_site_is_refused(browser: Browser) -> None:
    await browser.sign_in("customer")
    for headers in ({}, {"Origin": "http://evil.example"}, {"Referer": "http://evil.example/page"}):
        response = await browser.client.post("/signout", headers=headers)
        assert response.status_code == 403, headers
    assert browser.client.cookies.get("pz_access")  # still signed in
    # A proxy in front may pass Host without the port the browser used.
    behind_proxy = await browser.client.post(
        "/cart/update", headers={"Origin": "https://shop.test:8443", "Host": "shop.test"}
    )
    assert behind_proxy.status_code == 303
    same = await browser.client.post("/signout", headers={"Referer": f"{ORIGIN}/orders"})
    assert same.status_code == 303


async def test_an_expired_access_token_is_refreshed_once_for_requests_that_arrive_together(browser: Browser) -> None:
    expired = browser.fakes.tokens("customer", ttl_s=-60)
    fresh = browser.fakes.tokens("customer")
    refreshed: list[bytes] = []

    def refresh(request: httpx.Request) -> httpx.Response:
        refreshed.append(request.content)
        return httpx.Response(200, json=fresh)

    browser.fakes.handlers["identity", "POST", "/api/v1/auth/refresh"] = refresh
    browser.fakes.handlers["orders", "GET", "/api/v1/orders"] = lambda _: httpx.Response(
        200, json={"items": [], "next_cursor": None}
    )
    browser.client.cookies.set("pz_access", expired["access_token"])
    browser.client.cookies.set("pz_refresh", expired["refresh_token"])
    first = await browser.client.get("/orders")
    assert first.status_code == 200, first.text
    assert "No orders yet" in first.text
    assert fresh["access_token"] in first.headers["set-cookie"]
    # A second request of the same page with the old cookies (sent before the first came back)
    # gets the same new tokens: the single-use refresh token is not presented twice.
    browser.client.cookies.clear()
    browser.client.cookies.set("pz_access", expired["access_token"])
    browser.client.cookies.set("pz_refresh", expired["refresh_token"])
    again = await browser.client.get("/orders")
    assert again.status_code == 200
    assert refreshed == [orjson.dumps({"refresh_token": expired["refresh_token"]})]
    sent = [c for c in browser.fakes.calls if c.url.path == "/api/v1/orders"]
    assert sent[-1].headers["authorization"] == f"Bearer {fresh['access_token']}"


async def test_signed_out_visitors_are_sent_to_sign_in_and_roles_are_kept_apart(browser: Browser) -> None:
    response = await browser.client.get("/ops")
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=/ops"
    await browser.sign_in("customer")
    refused = await browser.client.get("/ops")
    assert refused.status_code == 403
    assert "for admin accounts" in refused.text
    assert (await browser.client.get("/kitchen")).status_code == 403


async def test_checkout_places_the_cart_with_one_idempotency_key_and_clears_it(browser: Browser) -> None:
    await browser.sign_in("customer")
    order_id = str(uuid.uuid4())
    placed: list[httpx.Request] = []

    def place(request: httpx.Request) -> httpx.Response:
        placed.append(request)
        return httpx.Response(202, json=order(order_id, "pending"))

    browser.fakes.handlers["orders", "POST", "/api/v1/orders"] = place
    added = await browser.client.post(
        "/cart/add", data={"menu_item_id": ITEM, "size": "medium", "quantity": "2"}, headers={"Origin": ORIGIN}
    )
    assert added.status_code == 303
    cart = await browser.client.get("/cart")
    assert "€19.00" in cart.text
    key = cart.text.split('name="idempotency_key" value="')[1].split('"')[0]
    body = {"idempotency_key": key, "delivery_address": "1 Main St", "email": "ann@example.com", "card": "tok_visa"}
    done = await browser.client.post("/checkout", data=body, headers={"Origin": ORIGIN})
    assert done.status_code == 303
    assert done.headers["location"] == f"/orders/{order_id}"
    [sent] = placed
    assert sent.headers["idempotency-key"] == key
    assert orjson.loads(sent.content) == {
        "items": [{"menu_item_id": ITEM, "size": "medium", "quantity": 2}],
        "delivery_address": "1 Main St",
        "payment": {"token": "tok_visa"},
        "contact": {"email": "ann@example.com"},
    }
    assert "Your cart is empty" in (await browser.client.get("/cart")).text


async def test_checkout_refuses_an_unknown_card_without_calling_orders(browser: Browser) -> None:
    await browser.sign_in("customer")
    await browser.client.post(
        "/cart/add", data={"menu_item_id": ITEM, "size": "small", "quantity": "1"}, headers={"Origin": ORIGIN}
    )
    response = await browser.client.post(
        "/checkout", data={"delivery_address": "", "card": "tok_free_pizza"}, headers={"Origin": ORIGIN}
    )
    assert response.status_code == 422
    assert "Choose one of the test cards" in response.text
    assert "Tell us where to bring your order" in response.text
    assert not [c for c in browser.fakes.calls if c.url.path == "/api/v1/orders"]


async def test_the_live_panel_follows_the_order_stream_as_html(browser: Browser) -> None:
    await browser.sign_in("customer")
    order_id = str(uuid.uuid4())
    stream = b"retry: 2000\n\n" + b"".join(
        b"event: order\ndata: %s\n\n" % orjson.dumps(o)
        for o in (
            order(order_id, "paid", payment_status="completed"),
            order(order_id, "cancelled", cancel_reason="payment_failed", payment_status="failed"),
        )
    )
    browser.fakes.handlers["orders", "GET", f"/api/v1/orders/{order_id}/stream"] = lambda _: httpx.Response(
        200, content=stream + b"event: end\ndata: {}\n\n", headers={"content-type": "text/event-stream"}
    )
    async with browser.client.stream("GET", f"/orders/{order_id}/live") as live:
        assert live.headers["content-type"].startswith("text/event-stream")
        text = (await live.aread()).decode()
    events = [block for block in text.split("\n\n") if block.startswith("event:")]
    assert [e.split("\n")[0] for e in events] == ["event: order", "event: order", "event: end"]
    assert 'data-status="paid"' in events[0]
    assert "Cancel order" in events[0]  # still cancellable once paid
    assert "Your card was declined" in events[1]
    assert "Nothing was charged" in events[1]
    assert "Cancel order" not in events[1]


async def test_the_console_shows_each_service_and_its_breaker(browser: Browser) -> None:
    await browser.sign_in("admin")
    browser.fakes.down.add("payments")
    for _ in range(3):  # failed calls through the gateway open the payments breaker
        await browser.client.get("/ops/section/dead-letters")
    section = await browser.client.get("/ops/section/services")
    assert section.status_code == 200
    row = section.text.split('data-service="payments"')[1].split("</tr>")[0]
    assert 'data-breaker="open"' in row
    assert "down" in row


async def test_the_fault_lab_switches_the_provider_and_counts_double_charges(browser: Browser) -> None:
    await browser.sign_in("admin")
    provider = {"down": False, "failure_rate": 0.0, "latency_ms": 20}
    charges = [
        {"order_id": "o-1", "status": "succeeded"},
        {"order_id": "o-2", "status": "succeeded"},
        {"order_id": "o-2", "status": "declined"},
    ]

    def outage(request: httpx.Request) -> httpx.Response:
        provider["down"] = orjson.loads(request.content)["down"]
        return httpx.Response(200, json={"down": provider["down"]})

    fakes = browser.fakes
    fakes.handlers["provider", "GET", "/v1/admin/state"] = lambda _: httpx.Response(200, json=provider)
    fakes.handlers["provider", "GET", "/v1/charges"] = lambda _: httpx.Response(200, json={"items": charges})
    fakes.handlers["provider", "PUT", "/v1/admin/outage"] = outage
    fakes.handlers["orders", "GET", "/api/v1/ops/sagas"] = lambda _: httpx.Response(
        200, json={"items": [], "counts": {"completed": 2, "running": 1}}
    )
    fakes.handlers["kitchen", "GET", "/api/v1/inventory"] = lambda _: httpx.Response(
        200, json={"items": [{"ingredient": "dough", "on_hand": 5, "reserved": 1, "consumed": 4, "received": 10}]}
    )
    lab = await browser.client.get("/ops/faults")
    assert lab.status_code == 200
    assert 'id="orders-accepted">3<' in lab.text
    assert 'id="charged-twice">0<' in lab.text
    assert 'id="stock-conserved">yes<' in lab.text
    switched = await browser.client.post("/ops/faults", data={"down": "1"}, headers={"Origin": ORIGIN})
    assert switched.status_code == 303
    assert provider["down"] is True
    charges.append({"order_id": "o-1", "status": "succeeded"})
    lab = await browser.client.get("/ops/faults")
    assert 'id="provider-state">down<' in lab.text
    assert 'id="charged-twice">1<' in lab.text


@dataclass
class Switches:
    """Every service's fault switches, answered and changed as the services do."""

    state: dict[str, dict[str, Any]]
    crashed: list[str] = field(default_factory=list)

    @classmethod
    def behind(cls, fakes: Fakes) -> Switches:
        switches = cls(
            {
                name: {"service": name, "pid": 100 + i, "broker_paused": False, "consumers_failing": {name: False}}
                for i, name in enumerate(UPSTREAMS)
            }
        )
        for name in UPSTREAMS:
            fakes.handlers[name, "GET", "/api/v1/ops/faults"] = partial(switches.answer, name)
            fakes.handlers[name, "PUT", "/api/v1/ops/faults"] = partial(switches.answer, name)
            fakes.handlers[name, "POST", "/api/v1/ops/faults/crash"] = partial(switches.crash, name)
        return switches

    def answer(self, name: str, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            change = orjson.loads(request.content)
            if change.get("broker_paused") is not None:
                self.state[name]["broker_paused"] = change["broker_paused"]
            self.state[name]["consumers_failing"].update(change.get("consumers_failing") or {})
        return httpx.Response(200, json=self.state[name])

    def crash(self, name: str, _: httpx.Request) -> httpx.Response:
        self.crashed.append(name)
        return httpx.Response(202, json={"service": name, "pid": self.state[name]["pid"]})


async def test_the_fault_lab_pauses_the_broker_fails_a_consumer_and_kills_a_service(browser: Browser) -> None:
    await browser.sign_in("admin")
    switches = Switches.behind(browser.fakes)
    state = switches.state
    late = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    browser.fakes.handlers["orders", "GET", "/api/v1/ops/sagas"] = lambda request: httpx.Response(
        200,
        json={
            "items": [{"id": "o-lost", "deadline_at": late}] if request.url.params["state"] == "running" else [],
            "counts": {"completed": 4, "running": 1},
        },
    )
    lab = await browser.client.get("/ops/faults")
    assert lab.status_code == 200
    assert 'id="broker-state">flowing<' in lab.text
    assert 'id="orders-lost">1<' in lab.text
    assert 'href="/patterns"' in lab.text

    async def post(**fields: str) -> str:
        answer = await browser.client.post("/ops/faults", data=fields, headers={"Origin": ORIGIN})
        assert answer.status_code == 303
        return unquote(answer.cookies.get("pz_flash", ""))

    assert "The broker is paused" in await post(switch="broker", paused="1")
    assert all(s["broker_paused"] for s in state.values())
    lab = await browser.client.get("/ops/faults")
    assert 'id="broker-state">paused<' in lab.text
    assert "Resume the broker" in lab.text

    assert "delivery now fails on every message" in await post(switch="consumer", group="delivery", failing="1")
    assert [n for n, s in state.items() if any(s["consumers_failing"].values())] == ["delivery"]
    lab = await browser.client.get("/ops/faults")
    assert 'id="consumers-failing">delivery<' in lab.text
    assert "Let delivery recover" in lab.text

    assert "kitchen (process" in await post(switch="kill", service="kitchen")
    assert switches.crashed == ["kitchen"]

    calls = len(browser.fakes.calls)
    # "!": the notice is an alert (web/render.py)
    assert (await post(switch="consumer", group="../../orders", failing="1")).startswith("!Nothing to change")
    assert (await post(switch="kill", service="kitchen/../orders")).startswith("!Nothing to change")
    assert len(browser.fakes.calls) == calls, "a name that is not one reached no service"


async def test_the_providers_charges_and_refunds_are_read_through_the_gateway(browser: Browser) -> None:
    charge = {"id": "ch_1", "amount": 2500, "currency": "EUR", "status": "succeeded", "order_id": "o-1"}
    refund = {"id": "re_1", "charge": "ch_1", "amount": 2500, "status": "succeeded"}
    asked: list[httpx.Request] = []

    def charges(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, json={"items": [charge]})

    browser.fakes.handlers["provider", "GET", "/v1/charges"] = charges
    browser.fakes.handlers["provider", "GET", "/v1/refunds"] = lambda _: httpx.Response(200, json={"items": [refund]})
    admin = {"Authorization": f"Bearer {browser.fakes.tokens('admin')['access_token']}"}
    every = await browser.client.get("/api/v1/ops/faults/payment-provider/charges", headers=admin)
    assert every.status_code == 200
    assert every.json() == {"items": [charge]}
    assert "order_id" not in asked[-1].url.params
    one = await browser.client.get("/api/v1/ops/faults/payment-provider/charges?order_id=o-1", headers=admin)
    assert one.status_code == 200
    assert asked[-1].url.params["order_id"] == "o-1"
    refunds = await browser.client.get("/api/v1/ops/faults/payment-provider/refunds", headers=admin)
    assert refunds.json() == {"items": [refund]}
    charges_of = "/api/v1/ops/faults/payment-provider/charges?order_id="
    too_long = await browser.client.get(charges_of + "x" * 65, headers=admin)
    assert too_long.status_code == 422
    assert too_long.headers["content-type"] == "application/problem+json"
    browser.fakes.down.add("provider")
    silent = await browser.client.get("/api/v1/ops/faults/payment-provider/refunds", headers=admin)
    assert silent.status_code == 503
    assert silent.headers["content-type"] == "application/problem+json"


async def test_the_switches_refuse_what_is_not_there_clearly(browser: Browser) -> None:
    Switches.behind(browser.fakes)
    admin = {"Authorization": f"Bearer {browser.fakes.tokens('admin')['access_token']}"}
    unknown = await browser.client.put("/api/v1/ops/faults/consumers/nobody", json={"failing": True}, headers=admin)
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert "no service has a consumer group 'nobody'" in unknown.json()["detail"]
    nowhere = await browser.client.post("/api/v1/ops/faults/services/nowhere/crash", headers=admin)
    assert nowhere.status_code == 404
    assert "no service 'nowhere'" in nowhere.json()["detail"]
    bad = await browser.client.put("/api/v1/ops/faults/broker", json={"paused": "maybe"}, headers=admin)
    assert bad.status_code == 422
    assert not [c for c in browser.fakes.calls if c.method in ("PUT", "POST")], "nothing was switched"


async def test_a_notice_of_what_was_not_done_is_an_alert_and_a_confirmation_is_not(browser: Browser) -> None:
    Switches.behind(browser.fakes)
    await browser.sign_in("admin")

    async def notice_after(**fields: str) -> str:
        answer = await browser.client.post("/ops/faults", data=fields, headers={"Origin": ORIGIN})
        assert answer.status_code == 303
        page = await browser.client.get(answer.headers["location"])
        assert page.status_code == 200
        shown = re.findall(r'<p class="flash[^"]*" role="[a-z]+">[^<]*</p>', page.text)
        assert len(shown) == 1, shown
        return shown[0]

    refused = await notice_after(switch="checked", action="start", rate="eleven")
    assert 'class="flash flash-alert" role="alert">The rate must be a whole number' in refused
    done = await notice_after(switch="broker", paused="1")
    assert 'class="flash" role="status">The broker is paused' in done
    # Shown once: the next page has no notice at all.
    again = await browser.client.get("/ops/faults")
    assert 'class="flash' not in again.text


async def test_the_new_operations_routes_are_for_administrators_only(browser: Browser) -> None:
    for method, path in (
        ("GET", "/api/v1/ops/services"),
        ("GET", "/api/v1/ops/faults/payment-provider"),
        ("PUT", "/api/v1/ops/faults/payment-provider"),
        ("GET", "/api/v1/ops/faults/payment-provider/charges"),
        ("GET", "/api/v1/ops/faults/payment-provider/refunds"),
        ("GET", "/api/v1/ops/faults"),
        ("PUT", "/api/v1/ops/faults/broker"),
        ("PUT", "/api/v1/ops/faults/consumers/delivery"),
        ("POST", "/api/v1/ops/faults/services/kitchen/crash"),
        ("GET", "/api/v1/ops/invariants"),
    ):
        body = {} if method in ("PUT", "POST") else None
        assert (await browser.client.request(method, path, json=body)).status_code == 401
        for role in ("customer", "staff", "courier"):
            token = browser.fakes.tokens(role)["access_token"]
            answer = await browser.client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 403, (method, path, role)
    assert not [c for c in browser.fakes.calls if c.url.path.startswith(("/ready", "/v1/"))]


def test_consumer_lag_is_summed_per_group_from_the_metrics() -> None:
    exposition = "\n".join(
        [
            "# HELP pizzeria_consumer_lag_messages Records between ...",
            'pizzeria_consumer_lag_messages{group="kitchen",partition="0",topic="kitchen.commands"} 3.0',
            'pizzeria_consumer_lag_messages{group="kitchen",partition="1",topic="kitchen.commands"} 4.0',
            'pizzeria_consumer_lag_messages{group="audit",partition="0",topic="orders.events"} 0.0',
            'pizzeria_consumer_messages_total{group="kitchen",outcome="processed"} 9.0',
        ]
    )
    assert consumer_lag(exposition) == {"kitchen": 7.0, "audit": 0.0}


async def test_the_patterns_page_shows_docs_patterns_with_a_section_per_pattern(browser: Browser) -> None:
    page = await browser.client.get("/patterns")
    assert page.status_code == 200
    assert "<h1>The patterns Pizzeria uses</h1>" in page.text
    assert '<h2 id="outbox">Outbox</h2>' in page.text
    assert "<code>src/pizzeria/messaging/relay.py::OutboxRelay.run</code>" in page.text
