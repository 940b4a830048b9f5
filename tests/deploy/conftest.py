"""Fixtures of the deploy tests: the Compose projects as `docker compose` resolves them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pizzeria.contracts.topology import BUS_SERVICES, MONITOR
from tests.deploy.tools import DEPLOY, compose_project

COMPOSE = DEPLOY / "compose"
COMPOSE_FILES = {"dev": COMPOSE / "compose.yaml", "prod": COMPOSE / "compose.prod.yaml"}
PROD_ENV_EXAMPLE = COMPOSE / "prod.env.example"
#: What an operator puts in prod.env for the secrets the example leaves empty.
TEST_SECRETS = {
    "JWT_SECRET": "test-jwt-secret-of-forty-eight-characters-000000",
    "POSTGRES_PASSWORD": "test-postgres-password",
    "REDIS_PASSWORD": "test-redis-password",
    "GRAFANA_ADMIN_PASSWORD": "test-grafana-password",
    "TELEMETRY_MQTT_PASSWORD": "test-mqtt-telemetry-password",
    "KAFKA_ADMIN_PASSWORD": "test-kafka-admin-password",
    **{f"{name.upper()}_KAFKA_SASL_PASSWORD": f"test-kafka-{name}-password" for name in (*BUS_SERVICES, MONITOR)},
}

#: May stay empty in prod.env.
OPTIONAL_IN_PROD_ENV = frozenset({"OTEL_EXPORTER_OTLP_ENDPOINT"})


def env_file_values(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values


@pytest.fixture(scope="session")
def prod_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """prod.env as an operator fills it in: the example, every empty value given."""
    values = env_file_values(PROD_ENV_EXAMPLE)
    missing = {name for name, value in values.items() if not value and name not in TEST_SECRETS}
    assert missing <= OPTIONAL_IN_PROD_ENV, f"no test value for {missing - OPTIONAL_IN_PROD_ENV}"
    values |= {name: TEST_SECRETS[name] for name, value in values.items() if not value and name in TEST_SECRETS}
    path = tmp_path_factory.mktemp("compose") / "prod.env"
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


@pytest.fixture(scope="session")
def compose_projects(prod_env_file: Path) -> dict[str, dict[str, Any]]:
    return {
        "dev": compose_project(COMPOSE_FILES["dev"]),
        "prod": compose_project(COMPOSE_FILES["prod"], env_file=prod_env_file),
    }


@pytest.fixture(params=sorted(COMPOSE_FILES))
def project(request: pytest.FixtureRequest, compose_projects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each Compose file in turn, resolved."""
    resolved: dict[str, Any] = compose_projects[request.param]
    return resolved
