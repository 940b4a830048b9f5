"""`pizzeria demo <scenario>` run as a person runs it, against the whole system started with
`pizzeria up` (embedded stack, autopilots on): each scenario turns its fault on through the
gateway's switches, narrates what the system does about it with the time of each step, links the
section of docs/patterns.md that explains it, ends with the invariants holding (exit status 0)
and leaves every switch off."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from pizzeria.demo import SCENARIOS
from pizzeria.registry import SERVICES
from tests.e2e.conftest import serving
from tests.e2e.system import System
from tests.support.tokens import bearer
from tests.unit.test_patterns_doc import sections

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

#: The orders a scenario places finish within seconds once nothing holds them up.
ENV = {"CONSUMER_MAX_ATTEMPTS": "3", "PAYMENT_BREAKER_RESET_S": "2"}
TIMED_LINE = re.compile(r"^\[\s*\d+\.\d+s\] ")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    async with serving(Path(tmp_path_factory.mktemp("demo")), ENV) as running:
        yield running


async def demo(system: System, scenario: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pizzeria",
        "demo",
        scenario,
        "--url",
        system.url("gateway"),
        env=system.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 400)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def switches_are_off(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.url("gateway"), headers=bearer("t", "admin", env=system.env)) as http:
        lab = (await http.get("/api/v1/ops/faults")).json()
    assert lab["provider"]["down"] is False
    for service in lab["services"]:
        assert service["reachable"], service
        assert service["broker_paused"] is False, service
        assert not any(service["consumers_failing"].values()), service


@pytest.mark.parametrize(
    ("scenario", "told"),
    [
        (
            "outbox",
            [
                rf"broker paused in {sum(1 for s in SERVICES if s.has_database)} services",
                r"order \w{8} accepted \(\w+\) while the broker is paused",
                r"the orders service's outbox holds \d+ events",
                r"orders killed \(process \d+",
                # killed before it came in: refused until orders is back, then placed once
                r"accepted after ([2-9]|\d{2,}) attempts in \d+\.\d s, each with the same idempotency key",
                r"orders is back as process \d+; its outbox kept \d+ events through the crash",
                r"the orders outbox drained in \d+\.\d s",
            ],
        ),
        (
            "breaker",
            [
                r"payment provider down",
                r"circuit breaker to the provider is open",
                r"the breaker is closed again",
            ],
        ),
        (
            "dead-letter",
            [
                r"the delivery consumer now fails on every message",
                r"dead letter \w{8}: \S*ScheduleDelivery\S* failed 3 times",
                r"dead letter replayed",
                r"order \w{8} is delivered",
            ],
        ),
    ],
)
async def test_a_scenario_narrates_the_fault_and_ends_with_the_invariants_holding(
    system: System, scenario: str, told: list[str]
) -> None:
    status, output = await demo(system, scenario)
    assert status == 0, output
    lines = output.splitlines()
    section = SCENARIOS[scenario].section
    assert f"docs/patterns.md#{section}" in lines[1], output
    assert section in sections(), f"docs/patterns.md has no section #{section}"
    timed = [line for line in lines if TIMED_LINE.match(line)]
    assert len(timed) >= len(told) + 2, output
    for expected in told:
        assert any(re.search(expected, line) for line in timed), f"{expected!r} not told:\n{output}"
    invariants = (
        r"invariants: \d+ orders accepted, \d+ finished, \d+ under way, 0 lost; 0 charged twice; stock conserved"
    )
    assert re.search(invariants, output), output
    assert timed[-1].endswith(f"done: everything held. Read how: docs/patterns.md#{section}"), output
    await switches_are_off(system)


async def test_a_demo_against_nothing_says_so_and_exits_2(tmp_path: Path) -> None:
    nowhere = System(tmp_path)  # never started: nothing listens on its ports
    status, output = await demo(nowhere, "outbox")
    assert status == 2, output
    assert "start the system with `make run`" in output
