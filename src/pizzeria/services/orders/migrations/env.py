"""Alembic environment of the orders database."""

from pizzeria.kit.migrations import run_env

run_env()
