"""Alembic environment of the catalog database."""

from pizzeria.kit.migrations import run_env

run_env()
