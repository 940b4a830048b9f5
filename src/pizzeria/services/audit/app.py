"""Audit composition root: one consumer group reading every topic into the audit log and, in the
same transactions, the analytics read model."""

from __future__ import annotations

from fastapi import FastAPI

from pizzeria.chassis.service import open_runtime, service_app
from pizzeria.contracts.topology import CONSUMER_GROUPS
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.services.audit.api import router
from pizzeria.services.audit.handlers import build_handlers
from pizzeria.services.audit.tables import MIGRATIONS

NAME = "audit"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    runtime = open_runtime(NAME, settings)
    runtime.subscribe(NAME, build_handlers(), topics=CONSUMER_GROUPS[NAME])
    return service_app(
        runtime,
        None,
        migrations=MIGRATIONS,
        routers=[router],
        description="Audit and analytics: every message in an append-only log; business figures from events.",
    )
