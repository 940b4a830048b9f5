"""The identity service in-process on SQLite or PostgreSQL, with clients that can come from any
client address (the throttle counts per IP) and a clock the tests can move."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from fastapi import FastAPI

from pizzeria.kit.clock import utcnow
from pizzeria.kit.settings import Settings
from pizzeria.messaging.tables import outbox
from pizzeria.services.identity import passwords, sessions
from tests.integration.services import embedded_settings, running
from tests.support.postgres import create_database, drop_database

#: Argon2 at its production cost is not what these tests test; a cheap profile keeps them fast.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

DEMO = {
    "customer": ("alice@pizzeria.example", "alice-pizza-1"),
    "customer2": ("bob@pizzeria.example", "bob-pizza-12"),
    "staff": ("chef@pizzeria.example", "chef-pizza-1"),
    "courier": ("rider@pizzeria.example", "rider-pizza-1"),
    "admin": ("admin@pizzeria.example", "admin-pizza-1"),
}


class Clock:
    """The time the sign-in code sees: real time until frozen, then moved by hand."""

    def __init__(self) -> None:
        self.frozen: datetime | None = None

    def __call__(self) -> datetime:
        return self.frozen or utcnow()

    def freeze(self) -> None:
        self.frozen = utcnow()

    def advance(self, seconds: float) -> None:
        assert self.frozen is not None, "freeze the clock first"
        self.frozen += timedelta(seconds=seconds)


@dataclass
class Identity:
    """A running identity service and ways to talk to it."""

    app: FastAPI
    http: httpx.AsyncClient
    settings: Settings
    clock: Clock
    _clients: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def from_ip(self, ip: str) -> httpx.AsyncClient:
        """A client whose requests come from `ip`."""
        transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))
        return await self._clients.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://identity")
        )

    async def login(self, email: str, password: str, client: httpx.AsyncClient | None = None) -> httpx.Response:
        return await (client or self.http).post("/api/v1/auth/login", json={"email": email, "password": password})

    async def tokens(self, who: str) -> dict[str, Any]:
        """Sign a demo account in (`customer`, `customer2`, `staff`, `courier`, `admin`)."""
        response = await self.login(*DEMO[who])
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def bearer(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {(await self.tokens(who))['access_token']}"}

    async def outbox(self) -> list[dict[str, Any]]:
        """Every message identity wrote to its outbox: type, key and data."""
        async with self.app.state.runtime.db.read() as conn:
            rows = (await conn.execute(sa.select(outbox).order_by(outbox.c.seq))).all()
        return [
            {
                "type": orjson.loads(r.headers)["ce_type"],
                "topic": r.topic,
                "key": r.key,
                "data": orjson.loads(r.payload),
            }
            for r in rows
        ]


@contextlib.asynccontextmanager
async def identity_settings(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: str
) -> AsyncIterator[Settings]:
    """Settings of an identity on `backend` (sqlite | postgres); the database is dropped after."""
    monkeypatch.setattr(passwords, "default_hasher", lambda: CHEAP_HASHER)
    url = None
    if backend == "postgres":
        url = await create_database("pz_identity")
        monkeypatch.setenv("IDENTITY_DATABASE_URL", url)
    try:
        yield embedded_settings(tmp_path, **extra)
    finally:
        if url is not None:
            await drop_database(url)


@contextlib.asynccontextmanager
async def running_identity(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Identity]:
    clock = Clock()
    monkeypatch.setattr(sessions, "utcnow", clock)
    async with running("identity", settings) as (app, client):
        identity = Identity(app=app, http=client, settings=settings, clock=clock)
        async with identity._clients:
            yield identity
