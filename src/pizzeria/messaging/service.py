"""Assembles a service process: logging, database, migrations, broker, messaging runtime and
the HTTP app, with one lifespan that starts and stops them in order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request

from pizzeria.kit import failpoints
from pizzeria.kit.app import create_app
from pizzeria.kit.db import Database
from pizzeria.kit.logging import configure_logging, get_logger
from pizzeria.kit.metrics import db_pool_connections
from pizzeria.kit.migrations import MigrationSet, upgrade
from pizzeria.kit.settings import Settings
from pizzeria.messaging.runtime import MESSAGING_MIGRATIONS, MessagingRuntime, broker_from_settings

log = get_logger(__name__)

Hook = Callable[[MessagingRuntime], Awaitable[None]]


def build_service_app(
    *,
    name: str,
    settings: Settings,
    migrations: MigrationSet,
    routers: Sequence[APIRouter],
    configure: Callable[[MessagingRuntime], None] | None = None,
    on_start: Hook | None = None,
    on_stop: Hook | None = None,
    description: str = "",
) -> FastAPI:
    """A service app. `configure` subscribes consumer groups and adds workers; `on_start` runs
    after migrations and before any worker or consumer starts (seed data)."""
    problems = settings.production_problems(name)
    if problems:
        raise SystemExit("refusing to start in production mode: " + "; ".join(problems))
    configure_logging(name, settings.log_level, settings.log_format)
    failpoints.configure(settings.failpoints, service=name, state_dir=settings.var_dir / "failpoints" / name)
    db = Database(settings.database_url_for(name), pool_size=settings.db_pool_size)
    runtime = MessagingRuntime(service=name, settings=settings, db=db,
                               broker=broker_from_settings(settings, client_id=name))
    if configure is not None:
        configure(runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await upgrade(db.url, [MESSAGING_MIGRATIONS, migrations])
        if on_start is not None:
            await on_start(runtime)
        await runtime.start()
        log.info("service started", url=settings.url_for(name))
        try:
            yield
        finally:
            if on_stop is not None:
                await on_stop(runtime)
            await runtime.stop()
            await db.dispose()
            log.info("service stopped")

    async def database_ready() -> None:
        await db.ping()
        for state, value in db.pool_status().items():
            db_pool_connections.labels(state).set(value)

    async def workers_ready() -> bool:
        return runtime.healthy()

    from pizzeria.messaging import ops  # its routes depend on this module's `Runtime`

    app = create_app(
        service=name,
        settings=settings,
        routers=[*routers, ops.router],
        lifespan=lifespan,
        ready_checks={"database": database_ready, "broker": runtime.broker.ping, "workers": workers_ready},
        description=description,
    )
    app.state.runtime = runtime
    app.state.settings = settings
    return app


async def _runtime(request: Request) -> MessagingRuntime:
    # async on purpose: FastAPI runs sync dependencies in a thread pool, a hop per request.
    runtime: MessagingRuntime = request.app.state.runtime
    return runtime


#: Route dependency: the service's messaging runtime (units of work, database).
Runtime = Annotated[MessagingRuntime, Depends(_runtime)]


def state(request: Request, name: str) -> Any:
    return getattr(request.app.state, name)
