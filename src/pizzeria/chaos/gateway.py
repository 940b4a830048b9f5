"""A running system as the history checker uses it, through its gateway only: customers it
registers and signs in (`/api/v1/auth/register`, `/api/v1/auth/login`) place and cancel the
load's orders (`load.Orderer`), and an administrator reads everything back (`readback.ReadBack`),
the payment provider's charges and refunds included (the fault lab's routes). No token is ever
made here: every one is the identity service's, and each is renewed by signing in again once it
is half way to its expiry.

Every call is answered or given up on: a 429 is waited out (its Retry-After), a dropped
connection or a 5xx asked again (an order with the SAME Idempotency-Key), until a deadline."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from pizzeria.chaos.load import Refused

#: The administrator embedded mode seeds (docs: the demo accounts).
DEMO_ADMIN = ("admin@pizzeria.example", "admin-pizza-1")
#: How long a read is asked again (a service restarting, a rate limit) before it is given up.
READ_FOR_S = 60.0
#: The longest wait a 429's Retry-After is followed for, at once.
MAX_BACKOFF_S = 5.0
#: Answers worth asking again: the gateway's rate limit, and a service that could not answer.
AGAIN = frozenset({429, 502, 503, 504})


class Unusable(Exception):
    """The system cannot be used: nothing answers, or nobody can sign in."""


class ReadFailed(Exception):
    """A read of the system was not answered (in time)."""


@dataclass
class Account:
    """Someone signed in: their id, and their access token and when to renew it."""

    id: str
    email: str
    password: str
    header: dict[str, str]
    renew_at: float


def _backoff(answer: httpx.Response | None, attempt: int) -> float:
    """How long to wait before asking again: the Retry-After of a 429, else a growing pause."""
    if answer is not None and answer.headers.get("retry-after", "").isdigit():
        return min(MAX_BACKOFF_S, max(0.1, float(answer.headers["retry-after"])))
    return min(MAX_BACKOFF_S, 0.2 * 2.0 ** min(attempt, 5))


class GatewayShop:
    """The system at `url` (or behind `transport`, e.g. the gateway's own app in-process). The
    administrator is either signed in with `admin` (email, password) or speaks with the token
    `admin_token()` hands out (the web UI: the operator's own, renewed by their session)."""

    def __init__(
        self,
        url: str,
        *,
        admin: tuple[str, str] | None = DEMO_ADMIN,
        admin_token: Callable[[], str | None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        run: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.url, timeout=30.0, transport=transport, limits=httpx.Limits(max_connections=64)
        )
        self._admin_credentials = None if admin_token is not None else admin
        self._admin_token = admin_token
        self._admin: Account | None = None
        self.run = run or uuid.uuid4().hex[:10]  # the customers' emails say which run made them
        self._customers: dict[str, Account] = {}  # by the load's name for them
        self._by_id: dict[str, Account] = {}
        self._signing_up: dict[str, asyncio.Lock] = {}
        self._passwords: dict[str, str] = {}  # the load's customers' passwords, by name

    async def close(self) -> None:
        await self.http.aclose()

    async def open(self) -> None:
        """Sign in as the administrator and read the menu; `Unusable` when either fails."""
        try:
            await self._admin_header()
            menu = await self.menu()
        except httpx.TransportError as exc:
            raise Unusable(f"nothing answers at {self.url} ({exc}); start the system with `make run`") from exc
        except ReadFailed as exc:
            raise Unusable(f"the menu cannot be read: {exc}") from exc
        if not menu:
            raise Unusable("the menu is empty: there is nothing to order")

    # Accounts -------------------------------------------------------------------------------

    async def _post_until_answered(self, path: str, body: dict[str, Any], *, within: float = 60.0) -> httpx.Response:
        """POST, again while the answer says to (429 with its Retry-After, or the gateway's
        503/502/504) for up to `within` s: sign-ups and sign-ins are rate limited per address,
        and a load's first customers come all at once."""
        deadline = time.monotonic() + within
        attempt = 0
        while True:
            answer = await self.http.post(path, json=body)
            if answer.status_code not in AGAIN or time.monotonic() > deadline:
                return answer
            await asyncio.sleep(_backoff(answer, attempt))
            attempt += 1

    async def _sign_in(self, email: str, password: str, user_id: str = "") -> Account:
        answer = await self._post_until_answered("/api/v1/auth/login", {"email": email, "password": password})
        if answer.status_code != 200:
            raise Unusable(f"cannot sign in as {email} ({answer.status_code}): {answer.text[:200]}")
        tokens = answer.json()
        header = {"Authorization": f"Bearer {tokens['access_token']}"}
        return Account(user_id, email, password, header, time.monotonic() + float(tokens["expires_in"]) / 2)

    async def _fresh(self, account: Account) -> Account:
        if time.monotonic() < account.renew_at:
            return account
        renewed = await self._sign_in(account.email, account.password)
        account.header, account.renew_at = renewed.header, renewed.renew_at
        return account

    async def _admin_header(self) -> dict[str, str]:
        if self._admin_token is not None:
            token = self._admin_token()
            if not token:
                raise Unusable("no administrator is signed in")
            return {"Authorization": f"Bearer {token}"}
        if self._admin_credentials is None:
            raise Unusable("no administrator to read the system back as")
        if self._admin is None:
            try:
                self._admin = await self._sign_in(*self._admin_credentials)
            except Unusable as exc:
                raise Unusable(f"{exc} (the demo administrator exists in embedded mode only)") from exc
        return (await self._fresh(self._admin)).header

    async def customer(self, name: str) -> str:
        """Register the load's customer `name` (once) and sign them in: their id."""
        lock = self._signing_up.setdefault(name, asyncio.Lock())
        async with lock:
            if name not in self._customers:
                # The same credentials each try: a sign-up whose answer was lost (a 502 after
                # identity committed) is then signed in to, not taken for someone else's email.
                email = f"check-{self.run}-{name}@pizzeria.example"
                password = self._passwords.setdefault(name, secrets.token_urlsafe(18))
                try:
                    created = await self._post_until_answered(
                        "/api/v1/auth/register", {"email": email, "password": password, "name": "Load customer"}
                    )
                    if created.status_code == 409:
                        account = await self._sign_in(email, password)
                        account.id = await self._own_id(account)
                    elif created.status_code != 201:
                        raise Refused(f"customer {name} not registered: {created.status_code} {created.text[:200]}")
                    else:
                        account = await self._sign_in(email, password, str(created.json()["id"]))
                except (httpx.TransportError, Unusable) as exc:
                    raise Refused(f"customer {name} could not be signed up: {exc}") from exc
                self._customers[name] = account
                self._by_id[account.id] = account
        return self._customers[name].id

    async def _own_id(self, account: Account) -> str:
        """The id of the account signed in (`GET /api/v1/users/me`)."""
        answer = await self.http.get("/api/v1/users/me", headers=account.header)
        if answer.status_code != 200:
            raise Unusable(f"{account.email} cannot read its own account ({answer.status_code})")
        return str(answer.json()["id"])

    async def _as_customer(self, customer: str) -> dict[str, str]:
        try:
            return (await self._fresh(self._by_id[customer])).header
        except (httpx.TransportError, Unusable) as exc:
            raise Refused(f"customer {customer} could not sign in again: {exc}") from exc

    # The load -------------------------------------------------------------------------------

    async def place(
        self,
        body: dict[str, Any],
        *,
        customer: str,
        key: str | None = None,
        retry_for: float = 60.0,
        answers: list[str] | None = None,
    ) -> dict[str, Any]:
        """POST the order as `customer`; while it is not answered (a dropped connection, a 5xx,
        a 429, or orders not knowing the menu yet), again with the SAME key."""
        key = key or str(uuid.uuid4())
        deadline = time.monotonic() + retry_for
        attempt = 0
        while True:
            answer = None
            try:
                headers = {"Idempotency-Key": key, **await self._as_customer(customer)}
                answer = await self.http.post("/api/v1/orders", json=body, headers=headers)
                if answers is not None:
                    answers.append(str(answer.status_code))
                if answer.status_code == 202:
                    order: dict[str, Any] = answer.json()
                    return order
                learning = answer.status_code == 422 and "no menu item" in answer.text
                if answer.status_code not in AGAIN and answer.status_code < 500 and not learning:
                    raise Refused(f"order refused: {answer.status_code} {answer.text[:300]}")
            except httpx.TransportError as exc:
                if answers is not None:
                    answers.append(type(exc).__name__)
            if time.monotonic() > deadline:
                raise Refused(f"order with key {key} not accepted within {retry_for:.0f} s")
            await asyncio.sleep(_backoff(answer, attempt))
            attempt += 1

    async def cancel(self, order_id: str, *, customer: str, retry_for: float = 60.0) -> tuple[int, bool]:
        """Ask to cancel as `customer`, again while it is not answered (asking twice changes
        nothing): 202 or 409, and whether a 409 came after an attempt whose fate is unknown."""
        deadline = time.monotonic() + retry_for
        unknown = False
        attempt = 0
        while True:
            answer = None
            try:
                answer = await self.http.post(
                    f"/api/v1/orders/{order_id}/cancel", headers=await self._as_customer(customer)
                )
                if answer.status_code in (202, 409):
                    return answer.status_code, unknown and answer.status_code == 409
                if answer.status_code not in AGAIN and answer.status_code < 500:
                    raise Refused(f"cancelling {order_id}: {answer.status_code} {answer.text[:300]}")
                unknown = unknown or answer.status_code >= 500
            except httpx.TransportError:
                unknown = True  # the orders process may have taken it, then died
            if time.monotonic() > deadline:
                raise Refused(f"cancelling {order_id} was not answered within {retry_for:.0f} s")
            await asyncio.sleep(_backoff(answer, attempt))
            attempt += 1

    # The read-back (as the administrator) ---------------------------------------------------

    async def _get(self, path: str, params: Any = None, *, missing_ok: bool = False) -> Any:
        """The JSON of a GET as the administrator, asked again while the system cannot answer;
        None for a 404 when `missing_ok`."""
        deadline = time.monotonic() + READ_FOR_S
        attempt = 0
        while True:
            answer = None
            try:
                answer = await self.http.get(path, params=params, headers=await self._admin_header())
                if answer.status_code == 200:
                    return answer.json()
                if answer.status_code == 404 and missing_ok:
                    return None
                if answer.status_code not in AGAIN:
                    raise ReadFailed(f"GET {path} answered {answer.status_code}: {answer.text[:200]}")
                last = f"{answer.status_code}"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            if time.monotonic() > deadline:
                raise ReadFailed(f"GET {path} not answered within {READ_FOR_S:.0f} s (last: {last})")
            await asyncio.sleep(_backoff(answer, attempt))
            attempt += 1

    async def _every_page(self, path: str, *, limit: int, **query: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": limit, **query}
        while True:
            page = await self._get(path, params)
            found += page["items"]
            if not page["next_cursor"]:
                return found
            params["cursor"] = page["next_cursor"]

    async def menu(self, *, include_unavailable: bool = False) -> list[dict[str, Any]]:
        params = {"include_unavailable": "true"} if include_unavailable else {}
        items: list[dict[str, Any]] = (await self._get("/api/v1/menu", params))["items"]
        return items

    async def find_order(self, order_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._get(f"/api/v1/orders/{order_id}", missing_ok=True)
        return found

    async def all_orders(self) -> list[dict[str, Any]]:
        return await self._every_page("/api/v1/orders", limit=100)

    async def payments(self, order_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self._get("/api/v1/payments", {"order_id": order_id}))["items"]
        return items

    async def charges(self, order_id: str | None = None) -> list[dict[str, Any]]:
        params = {"order_id": order_id} if order_id else {}
        items: list[dict[str, Any]] = (await self._get("/api/v1/ops/faults/payment-provider/charges", params))["items"]
        return items

    async def refunds(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self._get("/api/v1/ops/faults/payment-provider/refunds"))["items"]
        return items

    async def tickets(self) -> list[dict[str, Any]]:
        every = ["queued", "preparing", "baking", "ready", "cancelled"]
        return await self._every_page("/api/v1/kitchen/tickets", limit=500, status=every)

    async def deliveries(self) -> list[dict[str, Any]]:
        every = ["waiting", "assigned", "out_for_delivery", "delivered"]
        return await self._every_page("/api/v1/deliveries", limit=500, status=every)

    async def all_notifications(self) -> list[dict[str, Any]]:
        return await self._every_page("/api/v1/notifications", limit=200)

    async def inventory(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self._get("/api/v1/inventory"))["items"]
        return items

    async def saga_counts(self) -> dict[str, int]:
        counts: dict[str, int] = (await self._get("/api/v1/ops/sagas", {"limit": 1}))["counts"]
        return counts

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every service's dead letters (up to 500, newest first); a service that did not
        answer fails the read (its dead letters would go unseen)."""
        found = await self._get("/api/v1/ops/dlq", {"limit": 500})
        if found["missing"]:
            raise ReadFailed(f"no answer about dead letters from {', '.join(found['missing'])}")
        items: list[dict[str, Any]] = found["items"]
        return items

    async def audit(self, message_type: str) -> list[dict[str, Any]]:
        """Every audit entry of one message type, in the order they were recorded."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"type": message_type, "limit": 1000}
        while True:
            page = await self._get("/api/v1/ops/audit", params)
            found += page["items"]
            if page["next_after"] is None:
                return found
            params["after"] = page["next_after"]
