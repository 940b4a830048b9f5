"""Catalog tables."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from pizzeria.kit.db import JSONType, UTCDateTime
from pizzeria.kit.migrations import MigrationSet

metadata = sa.MetaData()

menu_items = sa.Table(
    "menu_items",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("category", sa.String(40), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("sizes", JSONType, nullable=False),
    sa.Column("recipe", JSONType, nullable=False),
    sa.Column("available", sa.Boolean, nullable=False),
    sa.Column("removed", sa.Boolean, nullable=False, default=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
sa.Index("ix_menu_items_listing", menu_items.c.removed, menu_items.c.category, menu_items.c.name)

catalog_meta = sa.Table(
    "catalog_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

#: The history that makes these tables (version table `alembic_version`; the messaging tables
#: beside them have their own).
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)
