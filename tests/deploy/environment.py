"""A deployment's environment read the way the code reads it: `Settings`, each service's own
settings, the per-service `<SERVICE>_URL`, `<SERVICE>_PORT`, `<SERVICE>_DATABASE_URL`,
`<SERVICE>_KAFKA_SASL_PASSWORD` and `<SERVICE>_REPLICAS`, and a replica's `PIZZERIA_REPLICA`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlsplit

from pizzeria.chassis.addresses import REPLICA_VARIABLE, SERVICE_PORTS, url_for
from pizzeria.contracts.topology import MONITOR
from pizzeria.kit.settings import Settings
from pizzeria.services.payments.settings import PaymentsSettings
from tests.unit.test_env_example import SETTINGS as SETTINGS_CLASSES

#: Every variable a settings class of the code reads (`.env.example` lists the same).
SETTINGS = frozenset(field.alias for kind in SETTINGS_CLASSES for field in kind.model_fields.values() if field.alias)
PER_SERVICE = re.compile(
    rf"^({'|'.join(name.upper() for name in SERVICE_PORTS)})_(URL|PORT|DATABASE_URL|KAFKA_SASL_PASSWORD|REPLICAS)$"
    rf"|^{MONITOR.upper()}_KAFKA_SASL_PASSWORD$"
)
#: Read by `chassis/addresses.py` (which replica a process is).
PROCESS_VARIABLES = frozenset({REPLICA_VARIABLE})
#: Read by the libraries the services run on, not by `Settings`.
LIBRARY_VARIABLES: frozenset[str] = frozenset()
LIBRARY_PREFIXES = ("OTEL_",)  # the OpenTelemetry exporter


def unknown_variables(env: Mapping[str, str]) -> set[str]:
    """Variables no code reads: a misspelt name silently leaves the default in force."""
    return {
        name
        for name in env
        if name not in SETTINGS
        and not PER_SERVICE.match(name)
        and name not in PROCESS_VARIABLES
        and name not in LIBRARY_VARIABLES
        and not name.startswith(LIBRARY_PREFIXES)
    }


@contextmanager
def settings_from(env: Mapping[str, str]) -> Iterator[Settings]:
    """`Settings` of a process whose environment is `env` and nothing else the code reads."""
    saved = dict(os.environ)
    try:
        for name in [
            n for n in os.environ if n.upper() in SETTINGS | PROCESS_VARIABLES or PER_SERVICE.match(n.upper())
        ]:
            del os.environ[name]
        os.environ.update(env)
        yield Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname, url
    assert parts.port, url
    return parts.hostname, parts.port


def kafka_bootstrap(broker_url: str) -> list[tuple[str, int]]:
    assert broker_url.startswith("kafka://"), broker_url
    return [host_port(f"kafka://{server}") for server in broker_url.removeprefix("kafka://").split(",")]


def payment_provider_url(settings: Settings) -> str:
    """Where payments sends charges (as `services/payments/app.py` decides)."""
    return PaymentsSettings().provider_url or url_for(settings, "provider")
