"""Nothing inside a process is open to anonymous callers beyond OPS_NETWORKS (loopback by
default): `/metrics`, the details of `/health` and `/ready` (upstream URLs, errors), and the
payment provider simulator's admin API answer them 403 or nothing but the status; an operator
on loopback or with an administrator's token sees everything. And no process listens beyond
loopback with the public development secret."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from pizzeria.kit.settings import DEVELOPMENT_JWT_SECRET, Settings
from pizzeria.registry import SERVICES
from tests.integration.services import embedded_settings
from tests.support.asgi import raw_request
from tests.support.tokens import bearer

OUTSIDER = ("203.0.113.50", 50000)
LOOPBACK = ("127.0.0.1", 50000)


@pytest.fixture(params=[s.name for s in SERVICES])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> FastAPI:
    service = next(s for s in SERVICES if s.name == request.param)
    built: FastAPI = service.load().create_app(embedded_settings(tmp_path))
    return built


def header(token: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", token["Authorization"].encode())]


async def test_metrics_and_health_details_are_for_operators_only(app: FastAPI) -> None:
    admin = header(bearer("admin-1", "admin"))
    customer = header(bearer("cust-1", "customer"))

    for headers in ([], customer, [(b"x-forwarded-for", b"127.0.0.1")]):
        refused = await raw_request(app, "GET", "/metrics", headers, client=OUTSIDER)
        assert refused.status == 403, refused.body
        assert refused.headers["content-type"] == "application/problem+json"
        health = await raw_request(app, "GET", "/health", headers, client=OUTSIDER)
        assert health.status == 200
        assert set(health.json()) == {"status", "service"}, "details only for operators"

    for headers, client in (([], LOOPBACK), (admin, OUTSIDER)):
        metrics = await raw_request(app, "GET", "/metrics", headers, client=client)
        assert metrics.status == 200
        assert b"pizzeria_http_request_duration_seconds" in metrics.body
        health = await raw_request(app, "GET", "/health", headers, client=client)
        assert {"pid", "uptime_s"} <= set(health.json())


async def test_the_provider_admin_api_is_for_operators_only(tmp_path: Path) -> None:
    [provider] = [s for s in SERVICES if s.name == "provider"]
    app = provider.load().create_app(embedded_settings(tmp_path))
    body = b'{"down": false}'
    json = [(b"content-type", b"application/json")]
    refused = await raw_request(app, "PUT", "/v1/admin/outage", json, body, client=OUTSIDER)
    assert refused.status == 403
    assert (await raw_request(app, "PUT", "/v1/admin/outage", json, body, client=LOOPBACK)).status == 200
    admin = header(bearer("admin-1", "admin"))
    assert (await raw_request(app, "PUT", "/v1/admin/outage", json + admin, body, client=OUTSIDER)).status == 200


HOSTS = st.one_of(
    st.sampled_from(["127.0.0.1", "localhost", "::1", "127.8.9.10", "[::1]"]).map(lambda h: (h, True)),
    st.sampled_from(["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.com", "pizzeria"]).map(lambda h: (h, False)),
    st.ip_addresses().map(lambda ip: (str(ip), ip.is_loopback)),
)


@given(host=HOSTS, secret=st.one_of(st.just(DEVELOPMENT_JWT_SECRET), st.text(min_size=32, max_size=40)))
def test_the_development_secret_is_only_accepted_on_loopback(host: tuple[str, bool], secret: str) -> None:
    name, loopback = host
    problems = Settings(PIZZERIA_HOST=name, JWT_SECRET=secret).exposure_problems()  # type: ignore[call-arg]
    assert bool(problems) == (secret == DEVELOPMENT_JWT_SECRET and not loopback)


@pytest.mark.parametrize("command", [["serve", "catalog"], ["serve", "provider"], ["up"]])
async def test_pizzeria_refuses_to_listen_beyond_loopback_with_the_development_secret(
    tmp_path: Path, command: list[str]
) -> None:
    env = {"PIZZERIA_HOST": "0.0.0.0", "PIZZERIA_VAR_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pizzeria",
        *command,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode != 0
    assert b"refusing to start" in err, err
    assert b"JWT_SECRET" in err, err
    assert not (tmp_path / "log").exists(), "nothing was started"
