"""Notifications composition root."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from pizzeria.contracts.topology import CONSUMER_GROUPS
from pizzeria.kit.migrations import MigrationSet
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.messaging.runtime import MessagingRuntime
from pizzeria.messaging.service import build_service_app
from pizzeria.services.notifications import repository
from pizzeria.services.notifications.api import router
from pizzeria.services.notifications.channels import LogSender
from pizzeria.services.notifications.domain import DEFAULT_TEMPLATES
from pizzeria.services.notifications.handlers import Dispatcher, build_events
from pizzeria.services.notifications.tables import metadata

NAME = "notifications"
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)


async def _seed(runtime: MessagingRuntime) -> None:
    async with runtime.db.transaction() as conn:
        await repository.seed_templates(conn, DEFAULT_TEMPLATES)


def _configure(runtime: MessagingRuntime) -> None:
    dispatcher = Dispatcher(runtime, LogSender())
    runtime.subscribe(NAME, build_events(dispatcher.wake), topics=CONSUMER_GROUPS[NAME])
    runtime.add_worker(dispatcher.run, "dispatcher")


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_service_app(
        name=NAME,
        settings=settings or get_settings(),
        migrations=MIGRATIONS,
        routers=[router],
        configure=_configure,
        on_start=_seed,
        description="Notifications: email, SMS and push about every order status change.",
    )
