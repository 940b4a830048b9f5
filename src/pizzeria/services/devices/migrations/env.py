"""Alembic environment of the devices database."""

from pizzeria.kit.migrations import run_env

run_env()
