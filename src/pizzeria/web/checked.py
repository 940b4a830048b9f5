"""The fault lab's checked load: the history checker (`pizzeria.chaos`, what `pizzeria check`
runs) started from the page at a chosen rate, running while the operator turns the switches,
then stopped, settled, read back and checked, its verdict shown on the page. One at a time per
web process; it runs as a background task of the process, its orders and its read-back sent to
this gateway in-process (the same gate, upstreams and limits as any client's), the read-back as
the operator (their token, renewed by their session each time they look at the page)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
from starlette.types import ASGIApp

from pizzeria.chaos.gateway import GatewayShop, ReadFailed, Unusable
from pizzeria.chaos.load import Refused
from pizzeria.chaos.run import CheckedLoad, Phase
from pizzeria.kit.logging import get_logger
from pizzeria.web.render import Alert

log = get_logger(__name__)

RATES = range(1, 11)
#: The provider's answers in normal times (the fault lab's first speed).
NORMAL_LATENCY_MS = 20


def as_rate(text: str | None) -> int | None:
    """The rate a form asks for, or None when it is not one of `RATES`."""
    try:
        rate = int(text or "")
    except ValueError:
        return None
    return rate if rate in RATES else None


class CheckedLab:
    """The checked load of this web process (at most one under way at once)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.run: CheckedLoad | None = None
        self.token: str | None = None
        self._check: asyncio.Task[None] | None = None

    def seen(self, token: str | None) -> None:
        """The operator's current access token (each look at the page brings a fresh one)."""
        if token:
            self.token = token

    @property
    def busy(self) -> bool:
        return self.run is not None and self.run.phase not in (Phase.DONE, Phase.FAILED)

    async def start(self, rate: int) -> str:
        """Start a load of `rate` orders a second; what to tell the operator."""
        if self.busy:
            return Alert("A checked load is already under way: stop it (and let it be checked) first.")
        shop = GatewayShop(
            "http://gateway", admin_token=lambda: self.token, transport=httpx.ASGITransport(app=self.app)
        )
        run = CheckedLoad(shop, rate)
        try:
            await shop.open()
            await run.start()
        except (Unusable, ReadFailed, Refused) as exc:
            await shop.close()
            return Alert(f"The checked load could not start: {exc}")
        self.run = run
        return f"A checked load places {rate} orders a second. Turn the switches, then stop it to have it checked."

    async def stop(self) -> str:
        """Stop the load and have it settled and checked in the background."""
        run = self.run
        if run is None or run.phase != Phase.RUNNING:
            return Alert("No checked load is running.")
        self._check = asyncio.create_task(self._stop_and_check(run))
        return "The load is stopped: the orders it placed are left to end, then everything is read back and checked."

    async def _stop_and_check(self, run: CheckedLoad) -> None:
        try:
            await run.stop_and_check()
        except Exception:  # the run says so (phase FAILED, its error), the page shows it
            log.warning("the checked load could not be checked", exc_info=True)
        finally:
            await run.shop.close()

    def fault(self, what: str, on: bool) -> None:
        """A switch the operator turned, for the load running (if one is)."""
        if self.run is not None and self.run.phase == Phase.RUNNING:
            self.run.fault(what, on)

    def provider_switched(self, state: dict[str, Any]) -> None:
        faulty = bool(state.get("down")) or (state.get("failure_rate") or 0) > 0
        faulty = faulty or (state.get("latency_ms") or 0) > NORMAL_LATENCY_MS
        self.fault("provider", faulty)

    async def close(self) -> None:
        """Stop whatever is under way at once (the process is shutting down)."""
        if self.run is not None and self.run.phase == Phase.RUNNING:
            await self.run.load.abandon()
        if self._check is not None:
            self._check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._check
        if self.run is not None:
            await self.run.shop.close()

    def view(self) -> dict[str, Any] | None:
        """The run as the page shows it; None before the first."""
        run = self.run
        if run is None:
            return None
        now = run.progress()
        result = run.result
        return {
            "phase": str(run.phase),
            "rate": run.rate,
            "seconds": round(run.seconds),
            "placed": now.placed,
            "acknowledged": now.acknowledged,
            "unanswered": now.unanswered,
            "in_flight": now.in_flight,
            "not_placed": now.not_placed,
            "settled": run.settled,
            "faults": run.faults,
            "error": run.error,
            "ok": result.ok if result else None,
            "counts": result.counts() if result else None,
            "violations": {k: v[:20] for k, v in sorted(result.violations.items()) if v} if result else None,
        }
