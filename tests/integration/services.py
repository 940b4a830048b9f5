"""Run service apps in-process on the embedded stack (SQLite + SQL-log broker in a temp dir),
with their real lifespan: migrations, relay and consumers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from pizzeria.contracts.topology import all_topics
from pizzeria.kit.settings import Settings
from pizzeria.messaging.broker import Broker, BrokerConsumer
from pizzeria.messaging.connect import broker_from_settings
from pizzeria.messaging.topics import topic_specs
from pizzeria.registry import entry
from tests.support.postgres import create_database, drop_database


def embedded_settings(var_dir: Path, **extra: str) -> Settings:
    return Settings(PIZZERIA_VAR_DIR=str(var_dir), SQLLOG_POLL_INTERVAL_MS="10", **extra)  # type: ignore[call-arg]


async def create_topics(settings: Settings) -> None:
    broker = broker_from_settings(settings)
    await broker.start()
    try:
        await broker.create_topics(topic_specs(all_topics(), partitions=settings.topic_partitions))
    finally:
        await broker.close()


@contextlib.asynccontextmanager
async def running(
    service: str,
    settings: Settings,
    *,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The service app with its lifespan entered, and an HTTP client bound to it (sending
    `headers`, e.g. a caller's token, with every request)."""
    await create_topics(settings)
    app: FastAPI = entry(service).load().create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{service}", headers=headers) as client:
            yield app, client


@contextlib.asynccontextmanager
async def running_on(
    database: str, service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads: Callable[[str], bool]
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Broker, BrokerConsumer]]:
    """`service` on SQLite or on a fresh PostgreSQL database (`database`: "sqlite" or
    "postgres"), with a test reader subscribed to the topics `reads` picks."""
    url = None
    if database == "postgres":
        url = await create_database(f"pz_{service}")
        monkeypatch.setenv(f"{service.upper()}_DATABASE_URL", url)
    settings = embedded_settings(tmp_path)
    try:
        async with running(service, settings) as (app, client):
            broker = broker_from_settings(settings, client_id="test-reader")
            await broker.start()
            consumer = broker.consumer("test-reader", [t for t in all_topics() if reads(t)])
            await consumer.start()
            try:
                yield app, client, broker, consumer
            finally:
                await consumer.close()
                await broker.close()
    finally:
        if url is not None:
            await drop_database(url)
