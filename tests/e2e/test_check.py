"""The history checker run against the whole system as an operator runs it, through the gateway
only: `pizzeria check` from a terminal, and the fault lab's checked load from the web UI (signed
in as the demo administrator, forms posted as the page posts them, its state polled as the
page polls it). Both end with the checker's verdict: nothing lost, nothing duplicated."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import pytest_asyncio

from pizzeria.chaos.gateway import DEMO_ADMIN
from tests.e2e.conftest import serving
from tests.e2e.scenario import holds_within
from tests.e2e.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

COUNT = re.compile(r"^(?P<kind>[a-z][a-z ]+?)\s{2,}(?P<n>\d+)$", re.MULTILINE)
CELL = re.compile(r'<tr data-count="(?P<kind>[a-z ]+)"><td>[a-z ]+</td><td>(?P<n>\d+)</td></tr>')


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    async with serving(Path(tmp_path_factory.mktemp("check")), {}) as running:
        yield running


async def test_pizzeria_check_loads_the_system_and_finds_everything_held(system: System) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pizzeria",
        "check",
        "--url",
        system.url("gateway"),
        "--seconds",
        "10",
        "--rate",
        "2",
        env=system.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 400)
    told = output.decode()
    print(told)
    assert process.returncode == 0, told
    counts = {m["kind"]: int(m["n"]) for m in COUNT.finditer(told)}
    assert counts["acknowledged"] > 0, told
    assert counts["finished"] == counts["acknowledged"], told
    assert counts["lost"] == counts["duplicated"] == counts["unexplained dead letters"] == 0, told
    assert "everything held" in told


async def test_the_fault_lab_runs_a_checked_load_and_shows_its_verdict(system: System) -> None:
    gateway = system.url("gateway")
    async with httpx.AsyncClient(base_url=gateway, timeout=30, headers={"Origin": gateway}) as page:
        email, password = DEMO_ADMIN
        signed_in = await page.post("/signin", data={"email": email, "password": password})
        assert signed_in.status_code == 303, signed_in.text

        async def post(**fields: str) -> str:
            answer = await page.post("/ops/faults", data=fields)
            assert answer.status_code == 303, answer.text
            return unquote(answer.cookies.get("pz_flash", ""))

        assert "whole number" in await post(switch="checked", action="start", rate="eleven")
        assert "No checked load is running" in await post(switch="checked", action="stop")
        assert "places 2 orders a second" in await post(switch="checked", action="start", rate="2")
        assert "already under way" in await post(switch="checked", action="start", rate="2")
        lab = await page.get("/ops/faults")
        assert 'id="checked-stop"' in lab.text

        async def state() -> str:
            polled = await page.get("/ops/faults/checked", headers={"HX-Request": "true"})
            assert polled.status_code == 200
            return polled.text

        shown_last = ""

        async def until(shown: str, timeout: float) -> str:
            async def showing() -> None:
                nonlocal shown_last
                shown_last = await state()
                assert shown in shown_last, f"{shown!r} never shown:\n{shown_last}"

            await holds_within(showing, timeout)
            return shown_last

        running = await until('data-phase="running"', 30)

        async def five_acknowledged() -> None:
            nonlocal running
            running = await state()
            assert int(re.search(r'id="checked-acknowledged">(\d+)<', running)[1]) >= 5, running  # type: ignore[index]

        await holds_within(five_acknowledged, 60)
        assert "Stop and check" in running  # the panel, polled on its own while the run is under way

        assert "left to end" in await post(switch="checked", action="stop")
        verdict = await until('id="checked-verdict"', 400)
        counts = {m["kind"]: int(m["n"]) for m in CELL.finditer(verdict)}
        assert counts["acknowledged"] >= 5, verdict
        assert counts["lost"] == counts["duplicated"] == 0, verdict
        assert "Everything held." in verdict, verdict
        assert 'data-phase="done"' in verdict
        assert 'id="checked-start"' in verdict  # the polled panel itself offers another run
        again = await page.get("/ops/faults")
        assert 'id="checked-start"' in again.text  # another may be started
