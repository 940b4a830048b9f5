"""Catalog composition root."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from pizzeria.kit.cache import build_cache
from pizzeria.kit.migrations import MigrationSet
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.messaging.runtime import MessagingRuntime
from pizzeria.messaging.service import build_service_app
from pizzeria.services.catalog import handlers
from pizzeria.services.catalog.api import router
from pizzeria.services.catalog.tables import metadata

NAME = "catalog"
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)


async def _seed(runtime: MessagingRuntime) -> None:
    await handlers.seed_demo_menu(runtime.uow())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    cache = build_cache("menu", redis_url=settings.redis_url, ttl_s=settings.cache_ttl_s,
                        tombstone_s=settings.cache_tombstone_s, key_prefix=settings.redis_key_prefix)

    async def _close(_: MessagingRuntime) -> None:
        await cache.close()

    app = build_service_app(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        routers=[router],
        on_start=_seed,
        on_stop=_close,
        description="The menu: items, sizes, prices and recipes.",
    )
    app.state.menu_cache = cache
    return app
