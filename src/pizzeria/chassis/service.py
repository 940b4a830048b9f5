"""Assembles a service process in two calls a composition root makes:

    runtime = open_runtime(NAME, settings)          # logging, database, broker, relay, loops
    ...build the service's parts, subscribe its consumer groups, add its loops...
    return service_app(runtime, parts, ...)         # the HTTP app with one ordered lifespan

Routes reach the parts through `chassis.deps.parts_dependency`: one typed seam per service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from pizzeria.chassis import faults, ops
from pizzeria.chassis.access import TokenEpochCache, access_handlers
from pizzeria.chassis.addresses import replica_number, url_for
from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.contracts.topology import CONSUMER_GROUPS, access_group
from pizzeria.kit import failpoints
from pizzeria.kit.db import Database
from pizzeria.kit.http import http_app
from pizzeria.kit.logging import configure_logging, get_logger
from pizzeria.kit.metrics import db_pool_connections
from pizzeria.kit.migrations import MigrationSet, applied_by_parent, upgrade
from pizzeria.kit.settings import Settings
from pizzeria.messaging.connect import broker_from_settings
from pizzeria.messaging.tables import MESSAGING_MIGRATIONS

log = get_logger(__name__)

Hook = Callable[[], Awaitable[None]]


def refuse_unsafe_production(
    name: str, settings: Settings, *, messaging: bool = True, shared_state: bool = False
) -> None:
    """Production mode never falls back to the embedded stores or the public secret, and no
    mode listens beyond loopback with the public secret."""
    exposed = settings.exposure_problems()
    if exposed:
        raise SystemExit(f"refusing to start {name}: " + "; ".join(exposed))
    problems = settings.production_problems(name, messaging=messaging, shared_state=shared_state)
    if problems:
        raise SystemExit("refusing to start in production mode: " + "; ".join(problems))


def open_runtime(name: str, settings: Settings, *, shared_state: bool = False) -> ServiceRuntime:
    """The runtime of service `name`: refuses an unsafe production configuration, configures
    logging and failpoints, and opens (lazily) its database and broker. `shared_state`: the
    service keeps caches its replicas must share (Redis in production)."""
    refuse_unsafe_production(name, settings, shared_state=shared_state)
    configure_logging(name, settings.log_level, settings.log_format)
    failpoints.configure(settings.failpoints, service=name, state_dir=settings.var_dir / "failpoints" / name)
    db = Database(settings.database_url_for(name), pool_size=settings.db_pool_size)
    return ServiceRuntime(service=name, settings=settings, db=db, broker=broker_from_settings(settings, client_id=name))


def service_app(
    runtime: ServiceRuntime,
    parts: object,
    *,
    migrations: MigrationSet,
    routers: Sequence[APIRouter],
    on_start: Hook | None = None,
    on_stop: Hook | None = None,
    description: str = "",
) -> FastAPI:
    """The service's HTTP app. Its lifespan migrates (unless `pizzeria up` just did), runs
    `on_start` (seed data), starts the runtime, and on the way down runs `on_stop`, stops the
    runtime and closes the database."""
    db = runtime.db
    settings = runtime.settings
    epochs = TokenEpochCache(db)
    group = access_group(runtime.service)
    if group in CONSUMER_GROUPS:
        runtime.subscribe(group, access_handlers(epochs), topics=CONSUMER_GROUPS[group])
        runtime.add_look(epochs.look)
    switches = faults.FaultSwitches(runtime)
    runtime.add_look(switches.look)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not applied_by_parent():
            await upgrade(db.url, [MESSAGING_MIGRATIONS, migrations])
        if on_start is not None:
            await on_start()
        await switches.refresh()  # a process restarted while a switch is on starts with it on
        await runtime.start()
        replica = replica_number()
        log.info("service started", url=url_for(settings, runtime.service, replica), replica=replica)
        try:
            yield
        finally:
            if on_stop is not None:
                await on_stop()
            await runtime.stop()
            await db.dispose()
            log.info("service stopped")

    async def database_ready() -> None:
        await db.ping()
        for state, value in db.pool_status().items():
            db_pool_connections.labels(state).set(value)

    async def workers_ready() -> bool:
        return runtime.healthy()

    async def consumers_ready() -> None:
        runtime.consumers_moving()

    app = http_app(
        service=runtime.service,
        settings=settings,
        routers=[*routers, ops.router, faults.router],
        lifespan=lifespan,
        ready_checks={
            "database": database_ready,
            "broker": runtime.broker.ping,
            "workers": workers_ready,
            "consumers": consumers_ready,
        },
        description=description,
    )
    app.state.runtime = runtime
    app.state.parts = parts
    app.state.faults = switches
    if group in CONSUMER_GROUPS:
        app.state.token_epochs = epochs
    return app
