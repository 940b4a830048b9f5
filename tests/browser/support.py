"""What the browser tests share: Chromium as Debian ships it, the accessibility check with
axe-core, screenshots for the README, and signing in through the pages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, Playwright, expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
#: Where the pages are photographed: `var/screenshots` (ignored by git), so that running the
#: tests leaves the checkout as it was; `make screenshots` points it at `docs/screenshots`.
SCREENSHOTS = Path(__file__).resolve().parents[2] / os.environ.get("PIZZERIA_SCREENSHOTS", "var/screenshots")
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

DEMO = {
    "customer": ("alice@pizzeria.example", "alice-pizza-1"),
    "staff": ("chef@pizzeria.example", "chef-pizza-1"),
    "courier": ("rider@pizzeria.example", "rider-pizza-1"),
    "admin": ("admin@pizzeria.example", "admin-pizza-1"),
}


async def launch(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless, with a new empty profile (Playwright makes one per launch)."""
    assert CHROMIUM.exists(), "the browser tests need Debian's chromium: run tools/ensure-services.sh"
    return await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


async def new_context(browser: Browser, base_url: str, viewport: dict[str, int] | None = None) -> BrowserContext:
    # The pages forbid inline scripts (CSP); axe-core is injected as one, so the test's context
    # bypasses the policy. The pages' own scripts are files either way.
    context = await browser.new_context(base_url=base_url, viewport=viewport or DESKTOP, bypass_csp=True)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    return context


async def sign_in(page: Page, who: str) -> None:
    email, password = DEMO[who]
    await page.goto("/signin")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("status")).to_contain_text("You are signed in")


async def check_accessibility(page: Page, what: str) -> None:
    """No serious or critical axe-core violation on the page as it is now."""
    await page.add_script_tag(path=str(AXE))
    found: dict[str, Any] = await page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [v for v in found["violations"] if v.get("impact") in ("serious", "critical")]
    report = [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:5]}" for v in bad]
    assert not bad, f"accessibility violations on {what}:\n" + "\n".join(report)


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
