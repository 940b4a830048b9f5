"""Staff, couriers and the operator in Chromium against the whole system, with no autopilot:
the kitchen and the courier move an order on from their boards while the customer's page
follows; the operator replays a dead letter the test made; the fault lab pauses the broker and
resumes it, and nothing is lost; with payments killed the shop still opens and the console shows
the breaker open. Each board is checked with axe-core and photographed for the README."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, expect

from pizzeria.contracts.catalog import MenuItemCreated, MenuSize, RecipeLine
from pizzeria.contracts.kitchen import KitchenLine, ReserveIngredients
from pizzeria.kit.settings import Settings
from pizzeria.messaging.connect import broker_from_settings
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import Message
from tests.browser.support import check_accessibility, new_context, screenshot, sign_in
from tests.e2e.conftest import serving
from tests.e2e.system import Shop, System
from tests.support.polling import eventually
from tests.support.tokens import bearer

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

ENV = {
    "KITCHEN_AUTOPILOT": "0",
    "DELIVERY_AUTOPILOT": "0",
    # A handler that keeps failing gives up after two tries (the dead-letter test waits less).
    "CONSUMER_MAX_ATTEMPTS": "2",
    # A reservation whose recipe has not come is waited on this long, not 30 s, before it too
    # becomes a dead letter.
    "CONSUMER_TRANSIENT_PATIENCE_S": "2",
    # Three failed calls open a breaker, which then stays open long enough to be seen.
    "GATEWAY_BREAKER_FAILURES": "3",
    "GATEWAY_BREAKER_RESET_S": "60",
    "GATEWAY_READ_RETRIES": "0",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    async with serving(Path(tmp_path_factory.mktemp("boards")), ENV) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def contexts(chromium: Browser, system: System) -> AsyncIterator[list[BrowserContext]]:
    """Browser contexts (each its own cookies: its own person), closed after the test."""
    made: list[BrowserContext] = []
    yield made
    for context in made:
        await context.close()


async def person(chromium: Browser, system: System, contexts: list[BrowserContext], who: str) -> Page:
    context = await new_context(chromium, system.url("gateway"))
    contexts.append(context)
    page = await context.new_page()
    await sign_in(page, who)
    return page


async def advance(board: Page, order_id: str, action: str) -> None:
    """Press the button of the order's card on a board (the card appears within a poll)."""
    card = board.locator(f"article[data-order-id='{order_id}']")
    await card.get_by_role("button", name=re.compile(action)).click()


async def test_the_kitchen_and_the_courier_move_an_order_on_and_the_customer_page_follows(
    chromium: Browser, system: System, contexts: list[BrowserContext]
) -> None:
    customer = await person(chromium, system, contexts, "customer")
    await customer.goto("/")
    await customer.locator(".menu-item").first.get_by_role("button", name=re.compile("Add to cart")).click()
    await expect(customer.get_by_role("status")).to_contain_text("to your cart")
    await customer.goto("/cart")
    await customer.get_by_label("Delivery address").fill("3 Crust Road")
    await customer.get_by_role("button", name="Place order").click()
    await expect(customer).to_have_url(re.compile(r"/orders/[0-9a-f-]{36}$"))
    order_id = customer.url.rsplit("/", 1)[1]
    await customer.evaluate("window.__samePage = true")
    status = customer.locator("#order-status")
    await expect(status).to_have_attribute("data-status", "paid", timeout=30_000)
    await expect(customer.get_by_role("button", name="Cancel order")).to_be_visible()

    chef = await person(chromium, system, contexts, "staff")
    await chef.goto("/kitchen")
    ticket = chef.locator(f"article[data-order-id='{order_id}']")
    await expect(ticket).to_be_visible()
    await expect(ticket.locator("xpath=ancestor::section[1]")).to_contain_text("Queued")
    await screenshot(chef, "kitchen")
    await check_accessibility(chef, "the kitchen board")
    # The board refreshes itself; a cook working from the keyboard keeps the focused button.
    start = ticket.get_by_role("button", name=re.compile("Start preparing"))
    await start.focus()
    await chef.evaluate(
        "() => new Promise(done => document.body.addEventListener('htmx:afterSettle', done, {once: true}))"
    )
    await expect(start).to_be_focused()
    await advance(chef, order_id, "Start preparing")
    await expect(status).to_have_attribute("data-status", "preparing")
    await expect(customer.get_by_role("button", name="Cancel order")).to_have_count(0)
    await advance(chef, order_id, "Put in the oven")
    await expect(status).to_have_attribute("data-status", "baking")
    await advance(chef, order_id, "Mark ready")
    await expect(status).to_have_attribute("data-status", "ready")

    rider = await person(chromium, system, contexts, "courier")
    await rider.goto("/deliveries")
    delivery = rider.locator(f"article[data-order-id='{order_id}']")
    await expect(delivery.get_by_role("button", name=re.compile("Picked up"))).to_be_visible(timeout=30_000)
    await screenshot(rider, "deliveries")
    await check_accessibility(rider, "the courier board")
    await advance(rider, order_id, "Picked up")
    await expect(status).to_have_attribute("data-status", "out_for_delivery")
    await advance(rider, order_id, "Mark delivered")
    await expect(status).to_have_attribute("data-status", "delivered")
    await expect(delivery).to_have_count(0)
    assert await customer.evaluate("window.__samePage === true"), "the customer's page was reloaded"


async def test_a_customer_cancels_a_paid_order_and_is_refunded(
    chromium: Browser, system: System, contexts: list[BrowserContext]
) -> None:
    customer = await person(chromium, system, contexts, "customer")
    await customer.goto("/")
    await customer.locator(".menu-item").nth(2).get_by_role("button", name=re.compile("Add to cart")).click()
    await expect(customer.get_by_role("status")).to_contain_text("to your cart")
    await customer.goto("/cart")
    await customer.get_by_label("Delivery address").fill("9 Refund Row")
    await customer.get_by_role("button", name="Place order").click()
    status = customer.locator("#order-status")
    await expect(status).to_have_attribute("data-status", "paid", timeout=30_000)  # no autopilot: it waits here
    await customer.get_by_role("button", name="Cancel order").click()
    await expect(customer.get_by_role("status")).to_contain_text("Cancellation requested")
    await expect(status).to_have_attribute("data-status", "cancelled")
    await expect(customer.locator("#cancel-reason")).to_contain_text("You cancelled this order")

    async def refunded() -> bool:
        await customer.reload()
        return "refunded" in await customer.locator("#cancel-reason").inner_text()

    await eventually(refunded, "the page to say the payment was refunded", 30, every=0.25)
    await expect(customer.get_by_role("button", name="Cancel order")).to_have_count(0)


async def publish(system: System, *messages: Message) -> list[str]:
    """Put messages on their topics as their services would (returns their ids)."""
    settings = Settings(PIZZERIA_VAR_DIR=str(system.workdir / "var"))  # type: ignore[call-arg]
    broker = broker_from_settings(settings)
    await broker.start()
    try:
        envelopes = [Envelope.wrap(m, source="/pizzeria/tests") for m in messages]
        await broker.publish([e.to_outgoing(m.topic()) for e, m in zip(envelopes, messages, strict=True)])
    finally:
        await broker.close()
    return [e.id for e in envelopes]


async def test_the_operator_replays_a_dead_letter_and_it_leaves_the_list(
    chromium: Browser, system: System, contexts: list[BrowserContext]
) -> None:
    # A reservation for a pizza the kitchen has no recipe for: it waits for the recipe, which
    # does not come, so the kitchen gives up on it (a dead letter); once the recipe is known, a
    # replay works.
    pizza = uuid.uuid4()
    [message_id] = await publish(
        system,
        ReserveIngredients(
            order_id=uuid.uuid4(), lines=[KitchenLine(menu_item_id=pizza, name="Mystery", size="medium", quantity=1)]
        ),
    )
    admin = await person(chromium, system, contexts, "admin")
    await admin.goto("/ops")
    row = admin.locator(f"tr[data-message-id='{message_id}']").filter(has_text="kitchen")
    await expect(row).to_be_visible(timeout=30_000)  # the console polls its sections
    await expect(row).to_contain_text("no recipe for menu item")
    await expect(row).to_contain_text("kitchen")
    await screenshot(admin, "console")
    await check_accessibility(admin, "the operations console")

    await publish(
        system,
        MenuItemCreated(
            menu_item_id=pizza,
            version=1,
            name="Mystery",
            sizes=[MenuSize(size="medium", price=1200)],
            recipe=[RecipeLine(ingredient="dough", quantity=1)],
        ),
    )
    dead_letter = await row.get_attribute("data-dead-letter")
    admin_api = httpx.AsyncClient(base_url=system.url("gateway"), headers=bearer("ops", "admin", env=system.env))
    try:

        async def recipe_known() -> bool:
            with sqlite3.connect(f"file:{system.workdir / 'var' / 'kitchen.db'}?mode=ro", uri=True) as db:
                found = db.execute(
                    "SELECT count(*) FROM recipes WHERE menu_item_id IN (?, ?)", (pizza.hex, str(pizza))
                ).fetchone()
            return bool(found[0])

        await eventually(recipe_known, "the kitchen to learn the recipe", 60, every=0.25)
        await row.get_by_role("button", name=re.compile("Replay")).click()
        await expect(admin.get_by_role("status").filter(has_text="sent back to its consumer")).to_be_visible()
        await expect(row).to_have_count(0)

        async def replayed() -> bool:
            found = (await admin_api.get(f"/api/v1/ops/dlq/{dead_letter}")).json()
            return bool(found["status"] == "replayed")

        await eventually(replayed, "the dead letter to be handled on replay", 30, every=0.25)
        await admin.reload()
        await expect(admin.locator("#ops-services")).to_be_visible()
        await expect(admin.locator(f"tr[data-dead-letter='{dead_letter}']")).to_have_count(0)
    finally:
        await admin_api.aclose()


async def test_an_order_story_opens_from_an_order_and_from_the_live_events(
    chromium: Browser, system: System, contexts: list[BrowserContext]
) -> None:
    admin = await person(chromium, system, contexts, "admin")
    await admin.goto("/orders")
    delivered = admin.locator("tr", has_text="Delivered").first
    await delivered.get_by_role("link").click()
    await admin.get_by_role("link", name=re.compile("whole story")).click()
    await expect(admin).to_have_url(re.compile(r"/ops/orders/[0-9a-f-]{36}$"))
    await expect(admin.get_by_role("heading", level=1)).to_contain_text("the whole story")
    story = admin.locator("table.audit tbody")
    for message in (
        "orders.OrderPlaced",
        "payments.PaymentCompleted",
        "kitchen.TicketReady",
        "delivery.DeliveryCompleted",
    ):
        await expect(story).to_contain_text(message)
    await expect(admin.get_by_role("region", name="Saga")).to_contain_text("completed")
    await screenshot(admin, "order-story")
    await check_accessibility(admin, "an order's story")

    await admin.goto("/ops")
    link = admin.locator("#ops-events a", has_text="order").first
    await expect(link).to_be_visible()
    await link.click()
    await expect(admin.get_by_role("heading", level=1)).to_contain_text("the whole story")


async def test_the_fault_lab_takes_the_provider_down_and_brings_it_back_beside_the_invariants(
    chromium: Browser, system: System, contexts: list[BrowserContext]
) -> None:
    admin = await person(chromium, system, contexts, "admin")
    await admin.goto("/ops/faults")
    await expect(admin.locator("#provider-state")).to_have_text("up")
    await expect(admin.locator("#charged-twice")).to_have_text("0")
    await expect(admin.locator("#stock-conserved")).to_have_text("yes")
    await admin.get_by_role("button", name="Take it down").click()
    await expect(admin.locator("#provider-state")).to_have_text("down")
    await expect(admin.get_by_role("status")).to_contain_text("The provider is down")
    await screenshot(admin, "fault-lab")
    await check_accessibility(admin, "the fault lab")
    async with httpx.AsyncClient(timeout=10) as client:  # the simulator itself says so
        assert (await client.get(f"{system.url('provider')}/v1/admin/state")).json()["down"] is True
    await admin.get_by_role("button", name="Bring it back").click()
    await expect(admin.locator("#provider-state")).to_have_text("up")
    await admin.get_by_label("Declines").select_option(label="half of the cards")
    await admin.get_by_role("button", name="Set declines").click()
    await expect(admin.get_by_role("status")).to_contain_text("declines 50% of ordinary cards")
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{system.url('provider')}/v1/admin/state")).json()["failure_rate"] == 0.5


async def test_the_fault_lab_pauses_the_broker_and_resumes_it_and_nothing_is_lost(
    chromium: Browser, system: System, contexts: list[BrowserContext]
) -> None:
    admin = await person(chromium, system, contexts, "admin")
    await admin.goto("/ops/faults")
    await expect(admin.locator("#broker-state")).to_have_text("flowing")
    await admin.get_by_role("button", name="Pause the broker").click()
    await expect(admin.get_by_role("status")).to_contain_text("The broker is paused")
    await expect(admin.locator("#broker-state")).to_have_text("paused")

    # An order placed while nothing is published is accepted all the same: its events wait in
    # the orders outbox, which the lab counts.
    shop = Shop(system)
    try:
        [item] = (await shop.menu())[:1]
        body = {
            "items": [{"menu_item_id": item["id"], "size": item["sizes"][0]["size"], "quantity": 1}],
            "delivery_address": "5 Pause Place",
            "payment": {"token": "tok_visa"},
        }
        order = await shop.place(body, customer=f"paused-{uuid.uuid4().hex[:6]}")
        await expect(admin.locator("#outbox-backlog")).not_to_have_text("0")
        await screenshot(admin, "fault-lab-broker-paused")
        await check_accessibility(admin, "the fault lab with the broker paused")

        await admin.get_by_role("button", name="Resume the broker").click()
        await expect(admin.get_by_role("status")).to_contain_text("The broker is back")
        await expect(admin.locator("#broker-state")).to_have_text("flowing")
        await expect(admin.locator("#outbox-backlog")).to_have_text("0", timeout=30_000)

        async def paid() -> bool:
            return (await shop.order(order["id"]))["status"] == "paid"  # no autopilot: it waits there

        await eventually(paid, "the order placed while the broker was paused to be paid", 60, every=0.25)
    finally:
        await shop.close()
    await expect(admin.locator("#orders-lost")).to_have_text("0")
    await expect(admin.locator("#charged-twice")).to_have_text("0")
    await expect(admin.locator("#stock-conserved")).to_have_text("yes")


async def test_with_payments_killed_the_shop_opens_and_the_console_shows_its_breaker_open(
    chromium: Browser, system: System, contexts: list[BrowserContext]
) -> None:
    customer = bearer("someone", "customer", env=system.env)
    await system.kill("payments")
    async with httpx.AsyncClient(base_url=system.url("gateway"), headers=customer, timeout=10) as client:

        async def breaker_open() -> bool:
            # Refused at once while payments is down (before `pizzeria up` restarts it): each
            # refusal counts against its breaker.
            await asyncio.gather(*(client.get("/api/v1/payments") for _ in range(4)))
            health = (await client.get("/health")).json()
            return bool(health["upstreams"]["payments"]["breaker"] == "open")

        await eventually(breaker_open, "the gateway's breaker to payments to open", 20, every=0.25)

    visitor = await new_context(chromium, system.url("gateway"))
    contexts.append(visitor)
    shop = await visitor.new_page()
    response = await shop.goto("/")
    assert response is not None
    assert response.status == 200
    await expect(shop.locator(".menu-item").first).to_be_visible()

    admin = await person(chromium, system, contexts, "admin")
    await admin.goto("/ops")
    payments = admin.locator("#ops-services tr[data-service='payments']")
    await expect(payments.locator("[data-breaker]")).to_have_attribute("data-breaker", "open")
    await expect(admin.locator("#ops-services tr[data-service='orders'] [data-breaker]")).to_have_attribute(
        "data-breaker", "closed"
    )
    await screenshot(admin, "console-payments-down")
