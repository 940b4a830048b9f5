"""Alembic environment of the identity database."""

from pizzeria.kit.migrations import run_env

run_env()
