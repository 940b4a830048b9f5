"""Alembic environment of the delivery database."""

from pizzeria.kit.migrations import run_env

run_env()
