"""Identity tables: users, refresh tokens (only their hashes), failed sign-in counters and the
service's own flags."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from pizzeria.kit.db import UTCDateTime
from pizzeria.kit.migrations import MigrationSet

metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    # Stored normalized (trimmed, lower case), so this unique index is case-insensitive. Deleted
    # accounts keep their address: it cannot be registered again while the row exists.
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    # Moved on by a sign-out, a role change or a deletion; access tokens carry the epoch they
    # were issued in and are refused once it has moved on. Not part of `version`: signing out
    # is no change of the account.
    sa.Column("token_epoch", sa.BigInteger, nullable=False, server_default="0"),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),  # SHA-256 hex of the token
    sa.Column("family_id", sa.Uuid, nullable=False, index=True),
    sa.Column("user_id", sa.Uuid, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("issued_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

login_failures = sa.Table(
    "login_failures",
    metadata,
    # SHA-256 of "<scope>:<email or IP>": the counters outlive accounts, the addresses need not.
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("scope", sa.String(8), nullable=False),  # email | ip
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_failure_at", UTCDateTime, nullable=False, index=True),
)

identity_meta = sa.Table(
    "identity_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

#: The history that makes these tables (version table `alembic_version`; the messaging tables
#: beside them have their own).
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)
