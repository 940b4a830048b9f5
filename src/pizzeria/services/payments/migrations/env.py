"""Alembic environment of the payments database."""

from pizzeria.kit.migrations import run_env

run_env()
