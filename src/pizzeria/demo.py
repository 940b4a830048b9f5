"""`pizzeria demo <scenario>`: a fault the system is built to survive, injected into a running
system through the gateway's fault switches (the fault lab's, `/api/v1/ops/faults`), with a
narrated, timed account of what the system does about it, ending with the invariants checked.

- `outbox`: the broker paused and the orders service killed while orders keep coming; the
  outbox keeps what was committed through the crash and drains once the broker is back;
- `breaker`: the payment provider down; payments' circuit breaker opens, then closes once the
  provider is back;
- `dead-letter`: the delivery consumer failing; a message is retried, then dead-lettered; the
  consumer recovers, the dead letter is replayed and the order is delivered.

It signs in with the demo accounts (embedded mode seeds them) and needs the kitchen and delivery
autopilots on (as `make run` starts the system) for orders to finish by themselves. Every switch
it turns on is turned off again, however the scenario ends. Exit status: 0 when everything held,
1 when something did not, 2 when the system cannot be used.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import orjson

DEFAULT_URL = "http://127.0.0.1:8000"
PATTERNS = "docs/patterns.md"
ADMIN = ("admin@pizzeria.example", "admin-pizza-1")
TERMINAL = ("delivered", "cancelled")
FAULTS = "/api/v1/ops/faults"
#: How long an order may take to finish once nothing holds it up (autopilots on).
FINISH_TIMEOUT_S = 180.0

T = TypeVar("T")


class DemoFailed(Exception):
    """Something the scenario expects did not happen (in time)."""


class Unusable(Exception):
    """The system cannot be used for a demo (not running, no demo accounts)."""


@dataclass
class Narrator:
    """Prints each step with the seconds since the scenario began."""

    write: Callable[[str], None] = print
    started: float = field(default_factory=time.monotonic)

    def say(self, text: str) -> None:
        self.write(f"[{time.monotonic() - self.started:6.1f}s] {text}")

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Placed:
    """An order accepted, and what was answered before it was."""

    order: dict[str, Any]
    refusals: list[str]
    took_s: float

    @property
    def id(self) -> str:
        return str(self.order["id"])


class Shop:
    """The system as the demo uses it: the public API through the gateway, as the demo admin
    (the fault switches, the operations views), and customers it registers for its orders."""

    def __init__(self, url: str, narrator: Narrator, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.url, timeout=15.0, transport=transport)
        self.narrator = narrator
        self.admin: dict[str, str] = {}
        self.menu: list[dict[str, Any]] = []

    async def close(self) -> None:
        await self.http.aclose()

    async def open(self) -> None:
        try:
            self.admin = await self._sign_in(*ADMIN)
            menu = await self.http.get("/api/v1/menu")
        except httpx.TransportError as exc:
            raise Unusable(f"nothing answers at {self.url} ({exc}); start the system with `make run`") from exc
        if menu.status_code != 200 or not menu.json()["items"]:
            raise Unusable(f"the menu cannot be read ({menu.status_code}): {menu.text[:200]}")
        self.menu = menu.json()["items"]

    async def _new_customer(self) -> dict[str, str]:
        """A customer of the demo's own for each order: a customer may have only a few orders
        waiting for payment (ORDER_MAX_UNPAID), and a scenario keeps several waiting on purpose."""
        email, password = f"demo-{uuid.uuid4().hex[:12]}@pizzeria.example", secrets.token_urlsafe(18)
        try:
            created = await self.http.post(
                "/api/v1/auth/register", json={"email": email, "password": password, "name": "Demo customer"}
            )
        except httpx.TransportError as exc:
            raise DemoFailed(f"a demo customer could not be registered: {exc}") from exc
        if created.status_code != 201:
            raise DemoFailed(f"a demo customer could not be registered: {created.status_code} {created.text[:300]}")
        return await self._sign_in(email, password)

    async def _sign_in(self, email: str, password: str) -> dict[str, str]:
        answer = await self.http.post("/api/v1/auth/login", json={"email": email, "password": password})
        if answer.status_code != 200:
            raise Unusable(
                f"cannot sign in as {email} ({answer.status_code}): the demo accounts exist in embedded mode only"
            )
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    async def ops(self, method: str, path: str, json: Any = None) -> Any:
        """An administrator's call that must succeed; its JSON."""
        try:
            answer = await self.http.request(method, path, json=json, headers=self.admin)
        except httpx.TransportError as exc:
            raise DemoFailed(f"{method} {path}: the gateway did not answer ({exc})") from exc
        if answer.status_code >= 300:
            raise DemoFailed(f"{method} {path} answered {answer.status_code}: {answer.text[:300]}")
        return answer.json() if answer.content else None

    async def try_ops(self, method: str, path: str, json: Any = None) -> Any:
        """An administrator's call whose failure is only reported (clean-up)."""
        try:
            return await self.ops(method, path, json)
        except DemoFailed as exc:
            self.narrator.say(f"could not undo a switch: {exc}")
            return None

    async def place_order(self, card: str = "tok_visa", *, retry_for: float = 60.0) -> Placed:
        """Order a pizza as the customer, trying again with the SAME idempotency key while the
        system cannot answer (as a careful client does)."""
        item = self.menu[0]
        body = {
            "items": [{"menu_item_id": item["id"], "size": item["sizes"][0]["size"], "quantity": 1}],
            "delivery_address": "1 Demo Street",
            "payment": {"token": card},
        }
        headers = {**await self._new_customer(), "Idempotency-Key": str(uuid.uuid4())}
        started = time.monotonic()
        refusals: list[str] = []
        while True:
            try:
                answer = await self.http.post("/api/v1/orders", json=body, headers=headers)
                if answer.status_code == 202:
                    return Placed(answer.json(), refusals, time.monotonic() - started)
                if answer.status_code < 500 and answer.status_code != 429:
                    raise DemoFailed(f"the order was refused: {answer.status_code} {answer.text[:300]}")
                detail = answer.json().get("detail", "") if answer.content else ""
                refusals.append(f"{answer.status_code} {detail}".strip())
            except httpx.TransportError as exc:
                refusals.append(type(exc).__name__)
            if time.monotonic() - started > retry_for:
                raise DemoFailed(f"the order was not accepted within {retry_for:.0f} s (last answer: {refusals[-1]})")
            await asyncio.sleep(0.5)

    async def order(self, order_id: str) -> dict[str, Any] | None:
        try:
            answer = await self.http.get(f"/api/v1/orders/{order_id}", headers=self.admin)
        except httpx.TransportError:
            return None
        return answer.json() if answer.status_code == 200 else None

    async def services(self) -> dict[str, dict[str, Any]]:
        found = await self.ops("GET", "/api/v1/ops/services")
        return {s["name"]: s for s in found["services"]}

    async def switches(self) -> dict[str, dict[str, Any]]:
        found = await self.ops("GET", FAULTS)
        return {s["name"]: s for s in found["services"]}

    async def backlog(self, service: str) -> int | None:
        found = await self.ops("GET", "/api/v1/ops/outbox")
        mine = found["services"].get(service)
        return int(mine["backlog"]) if mine else None


async def until(check: Callable[[], Awaitable[T | None]], what: str, timeout: float, every: float = 0.5) -> T:
    """Poll `check` until it returns something (not None, not False), or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise DemoFailed(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(every)


async def finish(shop: Shop, order_ids: list[str], timeout: float = FINISH_TIMEOUT_S) -> dict[str, dict[str, Any]]:
    """Wait until every order is delivered or cancelled, telling each as it ends."""
    done: dict[str, dict[str, Any]] = {}

    async def all_done() -> bool:
        for order_id in order_ids:
            if order_id in done:
                continue
            found = await shop.order(order_id)
            if found is not None and found["status"] in TERMINAL:
                done[order_id] = found
                reason = f" ({found['cancel_reason']})" if found.get("cancel_reason") else ""
                shop.narrator.say(f"order {short(order_id)} is {found['status']}{reason}")
        return len(done) == len(order_ids)

    try:
        await until(all_done, "every order to be delivered or cancelled (are the autopilots on?)", timeout)
    except DemoFailed:
        left = [short(o) for o in order_ids if o not in done]
        raise DemoFailed(
            f"orders {', '.join(left)} did not finish; are the kitchen and delivery autopilots on?"
        ) from None
    return done


async def check_invariants(shop: Shop) -> None:
    """What must hold after any fault: nothing lost, nobody charged twice, stock conserved."""
    found = await shop.ops("GET", "/api/v1/ops/invariants")
    orders, stock = found["orders"], found["stock"]
    if orders is None or stock is None or found["charged_twice"] is None:
        raise DemoFailed(f"the invariants cannot be read: no answer from {', '.join(found['missing'])}")
    shop.narrator.say(
        f"invariants: {orders['accepted']} orders accepted, {orders['finished']} finished, "
        f"{orders['under_way']} under way, {orders['lost']} lost; {found['charged_twice']} charged twice; "
        f"stock {'conserved' if stock['conserved'] else 'NOT conserved: ' + ', '.join(stock['unbalanced'])}"
    )
    if orders["lost"] or found["charged_twice"] or not stock["conserved"]:
        raise DemoFailed("an invariant does not hold")


def short(order_id: str) -> str:
    return order_id[-8:]


async def outbox(shop: Shop) -> None:
    say = shop.narrator.say
    placed: list[str] = []
    paused = await shop.ops("PUT", f"{FAULTS}/broker", {"paused": True})
    try:
        say(f"broker paused in {sum(1 for s in paused if s['reachable'])} services: nothing is published or delivered")
        for _ in range(3):
            one = await shop.place_order()
            placed.append(one.id)
            say(f"order {short(one.id)} accepted ({one.order['status']}) while the broker is paused")
        backlog = await until(lambda: shop.backlog("orders"), "the orders outbox to be read", 10)
        say(f"the orders service's outbox holds {backlog} events it committed with those orders")
        if backlog < len(placed):
            raise DemoFailed(f"expected at least {len(placed)} events in the outbox, found {backlog}")

        before = (await shop.switches())["orders"]["pid"]
        crashed = await shop.ops("POST", f"{FAULTS}/services/orders/crash")
        say(f"orders killed (process {crashed['pid']}, no cleanup); one more order comes in meanwhile")
        late = await shop.place_order()
        placed.append(late.id)
        said = "; ".join(dict.fromkeys(late.refusals)) or "nothing"
        say(
            f"order {short(late.id)} accepted after {len(late.refusals) + 1} attempts in {late.took_s:.1f} s, "
            f"each with the same idempotency key, so it is placed once (refused meanwhile: {said})"
        )

        async def restarted() -> int | None:
            now = (await shop.switches())["orders"]
            return now["pid"] if now["reachable"] and now["pid"] != before else None

        pid = await until(restarted, "orders to be started again", 60)
        kept = await shop.backlog("orders") or 0
        say(f"orders is back as process {pid}; its outbox kept {kept} events through the crash")
        if kept < backlog:
            raise DemoFailed(f"the outbox held {backlog} events before the crash and {kept} after")
    finally:
        await shop.try_ops("PUT", f"{FAULTS}/broker", {"paused": False})
    resumed = shop.narrator.elapsed()
    say("broker resumed")
    await until(_drained(shop, "orders"), "the orders outbox to drain", 60)
    say(f"the orders outbox drained in {shop.narrator.elapsed() - resumed:.1f} s")
    await finish(shop, placed)
    await check_invariants(shop)


def _drained(shop: Shop, service: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await shop.backlog(service) == 0

    return check


async def breaker(shop: Shop) -> None:
    say = shop.narrator.say
    await shop.ops("PUT", f"{FAULTS}/payment-provider", {"down": True})
    placed: list[str] = []
    try:
        say("payment provider down: it answers every charge with 503")
        for _ in range(3):
            one = await shop.place_order()
            placed.append(one.id)
            say(f"order {short(one.id)} accepted; payments tries to charge it")
        await until(_breaker_is(shop, "open"), "payments' breaker to the provider to open", 60)
        say("payments' circuit breaker to the provider is open: it stops calling a provider that keeps failing")
    finally:
        await shop.try_ops("PUT", f"{FAULTS}/payment-provider", {"down": False})
    say("payment provider back")
    trial = await shop.place_order()
    placed.append(trial.id)
    say(f"order {short(trial.id)} accepted: its charge is the trial call once the breaker lets one through")
    await until(_breaker_is(shop, "closed"), "payments' breaker to close", 60)
    say("the breaker is closed again: the trial call went through and charges flow")
    await finish(shop, placed)
    await check_invariants(shop)


def _breaker_is(shop: Shop, state: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        payments = (await shop.services()).get("payments") or {}
        return bool((payments.get("breakers") or {}).get("payment-provider") == state)

    return check


async def dead_letter(shop: Shop) -> None:
    say = shop.narrator.say
    await shop.ops("PUT", f"{FAULTS}/consumers/delivery", {"failing": True})
    try:
        say("the delivery consumer now fails on every message")
        order_id = (await shop.place_order()).id
        say(f"order {short(order_id)} accepted; it is paid and cooked, then delivery is asked to deliver it")

        async def its_dead_letter() -> dict[str, Any] | None:
            found = await shop.ops("GET", "/api/v1/ops/dlq", None)
            return next(
                (d for d in found["items"] if d["group_id"] == "delivery" and order_id in orjson.dumps(d).decode()),
                None,
            )

        letter = await until(its_dead_letter, "the delivery command to be dead-lettered", FINISH_TIMEOUT_S)
        say(
            f"dead letter {short(letter['id'])}: {letter['message_type']} failed {letter['attempts']} times "
            f"({letter['error'][:80]})"
        )
        now = await shop.order(order_id)
        say(f"order {short(order_id)} waits, {now['status'] if now else 'unknown'}: nothing is lost, nothing moves")
    finally:
        await shop.try_ops("PUT", f"{FAULTS}/consumers/delivery", {"failing": False})
    say("the delivery consumer recovered")
    await shop.ops("POST", f"/api/v1/ops/dlq/{letter['id']}/replay")
    say("dead letter replayed: it goes through its consumer again")

    async def replayed() -> bool:
        found = await shop.ops("GET", f"/api/v1/ops/dlq/{letter['id']}")
        return bool(found["status"] == "replayed")

    await until(replayed, "the replayed message to be handled", 30)
    say("the replayed message was handled")
    finished = await finish(shop, [order_id])
    if finished[order_id]["status"] != "delivered":
        raise DemoFailed(f"order {short(order_id)} ended {finished[order_id]['status']}, not delivered")
    await check_invariants(shop)


@dataclass(frozen=True)
class Scenario:
    run: Callable[[Shop], Awaitable[None]]
    section: str
    summary: str


SCENARIOS: dict[str, Scenario] = {
    "outbox": Scenario(
        outbox,
        "outbox",
        "the broker paused and orders killed while orders keep coming; the outbox drains after the restart",
    ),
    "breaker": Scenario(
        breaker, "circuit-breaker", "the payment provider down: payments' breaker opens, then closes once it is back"
    ),
    "dead-letter": Scenario(
        dead_letter,
        "retry-and-dead-letters",
        "the delivery consumer failing: a dead letter, replayed once it recovers, and the order delivered",
    ),
}


async def run(
    name: str,
    url: str = DEFAULT_URL,
    *,
    write: Callable[[str], None] = print,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """Run scenario `name` against the system at `url`; the exit status."""
    scenario = SCENARIOS[name]
    narrator = Narrator(write)
    write(f"pizzeria demo {name}: {scenario.summary}")
    write(f"The pattern: {PATTERNS}#{scenario.section} (also {url.rstrip('/')}/patterns#{scenario.section})")
    shop = Shop(url, narrator, transport)
    try:
        await shop.open()
        narrator.say(f"signed in at {shop.url} as the demo administrator and customer")
        await scenario.run(shop)
    except Unusable as exc:
        write(f"pizzeria demo: {exc}")
        return 2
    except DemoFailed as exc:
        narrator.say(f"FAILED: {exc}")
        return 1
    finally:
        await shop.close()
    narrator.say(f"done: everything held. Read how: {PATTERNS}#{scenario.section}")
    return 0
