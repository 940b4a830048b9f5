"""A steady order load through the gateway, every request and answer recorded in a `History`
for the checker: orders placed at a fixed rate by a few dozen customers, most paid with a good
card, some declined, some cancelled by their customer a moment later. Each client retries the
way a careful client does (the same Idempotency-Key after a dropped connection or a 5xx), for
as long as `retry_for` allows; a request never answered 2xx stays in the history unanswered."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from typing import Any

from tests.chaos.checker import Call, History, OrderRecord
from tests.e2e.scenario import order_body
from tests.e2e.system import Shop

CARDS = ("tok_visa", "tok_visa", "tok_visa", "tok_visa", "tok_declined")
CUSTOMERS = 25


class Load:
    """Places `rate` orders a second through `shop` until stopped."""

    def __init__(
        self,
        shop: Shop,
        history: History,
        *,
        rate: float = 3.0,
        seed: int = 1,
        cancel_share: float = 0.15,
        retry_for: float = 180.0,
    ) -> None:
        self.shop = shop
        self.history = history
        self.rate = rate
        self.rng = random.Random(seed)
        self.cancel_share = cancel_share
        self.retry_for = retry_for
        self.menu: list[dict[str, Any]] = []
        self._pacer: asyncio.Task[None] | None = None
        self._orders: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.menu = await self.shop.menu()
        self._pacer = asyncio.create_task(self._pace())

    async def stop(self) -> None:
        """Stop placing orders, and wait for those under way to be answered (or given up)."""
        if self._pacer is not None:
            self._pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pacer
        await asyncio.gather(*self._orders)

    async def _pace(self) -> None:
        n = 0
        began = time.monotonic()
        while True:
            task = asyncio.create_task(self._one(n))
            self._orders.add(task)
            task.add_done_callback(self._orders.discard)
            n += 1
            await asyncio.sleep(max(0.0, began + n / self.rate - time.monotonic()))

    async def _one(self, n: int) -> None:
        rng = self.rng
        card = rng.choice(CARDS)
        email = f"chaos{n}@example.com" if rng.random() < 0.9 else None
        phone = f"+4916{rng.randint(10_000_000, 99_999_999)}" if rng.random() < 0.5 or email is None else None
        body = order_body(self.menu, card, email, phone, rng)
        wants_cancel = rng.random() < self.cancel_share
        hesitation = rng.random() * 0.5
        record = self.history.begin(str(uuid.uuid4()), f"chaos-{n % CUSTOMERS}", card, email, phone)
        try:
            order = await self.shop.place(
                body, customer=record.customer, key=record.key, retry_for=self.retry_for, answers=record.place.answers
            )
        except AssertionError:  # refused, or not answered within retry_for: recorded as it was
            return
        finally:
            record.place.ended = time.time()
        record.order_id = str(order["id"])
        if wants_cancel:
            await asyncio.sleep(hesitation)  # so cancels land at every stage of an order
            await self._cancel(record)

    async def _cancel(self, record: OrderRecord) -> None:
        assert record.order_id is not None
        record.cancel = Call(time.time())
        try:
            status, uncertain = await self.shop.cancel(
                record.order_id, customer=record.customer, retry_for=self.retry_for
            )
        except AssertionError:  # never answered: it may have been accepted
            record.cancel_uncertain = True
        else:
            record.cancel.answers.append(str(status))
            record.cancel_uncertain = uncertain
        finally:
            record.cancel.ended = time.time()
