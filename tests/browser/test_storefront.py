"""A customer in Chromium against the whole system (embedded stack, kitchen and delivery on
autopilot): signs up, orders two pizzas and watches the order reach `delivered` on its page
without reloading it; a declined card ends the order `cancelled` with the reason in words. Each
page is checked with axe-core and photographed for the README."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.browser.support import PHONE, check_accessibility, new_context, screenshot
from tests.e2e.conftest import serving
from tests.e2e.system import System
from tests.support.polling import eventually

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

#: Slow enough that the order page sees every stage go by, fast enough for a test.
STAGES = {"KITCHEN_STAGE_MS": "1000", "DELIVERY_STAGE_MS": "1000"}

#: Records every status the live panel shows, and marks the document so a reload would show.
WATCH = """() => {
  window.__samePage = true;
  window.__seen = [document.querySelector('#order-status').dataset.status];
  new MutationObserver(() => {
    const now = document.querySelector('#order-status');
    if (now && window.__seen[window.__seen.length - 1] !== now.dataset.status) window.__seen.push(now.dataset.status);
  }).observe(document.querySelector('#order-live'), {childList: true, subtree: true});
}"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    async with serving(Path(tmp_path_factory.mktemp("shop")), STAGES) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def context(chromium: Browser, system: System) -> AsyncIterator[BrowserContext]:
    context = await new_context(chromium, system.url("gateway"))
    try:
        yield context
    finally:
        await context.close()


async def sign_up(page: Page) -> str:
    email = f"pat-{uuid.uuid4().hex[:8]}@example.com"
    await page.goto("/signup")
    await page.get_by_label("Your name").fill("Pat")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill("a-long-pizza-password")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("status")).to_contain_text("You are signed in")
    return email


async def add_to_cart(page: Page, nth: int) -> str:
    item = page.locator(".menu-item").nth(nth)
    name = await item.locator("h3").inner_text()
    await item.get_by_role("button", name=re.compile("Add to cart")).click()
    await expect(page.get_by_role("status")).to_contain_text(f"Added 1 \u00d7 {name}")
    return name


async def check_out(page: Page, card: str) -> str:
    await page.goto("/cart")
    await page.get_by_label("Delivery address").fill("7 Oven Lane")
    await page.locator(f"input[name=card][value={card}]").check()
    await page.get_by_role("button", name="Place order").click()
    await expect(page).to_have_url(re.compile(r"/orders/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[1]


async def test_a_customer_signs_up_orders_two_pizzas_and_watches_it_delivered_live(context: BrowserContext) -> None:
    page = await context.new_page()
    await page.goto("/")
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Fresh pizza")
    await expect(page.locator(".menu-item").first).to_be_visible()
    await screenshot(page, "storefront")
    await check_accessibility(page, "the menu")

    await sign_up(page)
    first, second = await add_to_cart(page, 0), await add_to_cart(page, 1)
    await expect(page.get_by_role("link", name=re.compile("Cart"))).to_contain_text("2")
    await page.goto("/cart")
    await expect(page.locator(".cart-table tbody tr")).to_have_count(2)
    await page.get_by_label("Delivery address").fill("7 Oven Lane")
    await screenshot(page, "cart")
    await check_accessibility(page, "the cart and checkout")
    order_id = await check_out(page, "tok_visa")

    await expect(page.locator("#order-status")).to_be_visible()
    await page.evaluate(WATCH)
    status = page.locator("#order-status")
    await expect(status).to_have_attribute("data-status", "delivered", timeout=90_000)
    assert await page.evaluate("window.__samePage === true"), "the page was reloaded"
    seen = await page.evaluate("window.__seen")
    assert len(seen) >= 3, f"the page should have shown the order move on, it showed {seen}"
    order_of = ["pending", "paid", "preparing", "baking", "ready", "out_for_delivery", "delivered"]
    assert seen == sorted(seen, key=order_of.index), f"statuses out of order: {seen}"
    await expect(page.locator(".timeline .step.done")).to_have_count(7)
    await expect(page.get_by_role("button", name="Cancel order")).to_have_count(0)
    await screenshot(page, "order-delivered")
    await check_accessibility(page, "the order page")

    await page.goto("/orders")
    row = page.locator("tr", has=page.get_by_role("link", name=order_id[-8:]))
    await expect(row).to_contain_text("Delivered")
    await expect(row).to_contain_text(first)
    await expect(row).to_contain_text(second)
    await check_accessibility(page, "the order history")

    async def notified() -> bool:
        await page.goto("/notifications")
        return await page.locator(".notification", has_text="Delivered").count() > 0

    await eventually(notified, "a notification that the order was delivered", 60, every=0.25)
    await screenshot(page, "notifications")
    await check_accessibility(page, "the notifications")


async def test_a_declined_card_ends_the_order_cancelled_with_the_reason_in_words(context: BrowserContext) -> None:
    page = await context.new_page()
    await sign_up(page)
    await page.goto("/")
    await add_to_cart(page, 0)
    await check_out(page, "tok_declined")
    await expect(page.locator("#order-status")).to_have_attribute("data-status", "cancelled", timeout=60_000)
    await expect(page.locator("#cancel-reason")).to_contain_text("Your card was declined")
    await expect(page.locator("#cancel-reason")).to_contain_text("Nothing was charged")
    await expect(page.locator(".timeline .step.cancelled")).to_contain_text("Cancelled")
    await screenshot(page, "order-cancelled")


async def test_the_pages_fit_a_phone_and_work_from_the_keyboard(chromium: Browser, system: System) -> None:
    context = await new_context(chromium, system.url("gateway"), viewport=PHONE)
    try:
        page = await context.new_page()
        await page.goto("/")
        await expect(page.locator(".menu-item").first).to_be_visible()
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the menu is {overflow}px wider than the phone"
        await screenshot(page, "storefront-phone")
        # The first Tab reaches the skip link, which takes the keyboard past the header.
        await page.keyboard.press("Tab")
        skip = page.get_by_role("link", name="Skip to content")
        await expect(skip).to_be_focused()
        outline = await skip.evaluate("e => getComputedStyle(e).outlineStyle")
        assert outline != "none", "the focused link shows no focus ring"
        await page.keyboard.press("Enter")
        await expect(page).to_have_url(re.compile("#main$"))
        await page.goto("/signin")
        await check_accessibility(page, "sign in")
        await screenshot(page, "signin-phone")
    finally:
        await context.close()
