"""Schemathesis against the running system's one OpenAPI document, through the gateway, signed
in: generated requests (valid and invalid) on every operation; and sequences of the order flow
(Schemathesis' state machine over the links it infers: place, read, list, cancel), after which
the customer has exactly the orders answered 202, each ended, and the next order is delivered.
No answer is a 5xx, every answer matches the schema the document gives for it, and every 4xx is
a problem that says what is wrong."""

from __future__ import annotations

import asyncio
import random
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import stateful
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.e2e.conftest import start_system
from tests.e2e.scenario import MANY_ORDERS, TERMINAL, check_invariants, holds_within, order_body, wait_for_menu_sync
from tests.e2e.system import Shop

pytestmark = pytest.mark.e2e

ENV = {"RATE_LIMIT_PER_IP": "1000000", "RATE_LIMIT_PER_USER": "1000000"}
ACCOUNTS = {
    "customer": ("alice@pizzeria.example", "alice-pizza-1"),
    "admin": ("admin@pizzeria.example", "admin-pizza-1"),
}


async def sign_in(gateway: str, who: str) -> str:
    email, password = ACCOUNTS[who]
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token


async def schemathesis_cli(gateway: str, token: str, report: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{gateway}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "25",
        "--seed",
        "20261122",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-dir",
        str(report),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


@pytest.mark.parametrize("who", ["customer", "admin"])
async def test_generated_requests_never_get_a_5xx_or_an_answer_off_schema(tmp_path: Path, who: str) -> None:
    system = await start_system(tmp_path, ENV)
    try:
        gateway = system.url("gateway")
        code, output = await schemathesis_cli(gateway, await sign_in(gateway, who), tmp_path / "report")
    finally:
        system.stop()
    assert code == 0, output[-6000:]
    assert "API operations" in output or "operations" in output, output[-2000:]


ORDER_FLOW = r"^/api/v1/orders(/\{order_id\}(/cancel)?)?$"  # place, list, read and cancel


def problem_details(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx is an application/problem+json that says what is wrong."""
    if not 400 <= response.status_code < 500:
        return
    kind = response.headers.get("content-type", [""])[0]
    assert kind.startswith("application/problem+json"), f"{response.status_code} answered as {kind!r}"
    problem = response.json()
    assert problem.get("status") == response.status_code, problem
    assert problem.get("type"), problem
    assert problem.get("detail"), problem


def on_the_menu(body: Any, menu: list[dict[str, Any]]) -> None:
    """Most generated lines made to name a real item and size, and most cards a good one (picked
    by the generated id, so a failing sequence shrinks and replays the same); the rest stay as
    generated: unknown items and sizes, cards of no one."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        return
    for line in body["items"]:
        try:
            n = uuid.UUID(line["menu_item_id"]).int
        except (TypeError, KeyError, ValueError, AttributeError):
            continue
        if n % 4:
            item = menu[n % len(menu)]
            line["menu_item_id"] = item["id"]
            if n % 8 != 1:
                line["size"] = item["sizes"][n % len(item["sizes"])]["size"]
        if n % 2 and isinstance(body.get("payment"), dict):
            body["payment"]["token"] = "tok_visa"


def order_flow(
    gateway: str, token: str, menu: list[dict[str, Any]], placed: dict[str, str], answers: Counter[int]
) -> type[Any]:
    """Schemathesis' state machine over the order flow of the gateway's document (the links it
    infers: an order placed, then read, listed, cancelled), as the customer `token` signs in."""
    schema = schemathesis.openapi.from_url(f"{gateway}/openapi.json").include(path_regex=ORDER_FLOW)
    machine: type[Any] = schema.as_state_machine()

    class OrderFlow(machine):  # type: ignore[misc, valid-type]
        def before_call(self, case: schemathesis.Case) -> None:
            # Every step as the customer: a generated header set would otherwise stand in for the
            # call's own, token and all (requests without one: tests/e2e/test_gateway.py).
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
            if (case.method, case.path) == ("POST", "/api/v1/orders"):
                on_the_menu(case.body, menu)
                if not (case.headers or {}).get("Idempotency-Key"):  # a missing key: test_bad_input
                    case.headers = {**(case.headers or {}), "Idempotency-Key": str(uuid.uuid4())}

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": {"Authorization": f"Bearer {token}"}, "timeout": 30}

        def after_call(self, response: schemathesis.Response, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            if (case.method, case.path) == ("POST", "/api/v1/orders"):
                answers[response.status_code] += 1
                if response.status_code == 202:
                    placed[response.json()["id"]] = response.json()["status"]

        def validate_response(
            self, response: schemathesis.Response, case: schemathesis.Case, *args: Any, **kwargs: Any
        ) -> None:
            case.validate_response(
                response,
                checks=[not_a_server_error, response_schema_conformance],
                additional_checks=[problem_details],
            )

    return OrderFlow


async def test_sequences_of_the_order_flow_never_get_a_5xx_and_leave_only_accepted_orders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Schemathesis takes `delivery_address` for a reference to a "Delivery" resource that no
    # operation produces, and so never starts a sequence by placing an order: an operation that
    # creates something (a POST) may start one here, as Schemathesis' own rule has it otherwise.
    guess = stateful.is_likely_root_transition
    monkeypatch.setattr(
        stateful, "is_likely_root_transition", lambda op, *rest: op.method == "post" or guess(op, *rest)
    )
    system = await start_system(tmp_path, {**ENV, **MANY_ORDERS})
    shop = Shop(system)
    try:
        await wait_for_menu_sync(shop, await shop.menu())
        gateway = system.url("gateway")
        token = await sign_in(gateway, "customer")
        placed: dict[str, str] = {}
        answers: Counter[int] = Counter()  # the placements' answers, by status, to say why if too few
        machine = order_flow(gateway, token, await shop.menu(), placed, answers)
        settings = hypothesis.settings(
            max_examples=50,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        # Schemathesis draws parts of its requests from the global random generator as well as
        # through Hypothesis: seeded, those draws do not depend on what ran before in this
        # process. The sequences still follow the answers (an order read or cancelled before or
        # after it was paid), so they vary with the system's pace: 50 of them place 20 to 26
        # orders in runs here; 25 placed as few as 2.
        state = random.getstate()
        random.seed(20261122)
        try:
            await asyncio.to_thread(machine.run, settings=settings)
        finally:
            random.setstate(state)  # and what runs after this test draws as it would have
        assert len(placed) >= 5, f"too few orders accepted for the run to mean anything: {dict(answers)}"

        # Nothing but the orders answered 202 exists for the customer; each ends; the next is delivered.
        headers = {"Authorization": f"Bearer {token}"}

        async def only_those_placed() -> None:
            async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
                mine = (await client.get("/api/v1/orders", params={"limit": 100}, headers=headers)).json()["items"]
            assert {o["id"] for o in mine} == set(placed)
            assert all(o["status"] in TERMINAL and not o["cancel_requested"] for o in mine), mine

        await holds_within(only_those_placed, 120)
        await check_invariants(shop)
        after = await shop.place(
            order_body(await shop.menu(), "tok_visa", None, "+491511234567", random.Random(3)), customer="after"
        )

        async def delivered() -> None:
            assert (await shop.order(after["id"]))["status"] == "delivered"

        await holds_within(delivered, 120)
    finally:
        await shop.close()
        system.stop()
