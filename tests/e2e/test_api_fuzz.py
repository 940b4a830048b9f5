"""Schemathesis against the running system's one OpenAPI document, through the gateway, signed
in: generated requests (valid and invalid) on every operation; no answer is a 5xx and every
answer matches the schema the document gives for it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import start_system

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


async def schemathesis(gateway: str, token: str, report: Path) -> tuple[int, str]:
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
        code, output = await schemathesis(gateway, await sign_in(gateway, who), tmp_path / "report")
    finally:
        system.stop()
    assert code == 0, output[-6000:]
    assert "API operations" in output or "operations" in output, output[-2000:]
