"""Alembic environment of the notifications database."""

from pizzeria.kit.migrations import run_env

run_env()
