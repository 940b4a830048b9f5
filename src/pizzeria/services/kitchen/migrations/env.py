"""Alembic environment of the kitchen database."""

from pizzeria.kit.migrations import run_env

run_env()
