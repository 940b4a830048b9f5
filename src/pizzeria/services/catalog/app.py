"""Catalog composition root: the menu, its cache, and the demo menu seeded on a new database."""

from __future__ import annotations

from fastapi import FastAPI

from pizzeria.chassis.service import open_runtime, service_app
from pizzeria.kit.cache import build_cache
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.services.catalog import handlers
from pizzeria.services.catalog.api import router
from pizzeria.services.catalog.deps import CatalogParts
from pizzeria.services.catalog.tables import MIGRATIONS

NAME = "catalog"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    runtime = open_runtime(NAME, settings, shared_state=True)
    cache = build_cache(
        "menu",
        redis_url=settings.redis_url,
        ttl_s=settings.cache_ttl_s,
        tombstone_s=settings.cache_tombstone_s,
        key_prefix=settings.redis_key_prefix,
    )

    async def seed() -> None:
        await handlers.seed_demo_menu(runtime.uow())

    return service_app(
        runtime,
        CatalogParts(cache=cache),
        migrations=MIGRATIONS,
        routers=[router],
        on_start=seed,
        on_stop=cache.close,
        description="The menu: items, sizes, prices and recipes.",
    )
