"""Fixtures of the whole-system tests: the system on the embedded stack, and on PostgreSQL +
Apache Kafka, each started with `pizzeria up` as a user would."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pizzeria.registry import SERVICES
from tests.e2e.scenario import AUTOPILOT, wait_for_menu_sync
from tests.e2e.system import Shop, System
from tests.support.kafka import KafkaCluster
from tests.support.postgres import ADMIN_DSN, create_database, drop_database


async def production_env(kafka: KafkaCluster, *, admin_dsn: str = ADMIN_DSN) -> tuple[dict[str, str], list[str]]:
    """Environment for the production stack: a fresh PostgreSQL database per service (on the
    shared test server, or the one `admin_dsn` names), Kafka."""
    env, databases = await _service_databases(admin_dsn)
    # Each service logs in as its own user and may do only what its ACLs allow, as in production:
    # a permission the topology forgot stops the flow that needs it.
    env.update({"PIZZERIA_MODE": "production", **kafka.environment()})
    return env, databases


async def sqllog_postgres_env(*, admin_dsn: str = ADMIN_DSN) -> tuple[dict[str, str], list[str]]:
    """Environment for PostgreSQL per service with the embedded broker, the sqllog, kept in a
    PostgreSQL database of its own (`BROKER_URL=sqllog+postgresql://...`). Production mode
    insists on Kafka, so this runs in embedded mode; the databases, caches, rate limits and
    signing secret are those of the production stack: only the broker and the mode's refusals
    differ."""
    env, databases = await _service_databases(admin_dsn)
    log = await create_database("pz_sqllog", admin_dsn=admin_dsn)
    env["BROKER_URL"] = f"sqllog+{log}"
    return env, [*databases, log]


async def _service_databases(admin_dsn: str) -> tuple[dict[str, str], list[str]]:
    """What both PostgreSQL stacks share: a fresh PostgreSQL database per service, a signing
    secret of their own, caches and rate limits in Redis (under keys no other system under test
    uses); the environment, and the databases made."""
    urls = {s.name: await create_database(f"pz_{s.name}", admin_dsn=admin_dsn) for s in SERVICES if s.has_database}
    env = {f"{name.upper()}_DATABASE_URL": url for name, url in urls.items()}
    # Production mode refuses the public development signing secret.
    env["JWT_SECRET"] = secrets.token_urlsafe(48)
    env.update({"REDIS_URL": "redis://127.0.0.1:6379/14", "REDIS_KEY_PREFIX": f"pz-{secrets.token_hex(6)}"})
    return env, list(urls.values())


@pytest.fixture(params=["embedded", "postgres+kafka"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """Which stack to run on, as the environment that selects it."""
    if request.param == "embedded":
        yield request.param, {}
        return
    env, databases = await production_env(request.getfixturevalue("kafka_direct"))
    try:
        yield request.param, env
    finally:
        for url in databases:
            await drop_database(url)


async def start_system(tmp_path: Path, env: dict[str, str]) -> System:
    system = System(tmp_path, {**AUTOPILOT, **env})
    try:
        await system.start()
    except BaseException:
        system.stop()
        raise
    return system


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[System]:
    """The system started, with orders knowing the menu (so the first order is accepted), and
    stopped afterwards: what a module of tests against one running system shares."""
    running = await start_system(tmp_path, env)
    shop = Shop(running)
    try:
        await wait_for_menu_sync(shop, await shop.menu())
        yield running
    finally:
        await shop.close()
        running.stop()


@pytest.fixture
async def shop_factory() -> AsyncIterator[list[Shop]]:
    shops: list[Shop] = []
    yield shops
    for shop in shops:
        await shop.close()
