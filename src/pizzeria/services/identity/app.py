"""Identity composition root."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from pizzeria.kit.auth import TokenIssuer
from pizzeria.kit.logging import get_logger
from pizzeria.kit.migrations import MigrationSet
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.messaging.runtime import MessagingRuntime
from pizzeria.messaging.service import build_service_app
from pizzeria.services.identity import handlers, sessions
from pizzeria.services.identity.api import auth, users
from pizzeria.services.identity.passwords import Passwords
from pizzeria.services.identity.sessions import Credentials
from pizzeria.services.identity.tables import metadata

NAME = "identity"
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)

log = get_logger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    credentials = Credentials(
        passwords=Passwords(),
        tokens=TokenIssuer.from_settings(settings),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_s),
    )

    async def on_start(runtime: MessagingRuntime) -> None:
        await credentials.passwords.dummy_hash()  # so the first unknown-email sign-in is not slower
        if settings.mode == "production":
            log.info("demo accounts not seeded: production mode")
            return
        await handlers.seed_demo_accounts(runtime.uow(), credentials.passwords)

    def configure(runtime: MessagingRuntime) -> None:
        runtime.add_worker(lambda: sessions.prune_forever(runtime.db), "identity-pruner")

    app = build_service_app(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        routers=[auth, users],
        configure=configure,
        on_start=on_start,
        description="Identity: accounts, roles, sign-in with rotating refresh tokens; issues access tokens.",
    )
    app.state.credentials = credentials
    return app
