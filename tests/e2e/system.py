"""The whole system as a user runs it: `pizzeria up` in a subprocess, on free ports, with its
own data directory, plus a client for the API and the process controls chaos tests need."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from pizzeria.chaos.load import Refused
from pizzeria.chassis.addresses import REPLICA_PORT_STEP, SERVICE_PORTS, SIMULATOR_PORTS
from pizzeria.kit.auth import Role
from pizzeria.kit.settings import Settings
from tests.support.polling import eventually
from tests.support.tcpproxy import free_ports
from tests.support.tokens import bearer


class System:
    """`pizzeria up` with every service on a free port (and, with `replicas`, several processes
    of some services, each replica on its own port)."""

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str] | None = None,
        *,
        replicas: Mapping[str, int] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.replicas = {name: count for name, count in (replicas or {}).items() if count > 1}
        # The simulated devices run (and are waited for) when the environment asks for them.
        processes = [*SERVICE_PORTS, *(SIMULATOR_PORTS if (env or {}).get("DEVICE_SIMULATORS") == "1" else ())]
        self.ports = {name: free_ports(self.replicas.get(name, 1), REPLICA_PORT_STEP) for name in processes}
        self.env = {
            **os.environ,
            "PIZZERIA_VAR_DIR": str(workdir / "var"),
            "LOG_LEVEL": "INFO",
            **{f"{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
            **(env or {}),
        }
        self.args = list(args)
        if self.replicas:
            self.args += ["--replicas", ",".join(f"{name}={count}" for name, count in self.replicas.items())]
        self.killed: set[tuple[str, int]] = set()
        self.process: subprocess.Popen[bytes] | None = None
        self.output = workdir / "up.log"

    def url(self, service: str, replica: int | None = None) -> str:
        """A replica's address: the one asked for, else the first this test has not killed."""
        if replica is None:
            replica = next((n for n in self.replica_numbers(service) if (service, n) not in self.killed), 1)
        return f"http://127.0.0.1:{self.ports[service] + REPLICA_PORT_STEP * (replica - 1)}"

    def replica_numbers(self, service: str) -> range:
        return range(1, self.replicas.get(service, 1) + 1)

    async def start(self, timeout: float = 180.0) -> System:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pizzeria", "up", *self.args],
            cwd=self.workdir,
            env=self.env,
            stdout=self.output.open("wb"),
            stderr=subprocess.STDOUT,
        )
        await self.wait_until(self._all_ready, timeout, "every service ready")
        return self

    async def _all_ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"pizzeria up exited early:\n{self.output.read_text()[-3000:]}")
        # What `pizzeria up` says is read first: it costs nothing, where asking every process
        # while they start (a new client each time) takes CPU from their start.
        if "pizzeria is up" not in self.output.read_text():
            return False
        async with httpx.AsyncClient(timeout=2) as client:
            for service in self.ports:
                for replica in self.replica_numbers(service):
                    try:
                        if (await client.get(f"{self.url(service, replica)}/ready")).status_code != 200:
                            return False
                    except httpx.HTTPError:
                        return False
        return True

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    async def pid(self, service: str, replica: int | None = None) -> int:
        async with httpx.AsyncClient(timeout=5) as client:
            return int((await client.get(f"{self.url(service, replica)}/health")).json()["pid"])

    async def kill(self, service: str, replica: int = 1) -> int:
        """SIGKILL a service process (no cleanup, like a power cut); returns its pid."""
        pid = await self.pid(service, replica)
        os.kill(pid, signal.SIGKILL)
        self.killed.add((service, replica))
        return pid

    async def wait_until(self, predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
        await eventually(predicate, what, timeout, every=0.2)

    def logs(self, service: str) -> str:
        path = self.workdir / "var" / "log" / f"{service}.log"
        return path.read_text() if path.exists() else ""


class Shop:
    """A client of the services' APIs, retrying the way a careful client does: customers place
    and cancel their own orders; everything else is asked as an administrator. Straight at each
    service, or `through_gateway` (the payment provider, no part of the API, is asked directly)."""

    def __init__(self, system: System, *, through_gateway: bool = False) -> None:
        self.system = system
        self.through_gateway = through_gateway
        # Access tokens expire (ACCESS_TOKEN_TTL_S): a shop used longer than that (a soak) asks
        # with a new one once its token is half way to expiry.
        ttl = float(system.env.get("ACCESS_TOKEN_TTL_S", Settings.model_fields["access_token_ttl_s"].default))
        self._renew_after = ttl / 2
        self._tokens: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        self.http = httpx.AsyncClient(
            timeout=30, limits=httpx.Limits(max_connections=64), event_hooks={"request": [self._as_admin]}
        )

    def at(self, service: str) -> str:
        """Where a request for `service`'s API goes."""
        return self.system.url("gateway" if self.through_gateway else service)

    def _token(self, user: str, role: Role) -> dict[str, str]:
        minted, header = self._tokens.get((user, role), (0.0, {}))
        if time.monotonic() - minted > self._renew_after:
            minted, header = time.monotonic(), bearer(user, role, env=self.system.env)
            self._tokens[(user, role)] = (minted, header)
        return header

    async def _as_admin(self, request: httpx.Request) -> None:
        """A request that does not speak for a customer is the administrator's."""
        if "authorization" not in request.headers:
            request.headers.update(self._token("shop-admin", "admin"))

    def as_customer(self, customer: str) -> dict[str, str]:
        """Headers that make a request the customer's own."""
        return self._token(customer, "customer")

    async def close(self) -> None:
        await self.http.aclose()

    async def menu(self, *, include_unavailable: bool = False) -> list[dict[str, Any]]:
        params = {"include_unavailable": "true"} if include_unavailable else {}
        response = await self.http.get(f"{self.at('catalog')}/api/v1/menu", params=params)
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def place(
        self,
        body: dict[str, Any],
        *,
        customer: str,
        key: str | None = None,
        retry_for: float = 60.0,
        answers: list[str] | None = None,
    ) -> dict[str, Any]:
        """POST an order; on a dropped connection or a 5xx, retry with the SAME key. Each
        attempt's answer (its status code, or the transport error's name) goes to `answers`."""
        key = key or str(uuid.uuid4())
        deadline = time.monotonic() + retry_for
        while True:
            try:
                response = await self.http.post(
                    f"{self.at('orders')}/api/v1/orders",
                    json=body,
                    headers={"Idempotency-Key": key, **self.as_customer(customer)},
                )
                if answers is not None:
                    answers.append(str(response.status_code))
                if response.status_code == 202:
                    order: dict[str, Any] = response.json()
                    return order
                if response.status_code < 500 and response.status_code != 422:
                    raise Refused(f"order refused: {response.status_code} {response.text}")
                if response.status_code == 422 and "no menu item" not in response.text:
                    raise Refused(f"order refused: {response.text}")
            except httpx.TransportError as error:
                if answers is not None:
                    answers.append(type(error).__name__)
                # the orders process may be restarting
            if time.monotonic() > deadline:
                raise Refused(f"order with key {key} not accepted within {retry_for}s")
            await asyncio.sleep(0.2)

    async def customer(self, name: str) -> str:
        """The customer `name`, as the services know them: tokens name them (`as_customer`)."""
        return name

    async def order(self, order_id: str) -> dict[str, Any]:
        response = await self.http.get(f"{self.at('orders')}/api/v1/orders/{order_id}")
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found

    async def find_order(self, order_id: str) -> dict[str, Any] | None:
        """The order; None when it does not exist."""
        response = await self.http.get(f"{self.at('orders')}/api/v1/orders/{order_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found

    async def payments(self, order_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(f"{self.at('payments')}/api/v1/payments", params={"order_id": order_id})
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def charges(self, order_id: str | None = None) -> list[dict[str, Any]]:
        """The payment provider's charges (of one order, or all), asked of the provider itself."""
        params = {"order_id": order_id} if order_id else {}
        response = await self.http.get(f"{self.system.url('provider')}/v1/charges", params=params)
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def cancel(self, order_id: str, *, customer: str, retry_for: float = 60.0) -> tuple[int, bool]:
        """Ask to cancel; on a dropped connection or a 5xx, ask again (asking twice changes
        nothing). The answer, and whether an earlier attempt's fate is unknown while the answer
        is a 409 (the process that had it died: it may have accepted it first)."""
        deadline = time.monotonic() + retry_for
        unknown = False
        while True:
            try:
                response = await self.http.post(
                    f"{self.at('orders')}/api/v1/orders/{order_id}/cancel", headers=self.as_customer(customer)
                )
                if response.status_code < 500:
                    if response.status_code not in (202, 409):
                        raise Refused(f"cancelling {order_id}: {response.status_code} {response.text}")
                    return response.status_code, unknown and response.status_code == 409
            except httpx.TransportError:
                pass  # the orders process may be restarting
            unknown = True
            if time.monotonic() > deadline:
                raise Refused(f"cancelling {order_id} was not answered within {retry_for}s")
            await asyncio.sleep(0.2)

    async def refunds(self) -> list[dict[str, Any]]:
        response = await self.http.get(f"{self.system.url('provider')}/v1/refunds")
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def inventory(self) -> list[dict[str, Any]]:
        response = await self.http.get(f"{self.at('kitchen')}/api/v1/inventory")
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def set_stock(self, ingredient: str, on_hand: int) -> None:
        response = await self.http.put(f"{self.at('kitchen')}/api/v1/inventory/{ingredient}", json={"on_hand": on_hand})
        response.raise_for_status()

    async def tickets(self) -> list[dict[str, Any]]:
        """Every kitchen ticket, whatever its status, oldest first, page by page."""
        every = ["queued", "preparing", "baking", "ready", "cancelled"]
        return await self._every_page("kitchen", "/api/v1/kitchen/tickets", limit=500, status=every)

    async def deliveries(self) -> list[dict[str, Any]]:
        """Every delivery, whatever its status, oldest first, page by page."""
        every = ["waiting", "assigned", "out_for_delivery", "delivered"]
        return await self._every_page("delivery", "/api/v1/deliveries", limit=500, status=every)

    async def saga_counts(self) -> dict[str, int]:
        response = await self.http.get(f"{self.at('orders')}/api/v1/ops/sagas", params={"limit": 1})
        response.raise_for_status()
        counts: dict[str, int] = response.json()["counts"]
        return counts

    async def saga_log(self, order_id: str) -> list[str]:
        """What the order's saga did, oldest first."""
        response = await self.http.get(f"{self.at('orders')}/api/v1/ops/sagas/{order_id}")
        response.raise_for_status()
        return [entry["entry"] for entry in response.json()["log"]]

    async def notifications(self, order_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(
            f"{self.at('notifications')}/api/v1/notifications", params={"order_id": order_id, "limit": 200}
        )
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def all_orders(self) -> list[dict[str, Any]]:
        """Every order the orders API lists (newest first), page by page."""
        return await self._every_page("orders", "/api/v1/orders", limit=100)

    async def all_notifications(self) -> list[dict[str, Any]]:
        """Every notification sent (newest first), page by page."""
        return await self._every_page("notifications", "/api/v1/notifications", limit=200)

    async def _every_page(self, service: str, path: str, *, limit: int, **query: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": limit, **query}
        while True:
            response = await self.http.get(f"{self.at(service)}{path}", params=params)
            response.raise_for_status()
            page = response.json()
            found += page["items"]
            if not page["next_cursor"]:
                return found
            params["cursor"] = page["next_cursor"]

    async def audit(self, message_type: str) -> list[dict[str, Any]]:
        """Every audit entry of one message type, in the order they were recorded."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"type": message_type, "limit": 1000}
        while True:
            response = await self.http.get(f"{self.at('audit')}/api/v1/ops/audit", params=params)
            response.raise_for_status()
            page = response.json()
            found += page["items"]
            if page["next_after"] is None:
                return found
            params["after"] = page["next_after"]

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every service's dead letters (up to 500, newest first), as the gateway merges them;
        a service that did not answer fails the call (its dead letters would go unseen)."""
        response = await self.http.get(f"{self.system.url('gateway')}/api/v1/ops/dlq", params={"limit": 500})
        response.raise_for_status()
        found = response.json()
        if found["missing"]:
            raise AssertionError(f"no answer about dead letters from {found['missing']}")
        items: list[dict[str, Any]] = found["items"]
        return items
