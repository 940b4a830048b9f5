"""Alembic environment of the telemetry database."""

from pizzeria.kit.migrations import run_env

run_env()
