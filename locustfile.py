"""The storefront's load as its customers make it, for Locust: each simulated customer signs up
(or, with LOCUST_DEMO_ACCOUNTS=1, signs in as one of the demo customers), then browses the menu,
places orders (a line or three, a good card or now and then a declined one), watches each order
until it ends, cancels some of them, and looks at their past orders.

    make run                                      # the system, embedded, on :8000
    .venv/bin/locust --host http://127.0.0.1:8000 # then the web UI on http://127.0.0.1:8089
    .venv/bin/locust --headless -u 20 -r 2 -t 2m --host http://127.0.0.1:8000

The gateway's rate limits (RATE_LIMIT_PER_IP, 1200 a minute by default) count every simulated
customer as one address: raise them for more than a few dozen users. Requests are named by
route (`/api/v1/orders/[id]`), so Locust's table has one row per route. A refused order (a 4xx)
or a watch that sees no end within LOCUST_WATCH_S seconds is a failure in Locust's statistics.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from typing import Any

from locust import HttpUser, between, task

DEMO_ACCOUNTS = (("alice@pizzeria.example", "alice-pizza-1"), ("bob@pizzeria.example", "bob-pizza-12"))
CARDS = ("tok_visa",) * 9 + ("tok_declined",)
CANCEL_SHARE = float(os.environ.get("LOCUST_CANCEL_SHARE", "0.15"))
WATCH_S = float(os.environ.get("LOCUST_WATCH_S", "120"))
TERMINAL = {"delivered", "cancelled"}


class Customer(HttpUser):
    """One customer of the storefront."""

    wait_time = between(1, 4)

    def on_start(self) -> None:
        if os.environ.get("LOCUST_DEMO_ACCOUNTS") == "1":
            email, password = random.choice(DEMO_ACCOUNTS)
        else:
            email, password = f"locust-{uuid.uuid4().hex[:16]}@example.com", f"pw-{uuid.uuid4().hex}"
            self.client.post(
                "/api/v1/auth/register", json={"email": email, "password": password, "name": "Locust Customer"}
            )
        answer = self.client.post("/api/v1/auth/login", json={"email": email, "password": password})
        self.auth = {"Authorization": f"Bearer {answer.json()['access_token']}"} if answer.ok else {}
        self.menu: list[dict[str, Any]] = []

    @task(5)
    def browse_the_menu(self) -> None:
        answer = self.client.get("/api/v1/menu")
        if answer.ok:
            self.menu = [item for item in answer.json()["items"] if item.get("available", True)]

    @task(3)
    def order_and_watch(self) -> None:
        if not self.menu:
            self.browse_the_menu()
        if not self.menu or not self.auth:
            return
        lines = [
            {"menu_item_id": item["id"], "size": random.choice(item["sizes"])["size"], "quantity": random.randint(1, 3)}
            for item in random.sample(self.menu, k=min(len(self.menu), random.randint(1, 3)))
        ]
        body = {
            "items": lines,
            "delivery_address": f"{random.randint(1, 99)} Locust Lane",
            "payment": {"token": random.choice(CARDS)},
        }
        placed = self.client.post(
            "/api/v1/orders", json=body, headers={**self.auth, "Idempotency-Key": str(uuid.uuid4())}
        )
        if placed.status_code != 202:
            return
        order_id = placed.json()["id"]
        if random.random() < CANCEL_SHARE:
            time.sleep(random.random())  # a customer who changes their mind, at any stage
            with self.client.post(
                f"/api/v1/orders/{order_id}/cancel",
                headers=self.auth,
                name="/api/v1/orders/[id]/cancel",
                catch_response=True,
            ) as answer:
                if answer.status_code in (202, 409):  # 409: the kitchen started already
                    answer.success()
        self.watch(order_id)

    def watch(self, order_id: str) -> None:
        """Look at the order every second or so until it ends, as its page does."""
        deadline = time.monotonic() + WATCH_S
        while True:
            with self.client.get(
                f"/api/v1/orders/{order_id}", headers=self.auth, name="/api/v1/orders/[id]", catch_response=True
            ) as answer:
                if answer.ok and answer.json()["status"] in TERMINAL:
                    return
                if time.monotonic() > deadline:
                    answer.failure(f"order {order_id} did not end within {WATCH_S:g} s")
                    return
            time.sleep(1.0)

    @task(1)
    def past_orders(self) -> None:
        if self.auth:
            self.client.get("/api/v1/orders", params={"limit": 20}, headers=self.auth)
