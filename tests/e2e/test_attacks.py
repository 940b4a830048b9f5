"""The running system under a burst of each attack a client (or a bad producer) can make, and an
ordinary customer's order afterwards: malformed headers (spaces around values, bytes that are
not text, non-ASCII), oversized bodies and headers, made-up X-Forwarded-For on sign-in, coerced
numbers and NUL in bodies, dates at the ends of the calendar, and poison records on the broker;
and one customer trying to starve the others: more order streams than a caller may hold, a
burst of correct sign-ins, cards that never get an answer, a 300-pizza order and more unpaid
orders than a customer may have. Each is refused with a 4xx problem, shed with a fast 503 (or
dead-lettered), no breaker opens, every service stays ready, another customer's order is paid
while the never-answering cards are still waiting, and the customer's order is delivered."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from pizzeria.kit.settings import Settings
from pizzeria.messaging.broker import OutgoingMessage
from pizzeria.messaging.connect import broker_from_settings
from pizzeria.registry import SERVICES
from tests.e2e.conftest import serving
from tests.e2e.system import System
from tests.support.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ALICE = ("alice@pizzeria.example", "alice-pizza-1")
BOB = ("bob@pizzeria.example", "bob-pizza-12")
ADMIN = ("admin@pizzeria.example", "admin-pizza-1")


async def raw_http(url: str, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request exactly as written (no client in between to refuse it); the status and
    the body of the answer."""
    address = httpx.URL(url)
    reader, writer = await asyncio.open_connection(address.host, address.port)
    try:
        writer.write(head + b"\r\n" + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        status = int(status_line.split()[1])
        length = 0
        while (line := await asyncio.wait_for(reader.readline(), 30)) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        answer = await asyncio.wait_for(reader.readexactly(length), 30) if length else b""
        return status, answer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def request(method: str, path: str, *headers: bytes, length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close", *headers]
    if length is not None:
        lines.append(f"Content-Length: {length}".encode())
    return b"\r\n".join(lines) + b"\r\n"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    # The defaults a deployment runs with, breakers and read retries included.
    async with serving(Path(tmp_path_factory.mktemp("attacks")), {"RATE_LIMIT_PER_IP": "100000"}) as running:
        yield running


async def sign_in(gateway: httpx.AsyncClient, account: tuple[str, str]) -> dict[str, str]:
    response = await gateway.post("/api/v1/auth/login", json={"email": account[0], "password": account[1]})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def breakers(gateway: httpx.AsyncClient) -> dict[str, str]:
    upstreams = (await gateway.get("/health")).json()["upstreams"]
    return {name: u["breaker"] for name, u in upstreams.items()}


async def all_ready(system: System, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=10) as client:
        for service in (s.name for s in SERVICES):
            while (answer := await client.get(f"{system.url(service)}/ready")).status_code != 200:
                assert time.monotonic() < deadline, f"{service} not ready: {answer.text}"
                await asyncio.sleep(0.2)


async def provider_breaker(system: System) -> str:
    """The state of payments' breaker around the card provider, from its metrics."""
    async with httpx.AsyncClient(timeout=10) as client:
        metrics = (await client.get(f"{system.url('payments')}/metrics")).text
    line = next(
        ln for ln in metrics.splitlines() if ln.startswith('pizzeria_circuit_breaker_state{name="payment-provider"}')
    )
    return {0: "closed", 1: "half-open", 2: "open"}[int(float(line.split()[-1]))]


async def place(
    gateway: httpx.AsyncClient, who: dict[str, str], lines: list[dict[str, Any]], card: str
) -> httpx.Response:
    return await gateway.post(
        "/api/v1/orders",
        json={"items": lines, "delivery_address": "1 Main St", "payment": {"token": card}},
        headers={**who, "Idempotency-Key": str(uuid.uuid4())},
    )


async def one_customer_cannot_starve_the_others(
    system: System, gateway: httpx.AsyncClient, alice: dict[str, str], line: dict[str, Any]
) -> None:
    """Bob tries to take what everyone shares; Alice's order is paid meanwhile."""
    bob = await sign_in(gateway, BOB)
    # A 300-pizza order, and more unpaid orders than a customer may have: each with a card that
    # never gets an answer, so they stay unpaid until the saga gives up on them (20 s).
    huge = await place(gateway, bob, [{**line, "quantity": 50}] * 6, "tok_visa")
    assert huge.status_code == 422, huge.text
    hanging = [await place(gateway, bob, [{**line, "quantity": 1}], "tok_timeout") for _ in range(3)]
    assert [h.status_code for h in hanging] == [202] * 3, [h.text for h in hanging]
    refused = await place(gateway, bob, [{**line, "quantity": 1}], "tok_timeout")
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/too-many-unpaid-orders")
    unpaid = [h.json()["id"] for h in hanging]

    # More live streams of one order than a caller may hold.
    async with contextlib.AsyncExitStack() as streams:
        for _ in range(5):
            held = await streams.enter_async_context(
                gateway.stream("GET", f"/api/v1/orders/{unpaid[0]}/stream", headers=bob)
            )
            assert held.status_code == 200
        extra = await gateway.get(f"/api/v1/orders/{unpaid[0]}/stream", headers=bob)
        assert extra.status_code == 429, extra.text
        assert int(extra.headers["retry-after"]) >= 1
        assert (await gateway.get(f"/api/v1/orders/{unpaid[0]}", headers=bob)).status_code == 200

    # A burst of correct sign-ins of one account: what the hashing queue cannot take is shed at
    # once, the rest sign in.
    answers = await asyncio.gather(
        *(gateway.post("/api/v1/auth/login", json={"email": BOB[0], "password": BOB[1]}) for _ in range(120))
    )
    for answer in answers:
        assert answer.status_code in (200, 503), answer.text
        if answer.status_code == 503:
            assert answer.json()["type"].endswith("/overloaded"), answer.text
    assert (await breakers(gateway))["identity"] == "closed"

    # Bob's charges fail again and again (as many times as open the provider's breaker, were
    # they different customers'), and Alice's order is paid while Bob's still wait.

    async def bobs_charges_tried() -> bool:
        payments = (await gateway.get("/api/v1/payments", headers=bob)).json()["items"]
        return bool(sum(p["attempts"] for p in payments) >= 5)

    await eventually(bobs_charges_tried, "Bob's charges were never tried", 60, every=0.2)
    assert await provider_breaker(system) == "closed"
    placed = await place(gateway, alice, [{**line, "quantity": 2}], "tok_visa")
    assert placed.status_code == 202, placed.text

    async def alices_order_paid() -> bool:
        order = (await gateway.get(f"/api/v1/orders/{placed.json()['id']}", headers=alice)).json()
        return bool(order["status"] != "pending")

    await eventually(alices_order_paid, "Alice's order was never paid", 60, every=0.1)
    bobs = [(await gateway.get(f"/api/v1/orders/{o}", headers=bob)).json()["status"] for o in unpaid]
    assert bobs == ["pending"] * 3, "Alice's order was paid only after Bob's charges were given up"
    assert await provider_breaker(system) == "closed"


def problem(status: int, body: bytes, *allowed: int) -> None:
    assert status in allowed, (status, body[:300])
    assert b'"type"' in body, body[:300]


async def test_after_a_burst_of_each_attack_an_ordinary_order_goes_through_and_no_breaker_opens(
    system: System,
) -> None:
    gateway_url = system.url("gateway")
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as gateway:
        alice = await sign_in(gateway, ALICE)  # before the sign-in spraying below throttles this address
        admin = await sign_in(gateway, ADMIN)
        menu = (await gateway.get("/api/v1/menu")).json()["items"]
        line = {"menu_item_id": menu[0]["id"], "size": menu[0]["sizes"][0]["size"]}
        await one_customer_cannot_starve_the_others(system, gateway, alice, line)

        # Sign-in spraying behind made-up forwarded addresses: the address is still throttled.
        sprayed = []
        for n in range(8):
            response = await gateway.post(
                "/api/v1/auth/login",
                json={"email": f"guess{n}@example.com", "password": "Summer2026!"},
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
            )
            sprayed.append(response.status_code)
        assert sprayed[:5] == [401] * 5
        assert set(sprayed[5:]) == {429}

        # Headers as received from a sloppy or hostile client, on an anonymous read (retried,
        # two used to open the catalog breaker) and on sign-in (five opened identity's).
        bad_headers = [
            b"X-Request-ID: r ",
            b"Content-Type: application/json ",
            b"Idempotency-Key: \tk\tk\t",
            b"Accept-Language: fran\xc3\xa7ais",
            b"User-Agent: \xff\xfe",
            b"X-Request-ID: " + b"r" * 200,
        ]
        for _ in range(4):
            for header in bad_headers:
                status, body = await raw_http(gateway_url, request("GET", "/api/v1/menu", header))
                if status != 200:
                    problem(status, body, 400)
                login = b'{"email": "nobody@example.com", "password": "x"}'
                status, body = await raw_http(
                    gateway_url,
                    request("POST", "/api/v1/auth/login", header, b"Content-Type: application/json", length=len(login)),
                    login,
                )
                assert status in (400, 401, 429), (header, status, body[:200])
        for service in ("catalog", "orders", "identity"):
            status, body = await raw_http(system.url(service), request("GET", "/health", b"X-Thing: \xff\xff"))
            problem(status, body, 400)

        # Big bodies (declared and streamed) and big headers: refused before they are read.
        for _ in range(8):
            # Only the head: the answer comes before any of the body is read, and a body left
            # unread in the server's socket would make its close a reset that can swallow it.
            status, body = await raw_http(
                gateway_url,
                request("POST", "/api/v1/auth/register", b"Content-Type: application/json", length=50 * 2**20),
                b"",
            )
            problem(status, body, 413)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(48):
                yield b"x" * 65536

        streamed = await gateway.post("/api/v1/auth/register", content=chunks(), headers={"content-type": "text/plain"})
        assert streamed.status_code == 413, streamed.text
        status, body = await raw_http(gateway_url, request("GET", "/api/v1/menu", b"X-Pad: " + b"p" * 40_000))
        problem(status, body, 431)

        # Values no service can take.
        for quantity, address in (("2", "1 Main St"), (True, "1 Main St"), (1, "1 Main\x00St")):
            refused = await gateway.post(
                "/api/v1/orders",
                json={
                    "items": [{**line, "quantity": quantity}],
                    "delivery_address": address,
                    "payment": {"token": "tok_visa"},
                },
                headers={**alice, "Idempotency-Key": str(uuid.uuid4())},
            )
            assert refused.status_code == 422, refused.text
        for when in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"):
            for path in ("/api/v1/ops/audit", "/api/v1/ops/analytics"):
                answer = await gateway.get(path, params={"since": when}, headers=admin)
                assert answer.status_code == 422, answer.text

        # Poison records, as a broken producer would write them, on topics every group reads.
        settings = Settings(PIZZERIA_VAR_DIR=str(system.workdir / "var"))  # type: ignore[call-arg]
        broker = broker_from_settings(settings)
        await broker.start()
        try:
            poison: list[dict[str, Any]] = [
                {"ce_time": "9999-12-31T23:59:59-23:59"},
                {"ce_time": 20260101},
                {"ce_id": "i" * 300},
                {"ce_type": "pizzeria.orders.OrderPlaced.v2"},
                {"ce_subject": "o\x00"},
            ]
            base = {"ce_source": "/attacker", "ce_specversion": "1.0", "ce_type": "pizzeria.orders.OrderPlaced.v1"}
            await broker.publish(
                [
                    OutgoingMessage(topic, b"{}", str(uuid.uuid4()), {**base, "ce_id": str(uuid.uuid4()), **change})
                    for topic in ("orders.events", "payments.events", "catalog.events")
                    for change in poison
                ]
            )
        finally:
            await broker.close()

        # Nothing above was the upstreams' fault, and nothing holds a consumer group up.
        assert set((await breakers(gateway)).values()) == {"closed"}
        await all_ready(system)

        placed = await gateway.post(
            "/api/v1/orders",
            json={
                "items": [{**line, "quantity": 2}],
                "delivery_address": "1 Main St",
                "payment": {"token": "tok_visa"},
            },
            headers={**alice, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert placed.status_code == 202, placed.text
        order_id = placed.json()["id"]
        deadline = time.monotonic() + 120
        while (order := (await gateway.get(f"/api/v1/orders/{order_id}", headers=alice)).json())["status"] not in (
            "delivered",
            "cancelled",
        ):
            assert time.monotonic() < deadline, f"the order never ended: {order['status']}"
            await asyncio.sleep(0.2)
        assert order["status"] == "delivered", order
        assert set((await breakers(gateway)).values()) == {"closed"}
        assert await provider_breaker(system) == "closed"
        await all_ready(system, timeout=10)
