"""A steady order load, every request and answer recorded in a `History` for the checker: orders
placed at a fixed rate by a few dozen customers, most paid with a good card, some declined, some
cancelled by their customer a moment later. Each client retries the way a careful client does
(the same Idempotency-Key after a dropped connection or a 5xx), for as long as `retry_for`
allows; a request never answered 2xx stays in the history unanswered."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from pizzeria.chaos.checker import Call, History, OrderRecord
from pizzeria.chaos.stories import order_body

CARDS = ("tok_visa", "tok_visa", "tok_visa", "tok_visa", "tok_declined")
CUSTOMERS = 25


class Refused(AssertionError):
    """An order or a cancellation was refused, or not answered in time. An AssertionError, so
    that a test placing an order it expects accepted fails with it."""


class Orderer(Protocol):
    """What the load asks of the system, as its customers."""

    async def menu(self, *, include_unavailable: bool = False) -> list[dict[str, Any]]: ...

    async def customer(self, name: str) -> str:
        """The customer the load calls `name`, as the system knows them (their id)."""

    async def place(
        self,
        body: dict[str, Any],
        *,
        customer: str,
        key: str | None = None,
        retry_for: float = 60.0,
        answers: list[str] | None = None,
    ) -> dict[str, Any]:
        """POST the order as `customer`, again with the same key while it is not answered;
        each attempt's answer goes to `answers`. The order; `Refused` when it was not accepted."""

    async def cancel(self, order_id: str, *, customer: str, retry_for: float = 60.0) -> tuple[int, bool]:
        """Ask to cancel as `customer`: the answer (202 or 409), and whether it is a 409 after an
        attempt whose fate is unknown. `Refused` when it was not answered."""


@dataclass(frozen=True)
class Progress:
    """How far a load has come: orders asked for, answered 2xx, given up on (refused or never
    answered), still being asked, and not asked for at all (their customer could not be
    signed up: the system is not checked for them, but the load fell short by as many)."""

    placed: int
    acknowledged: int
    unanswered: int
    in_flight: int
    not_placed: int = 0


class Load:
    """Places `rate` orders a second through `shop` until stopped."""

    def __init__(
        self,
        shop: Orderer,
        history: History,
        *,
        rate: float = 3.0,
        seed: int = 1,
        cancel_share: float = 0.15,
        retry_for: float = 180.0,
        customers: int = CUSTOMERS,
    ) -> None:
        self.shop = shop
        self.history = history
        self.rate = rate
        self.rng = random.Random(seed)
        self.cancel_share = cancel_share
        self.retry_for = retry_for
        self.customers = customers
        self.not_placed = 0  # orders not asked for: their customer could not be signed up
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

    async def abandon(self) -> None:
        """Stop at once: the orders under way are given up without waiting for their answers."""
        tasks = [t for t in (self._pacer, *self._orders) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def progress(self) -> Progress:
        records = self.history.records
        acknowledged = sum(1 for r in records if r.acknowledged)
        given_up = sum(1 for r in records if not r.acknowledged and r.place.ended is not None)
        in_flight = len(records) - acknowledged - given_up
        return Progress(len(records), acknowledged, given_up, in_flight, self.not_placed)

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
        name = f"chaos-{n % self.customers}"
        key = str(uuid.uuid4())
        try:
            customer = await self.shop.customer(name)
        except Refused:  # the customer could not be signed up: no order was asked for
            self.not_placed += 1
            return
        record = self.history.begin(key, customer, card, email, phone)
        try:
            order = await self.shop.place(
                body, customer=customer, key=key, retry_for=self.retry_for, answers=record.place.answers
            )
        except Refused:  # refused, or not answered within retry_for: recorded as it was
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
        except Refused:  # never answered: it may have been accepted
            record.cancel_uncertain = True
        else:
            record.cancel.answers.append(str(status))
            record.cancel_uncertain = uncertain
        finally:
            record.cancel.ended = time.time()
