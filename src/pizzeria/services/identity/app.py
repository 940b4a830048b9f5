"""Identity composition root: accounts, credentials (password hashing and token issuing), the
pruner of stale sign-in state, and the demo accounts in embedded mode."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from fastapi import FastAPI

from pizzeria.chassis.service import open_runtime, service_app
from pizzeria.kit.auth import TokenIssuer
from pizzeria.kit.logging import get_logger
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.services.identity import handlers, sessions
from pizzeria.services.identity.api import auth, users
from pizzeria.services.identity.passwords import Passwords
from pizzeria.services.identity.sessions import Credentials
from pizzeria.services.identity.settings import IdentitySettings
from pizzeria.services.identity.tables import MIGRATIONS

NAME = "identity"

log = get_logger(__name__)


def create_app(settings: Settings | None = None, own: IdentitySettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    own = own or IdentitySettings()
    runtime = open_runtime(NAME, settings)
    credentials = Credentials(
        passwords=Passwords(queue=own.password_hash_queue, wait_s=own.password_hash_wait_s),
        tokens=TokenIssuer.from_settings(settings),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_s),
    )
    runtime.add_loop("identity-pruner", partial(sessions.prune, runtime.db), interval=600.0, initial_delay=600.0)

    async def seed() -> None:
        await credentials.passwords.dummy_hash()  # so the first unknown-email sign-in is not slower
        if settings.mode == "production":
            log.info("demo accounts not seeded: production mode")
            return
        await handlers.seed_demo_accounts(runtime.uow(), credentials.passwords)

    return service_app(
        runtime,
        credentials,
        migrations=MIGRATIONS,
        routers=[auth, users],
        on_start=seed,
        description="Identity: accounts, roles, sign-in with rotating refresh tokens; issues access tokens.",
    )
