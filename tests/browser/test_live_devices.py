"""Live devices in Chromium, against the whole system with the simulated devices running (the
kitchen and delivery on autopilot): a customer's order goes out and the courier's dot moves on
the map of the order page without a reload, the ETA beside it, until the order is delivered; the
customer is told once (on each channel) that the pizza is minutes away. The kitchen board shows
the simulated oven heating; the operations console shows the devices online and the ingest rate.
Each page is checked with axe-core and photographed for the README."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, expect

from pizzeria.kit.geo import distance_m
from pizzeria.services.delivery.places import PIZZERIA, locate
from tests.browser.support import check_accessibility, new_context, screenshot, sign_in
from tests.browser.test_storefront import add_to_cart, sign_up
from tests.e2e.conftest import serving
from tests.e2e.system import System
from tests.support.polling import eventually
from tests.support.tokens import bearer

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

#: Out for delivery 20 s; a trip of 10 s (longer to farther addresses, at 90 m/s at most).
ENV = {
    "KITCHEN_STAGE_MS": "1000",
    "DELIVERY_STAGE_MS": "20000",
    "DEVICE_SIMULATORS": "1",
    "SIM_OVENS": "1",
    "SIM_TRIP_S": "10",
}

#: Each position the map shows, from the courier's dot.
WATCH = """() => {
  window.__samePage = true;
  window.__positions = [];
  const note = () => {
    const dot = document.querySelector('#courier-dot');
    if (!dot) return;
    const at = [dot.getAttribute('cx'), dot.getAttribute('cy')].join(',');
    if (window.__positions[window.__positions.length - 1] !== at) window.__positions.push(at);
  };
  note();
  new MutationObserver(note).observe(document.querySelector('#courier-live'), {childList: true, subtree: true});
}"""


def near_address() -> str:
    """An address of the demo town within a kilometre of the pizzeria (the courier gets there
    well inside their 20 s, so they arrive while the order is still out)."""
    home = (PIZZERIA.lat, PIZZERIA.lon)
    for n in range(1, 500):
        address = f"{n} Oven Lane"
        place = locate(address)
        if distance_m(home, (place.lat, place.lon)) < 1000:
            return address
    raise AssertionError("no address of the demo town lies within a kilometre")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    async with serving(Path(tmp_path_factory.mktemp("devices")), ENV) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def context(chromium: Browser, system: System) -> AsyncIterator[BrowserContext]:
    context = await new_context(chromium, system.url("gateway"))
    try:
        yield context
    finally:
        await context.close()


async def notifications(system: System, order_id: str) -> list[dict[str, Any]]:
    admin = bearer("e2e-admin", "admin", env=system.env)
    async with httpx.AsyncClient(base_url=system.url("gateway"), timeout=10) as http:
        answer = await http.get("/api/v1/notifications", params={"order_id": order_id, "limit": 200}, headers=admin)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def test_the_courier_moves_on_the_order_page_and_the_customer_is_told_once_it_is_near(
    context: BrowserContext, system: System
) -> None:
    page = await context.new_page()
    await sign_up(page)
    await page.goto("/")
    await add_to_cart(page, 0)
    await page.goto("/cart")
    await page.get_by_label("Delivery address").fill(near_address())
    await page.locator("input[name=card][value=tok_visa]").check()
    await page.get_by_role("button", name="Place order").click()
    await expect(page).to_have_url(re.compile(r"/orders/[0-9a-f-]{36}$"))
    order_id = page.url.rsplit("/", 1)[1]
    await expect(page.locator("#courier-waiting")).to_be_visible()
    await page.evaluate(WATCH)

    await expect(page.locator("#courier-dot")).to_be_visible(timeout=90_000)
    await expect(page.locator("#courier-eta")).to_contain_text(re.compile(r"away|Arriving|Estimating"))
    await expect(page.locator("svg.map .route")).to_have_count(1)
    await check_accessibility(page, "the order page with the courier's map")

    async def moved() -> bool:
        return len(await page.evaluate("window.__positions")) >= 3

    await eventually(moved, "the courier's dot to move on the map", 30, every=0.25)
    await screenshot(page, "order-courier-map")
    await expect(page.locator("#order-status")).to_have_attribute("data-status", "delivered", timeout=60_000)
    await expect(page.locator("#courier-done")).to_be_visible()
    assert await page.evaluate("window.__samePage === true"), "the page was reloaded"

    async def told_once() -> list[str] | None:
        sent = [n["channel"] for n in await notifications(system, order_id) if n["template"] == "courier_arriving"]
        return sent or None

    channels = await eventually(told_once, "the customer to be told the pizza is near", 30, every=0.25)
    assert sorted(channels) == sorted(set(channels)), f"told more than once on a channel: {channels}"


async def test_the_kitchen_board_shows_the_oven_heating_and_the_console_the_devices(context: BrowserContext) -> None:
    page = await context.new_page()
    await sign_in(page, "staff")
    await page.goto("/kitchen")
    oven = page.locator("li.oven", has_text="Oven 1")
    await expect(oven).to_be_visible()

    async def temperature() -> float | None:
        text = await oven.locator(".temperature").inner_text()
        found = re.match(r"(\d+) °C", text)
        return float(found.group(1)) if found else None

    first = await eventually(temperature, "a temperature on the oven's card", 30, every=0.25)
    await eventually(
        lambda: _above(temperature, first), "the oven's temperature to rise on the board (it heats up)", 30, every=0.25
    )
    await expect(oven).to_contain_text("Set to 430 °C")
    await check_accessibility(page, "the kitchen board with its ovens")
    await screenshot(page, "kitchen-ovens")

    await context.clear_cookies()
    await sign_in(page, "admin")
    await page.goto("/ops#devices")
    await expect(page.locator("#ops-devices tr[data-device='Oven 1']")).to_contain_text("online")
    tracker = page.locator("#ops-devices tr[data-device='Tracker Ana']")
    await expect(tracker).to_contain_text("online")
    await expect(tracker).to_contain_text("in sync")  # it runs with the report interval its twin wants
    await expect(page.locator("#devices-online")).to_contain_text(re.compile(r"[1-9]\d* of \d+"))

    async def rate() -> bool:
        text = await page.locator("#ingest-rate").inner_text()
        return text not in ("\u2013", "0.0")  # an en dash: no figure

    await eventually(rate, "a positive ingest rate on the console", 30, every=0.25)
    await check_accessibility(page, "the console with its devices")
    await screenshot(page, "console-devices")


async def _above(read: Any, floor: float) -> bool:
    now = await read()
    return now is not None and now > floor
