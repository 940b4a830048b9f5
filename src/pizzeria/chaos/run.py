"""A checked load, from the first order to the verdict: a steady load through the gateway for
as long as it is wanted (while faults come and go), then stopped, the system left to settle,
everything read back and checked. `pizzeria check` runs one for a given time; the fault lab
runs one between its operator's "Start" and "Stop and check", told of each switch they turn
(`CheckedLoad.fault`) so that what a fault makes legitimate is excused and said so.

Exit status of `pizzeria check` (`run`): 0 when everything held, 1 on any violation, 2 when
the system cannot be used."""

from __future__ import annotations

import asyncio
import enum
import math
import random
import time
from collections.abc import Callable
from typing import Protocol

from pizzeria.chaos.checker import DEADLINE_PASSED, LOST, PROVIDER_UNREACHABLE, Excuse, History, Result
from pizzeria.chaos.gateway import GatewayShop, ReadFailed, Unusable
from pizzeria.chaos.load import CUSTOMERS, Load, Orderer, Progress
from pizzeria.chaos.readback import ReadBack, agree, settle

DEFAULT_URL = "http://127.0.0.1:8000"
#: How long the orders may take to end once the load stopped: as long as some order ended in
#: the last STALLED_S (a system working through a backlog, e.g. `make run`'s few couriers
#: after a fast load), up to SETTLE_S in all. Then how long the read models may take to agree.
SETTLE_S = 900.0
STALLED_S = 120.0
AGREE_S = 60.0
#: How long each order (and each cancel) is asked again before it is given up.
RETRY_FOR_S = 60.0
#: What a paused broker may make legitimate: a saga step's deadline passing while it is held up,
#: for an order placed up to this long before the pause (longer than any step's deadline).
PAUSE_REACH_S = 300.0


def said(what: str, on: bool) -> str:
    """A switch turned, as the operator would say it."""
    kind, _, name = what.partition(":")
    if kind == "provider":
        return "the payment provider broken (down, slow or declining)" if on else "the payment provider back"
    if kind == "broker":
        return "the broker paused" if on else "the broker back"
    if kind == "consumer":
        return f"the {name} consumer group failing" if on else f"the {name} consumer group back"
    if kind == "kill":
        return f"{name} killed"
    return f"{what} {'on' if on else 'off'}"


class Shop(Orderer, ReadBack, Protocol):
    """A client of the system the checked load runs through (`GatewayShop`)."""

    url: str

    async def open(self) -> None:
        """Make sure the system can be used; `Unusable` when it cannot."""

    async def close(self) -> None: ...


class Phase(enum.StrEnum):
    RUNNING = "running"
    STOPPING = "stopping"  # waiting for the orders under way to be answered
    SETTLING = "settling"  # waiting for every acknowledged order to end
    CHECKING = "checking"  # reading back until the read models agree
    DONE = "done"
    FAILED = "failed"


def customers_for(rate: float) -> int:
    """Enough customers that none has more than a few orders waiting for payment at once, even
    while payments are held up for a while (ORDER_MAX_UNPAID)."""
    return max(CUSTOMERS, math.ceil(rate * 10))


class CheckedLoad:
    """One run: `start`, then (faults meanwhile) `stop_and_check`."""

    def __init__(self, shop: Shop, rate: float, *, seed: int | None = None) -> None:
        self.shop = shop
        self.rate = rate
        self.history = History()
        seed = random.randrange(1 << 30) if seed is None else seed
        self.load = Load(shop, self.history, rate=rate, seed=seed, retry_for=RETRY_FOR_S, customers=customers_for(rate))
        self.phase = Phase.RUNNING
        self.began = time.monotonic()
        self.ran_s: float | None = None
        self.settled = (0, 0)  # orders ended, of those acknowledged
        self.result: Result | None = None
        self.error: str | None = None
        self.faults: list[str] = []  # what the operator did meanwhile, as said
        self._open: dict[str, tuple[float, frozenset[tuple[str, str | None]], float]] = {}

    async def start(self) -> None:
        """Note the dead letters there already are (not this run's doing), and start the load."""
        self.history.earlier_dead_letters = {str(d["id"]) for d in await self.shop.dead_letters()}
        await self.load.start()

    def progress(self) -> Progress:
        return self.load.progress()

    @property
    def seconds(self) -> float:
        return self.ran_s if self.ran_s is not None else time.monotonic() - self.began

    def fault(self, what: str, on: bool) -> None:
        """The operator turned a fault on or off while the load runs: `provider` (down, slow or
        declining: an order it held up may be cancelled for it), `broker` (paused: a saga step's
        deadline may pass), or `consumer:<group>` (failing: its dead letters are explained)."""
        now = time.time()
        self.faults.append(f"{time.monotonic() - self.began:.0f} s: {said(what, on)}")
        if what.startswith("consumer:"):
            if on:
                self.history.failing_groups.add(what.removeprefix("consumer:"))
            return
        kinds = {"provider": (PROVIDER_UNREACHABLE, 30.0), "broker": (DEADLINE_PASSED, PAUSE_REACH_S)}
        if what not in kinds:
            return
        if on and what not in self._open:
            endings, before = kinds[what]
            self._open[what] = (now, endings, before)
        elif not on and what in self._open:
            self._close(what, now)

    def _close(self, what: str, end: float) -> None:
        start, endings, before = self._open.pop(what)
        self.history.excuses.append(Excuse(what, start, end, endings, before))

    async def stop_and_check(
        self,
        *,
        settle_for: float = SETTLE_S,
        stalled_for: float = STALLED_S,
        agree_for: float = AGREE_S,
        write: Callable[[str], None] | None = None,
    ) -> Result:
        """Stop the load, wait for the orders to end, read back and check: the verdict."""
        try:
            self.phase = Phase.STOPPING
            await self.load.stop()
            self.ran_s = time.monotonic() - self.began
            for what in list(self._open):  # a fault still on covers every order placed
                self._close(what, time.time())
            self.phase = Phase.SETTLING
            if write is not None:
                write(
                    f"stopped; waiting for {len(self.history.acknowledged)} orders to end (while they do, "
                    f"up to {settle_for:.0f} s; giving up after {stalled_for:.0f} s without one ending)"
                )

            def ended(done: int, of: int) -> None:
                self.settled = (done, of)

            await settle(self.shop, self.history, settle_for, stalled_for=stalled_for, progress=ended)
            self.phase = Phase.CHECKING
            if write is not None:
                write("reading everything back and checking it")
            self.result = await agree(self.shop, self.history, agree_for)
            self.phase = Phase.DONE
            return self.result
        except BaseException as exc:
            self.phase = Phase.FAILED
            self.error = f"{type(exc).__name__}: {exc}"[:300] if not isinstance(exc, asyncio.CancelledError) else None
            raise


async def run(
    url: str = DEFAULT_URL,
    seconds: float = 60.0,
    rate: float = 3.0,
    *,
    write: Callable[[str], None] = print,
    shop: Shop | None = None,
    settle_for: float = SETTLE_S,
    agree_for: float = AGREE_S,
) -> int:
    """`pizzeria check`: load the system at `url` (or `shop`) for `seconds`, then check it; the
    exit status."""
    shop = shop or GatewayShop(url)
    try:
        try:
            await shop.open()
            checked = CheckedLoad(shop, rate)
            await checked.start()
        except (Unusable, ReadFailed) as exc:
            write(f"pizzeria check: {exc}")
            return 2
        write(f"pizzeria check: {rate:g} orders a second through {shop.url} for {seconds:g} s")
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(10.0, left))
            now = checked.progress()
            write(f"[{checked.seconds:5.0f} s] {now.placed} placed, {now.acknowledged} acknowledged")
        result = await checked.stop_and_check(settle_for=settle_for, agree_for=agree_for, write=write)
    finally:
        await shop.close()
    write(result.table())
    if not result.acknowledged:
        write("pizzeria check: no order was accepted; the system cannot be used")
        return 2
    if result.count(LOST):
        write("orders still under way are counted lost: are the kitchen and delivery autopilots on (`make run`)?")
    write("everything held" if result.ok else "VIOLATIONS: see above")
    return 0 if result.ok else 1
