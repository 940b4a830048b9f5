"""Payments composition root: the provider client behind its breaker, the charger that settles
payments with it, and the consumer of payment commands."""

from __future__ import annotations

from fastapi import FastAPI

from pizzeria.chassis.addresses import url_for
from pizzeria.chassis.service import open_runtime, service_app
from pizzeria.contracts.topology import CONSUMER_GROUPS
from pizzeria.kit.resilience import CircuitBreaker
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.services.payments.api import router
from pizzeria.services.payments.charger import Charger
from pizzeria.services.payments.deps import PaymentsParts
from pizzeria.services.payments.handlers import build_handlers
from pizzeria.services.payments.provider import ProviderClient
from pizzeria.services.payments.settings import PaymentsSettings
from pizzeria.services.payments.tables import MIGRATIONS

NAME = "payments"


def create_app(settings: Settings | None = None, own: PaymentsSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    own = own or PaymentsSettings()
    runtime = open_runtime(NAME, settings)
    client = ProviderClient(
        own.provider_url or url_for(settings, "provider"),
        timeout=own.timeout_ms / 1000,
        breaker=CircuitBreaker(
            "payment-provider",
            failure_threshold=own.breaker_failures,
            reset_timeout=own.breaker_reset_s,
            min_sources=own.breaker_customers,
        ),
        # One connection per charge in flight: a charge never waits for a connection (a pool
        # timeout would count as the provider failing).
        max_connections=own.concurrency,
    )
    charger = Charger(
        runtime,
        client,
        concurrency=own.concurrency,
        per_customer=own.concurrency_per_customer,
        max_attempts=own.max_attempts,
        call_timeout=own.timeout_ms / 1000,
    )
    runtime.subscribe(NAME, build_handlers(charger.wake), topics=CONSUMER_GROUPS[NAME])
    runtime.add_worker(charger.run, "charger")
    return service_app(
        runtime,
        PaymentsParts(wake_charger=charger.wake),
        migrations=MIGRATIONS,
        routers=[router],
        description="Payments: charges orders through the provider, reports the outcome.",
    )
