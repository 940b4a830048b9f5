"""Alembic environment of the audit database."""

from pizzeria.kit.migrations import run_env

run_env()
