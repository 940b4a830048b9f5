"""Notifications composition root: the consumer that turns order events into notifications, and
the sender that sends them."""

from __future__ import annotations

from fastapi import FastAPI

from pizzeria.chassis.service import open_runtime, service_app
from pizzeria.contracts.topology import CONSUMER_GROUPS
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.services.notifications import repository
from pizzeria.services.notifications.api import router
from pizzeria.services.notifications.channels import LogSender
from pizzeria.services.notifications.domain import DEFAULT_TEMPLATES
from pizzeria.services.notifications.handlers import NotificationSender, build_events
from pizzeria.services.notifications.tables import MIGRATIONS

NAME = "notifications"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    runtime = open_runtime(NAME, settings)
    sender = NotificationSender(runtime, LogSender())
    sending = runtime.add_loop("notification-sender", sender.step, interval=1.0)
    runtime.subscribe(NAME, build_events(sending.wake), topics=CONSUMER_GROUPS[NAME])

    async def seed() -> None:
        async with runtime.db.transaction() as conn:
            await repository.seed_templates(conn, DEFAULT_TEMPLATES)

    return service_app(
        runtime,
        None,
        migrations=MIGRATIONS,
        routers=[router],
        on_start=seed,
        description="Notifications: email, SMS and push about every order status change.",
    )
