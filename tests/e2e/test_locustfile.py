"""The repository's locustfile.py, run headless by Locust for a few seconds against the whole
system as `make run` starts it: customers sign up, browse, order, watch their orders end and
cancel some; orders were placed, every one the system acknowledged exists, and Locust counted
no failed request."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.conftest import serving
from tests.e2e.system import Shop

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


async def locust(host: str, workdir: Path, *, users: int, seconds: int) -> tuple[int, str, list[dict[str, Any]]]:
    """Locust's exit code, its output and its statistics (one entry per request name)."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "locust"),
        "-f",
        str(ROOT / "locustfile.py"),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{seconds}s",
        "--stop-timeout",
        "60",  # the orders under way are watched to their end
        "--host",
        host,
        "--json",
        "--only-summary",
        cwd=workdir,
        env={**os.environ, "LOCUST_WATCH_S": "60"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, err.decode(errors="replace"), orjson.loads(out)


@pytest.mark.timeout(600)
async def test_the_locustfile_places_orders_and_no_request_fails(tmp_path: Path) -> None:
    async with serving(tmp_path, {"RATE_LIMIT_PER_IP": "100000"}) as system:
        code, output, stats = await locust(system.url("gateway"), tmp_path, users=6, seconds=15)
        by_name = {(s["method"], s["name"]): s for s in stats}
        assert code == 0, output[-3000:]
        failed = {name: s["num_failures"] for name, s in by_name.items() if s["num_failures"]}
        assert not failed, (failed, output[-3000:])
        placed = by_name[("POST", "/api/v1/orders")]["num_requests"]
        assert placed >= 3, by_name.keys()
        for route in (("GET", "/api/v1/menu"), ("POST", "/api/v1/auth/login"), ("GET", "/api/v1/orders/[id]")):
            assert by_name[route]["num_requests"] >= 1, route
        shop = Shop(system)
        try:
            orders = [o for o in await shop.all_orders() if o["delivery_address"].endswith("Locust Lane")]
        finally:
            await shop.close()
        assert len(orders) == placed
        assert all(o["status"] in ("delivered", "cancelled") for o in orders), [o["status"] for o in orders]
