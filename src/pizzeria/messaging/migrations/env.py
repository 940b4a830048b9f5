"""Alembic environment of the messaging tables."""

from pizzeria.kit.migrations import run_env

run_env()
