"""Audit composition root: one consumer group reading every topic into the audit log."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from pizzeria.contracts.topology import CONSUMER_GROUPS
from pizzeria.kit.migrations import MigrationSet
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.messaging.runtime import MessagingRuntime
from pizzeria.messaging.service import build_service_app
from pizzeria.services.audit import analytics
from pizzeria.services.audit.api import router
from pizzeria.services.audit.handlers import build_handlers
from pizzeria.services.audit.tables import metadata

NAME = "audit"
ANALYTICS = "analytics"
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)


def _configure(runtime: MessagingRuntime) -> None:
    runtime.subscribe(NAME, build_handlers(), topics=CONSUMER_GROUPS[NAME])
    runtime.subscribe(ANALYTICS, analytics.build_handlers(), topics=CONSUMER_GROUPS[ANALYTICS])


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_service_app(
        name=NAME,
        settings=settings or get_settings(),
        migrations=MIGRATIONS,
        routers=[router],
        configure=_configure,
        description="Audit and analytics: every message in an append-only log; business figures from events.",
    )
