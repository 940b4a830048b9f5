"""The messaging tables every service database carries: outbox, inbox, dead letters, token
epochs, sagas and fault switches.

They have their own Alembic history (`pizzeria/messaging/migrations`, version table
`alembic_version_messaging`), applied to each service's database next to the service's own.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from pizzeria.kit.db import JSONType, UTCDateTime
from pizzeria.kit.migrations import MigrationSet

metadata = sa.MetaData()

# BIGINT identity on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: Every row is written once and marked published once, so it carries only the indexes its
#: reader needs: the key (`seq`) and the relay's pending rows. The event's `id` is made unique
#: where it is made (a UUIDv7) and is checked by each consumer's inbox; pruning walks `seq`
#: (relay.py). On PostgreSQL half of each page is left free, so that marking a row writes its
#: new version in the same page, which the log records as the bytes that changed rather than
#: the whole row (docs/performance.md).
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("key", sa.String(255), nullable=True),
    sa.Column("headers", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("published_at", UTCDateTime, nullable=True),
    postgresql_with={"fillfactor": 50},
)
sa.Index(
    "ix_outbox_pending",
    outbox.c.seq,
    postgresql_where=outbox.c.published_at.is_(None),
    sqlite_where=outbox.c.published_at.is_(None),
)

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("group_id", sa.String(255), primary_key=True),
    sa.Column("message_id", sa.String(64), primary_key=True),
    sa.Column("processed_at", UTCDateTime, nullable=False, index=True),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("group_id", sa.String(255), nullable=False),
    sa.Column("message_id", sa.String(64), nullable=True),
    sa.Column("message_type", sa.String(255), nullable=True),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("key", sa.String(255), nullable=True),
    sa.Column("headers", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    # dead → replay_requested → replayed | dead;  dead → discarded
    sa.Column("status", sa.String(32), nullable=False, index=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("group_id", "topic", "partition", "offset", name="uq_dead_letters_position"),
)

# The newest token epoch identity announced for each account (UserSignedOut, UserUpdated,
# UserDeleted): access tokens of an older epoch are refused (chassis/access.py).
token_epochs = sa.Table(
    "token_epochs",
    metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False, index=True),
)

# A saga instance: where it is, what it carries, and when it stops waiting.
sagas = sa.Table(
    "sagas",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(64), nullable=False),
    # running → completed | compensating → compensated
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),  # running: the step awaited; compensating: the one undone
    sa.Column("reason", sa.String(64), nullable=True),
    sa.Column("data", JSONType, nullable=False),
    sa.Column("deadline_at", UTCDateTime, nullable=True, index=True),
    sa.Column("resends", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
sa.Index("ix_sagas_state", sagas.c.state, sagas.c.type)

saga_log = sa.Table(
    "saga_log",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    sa.Column("saga_id", sa.String(64), nullable=False, index=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("entry", sa.String(200), nullable=False),
    sa.Column("message_id", sa.String(64), nullable=True),
)

# The fault lab's switches that are on in this service (chassis/faults.py): one row per switch,
# so that every replica, and a process that restarts, keeps them as they were set.
fault_switches = sa.Table(
    "fault_switches",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("set_by", sa.String(64), nullable=False),
    sa.Column("set_at", UTCDateTime, nullable=False),
)


#: The messaging tables' own migration history, applied to every service database.
MESSAGING_MIGRATIONS = MigrationSet(
    script_location=str(Path(__file__).parent / "migrations"),
    version_table="alembic_version_messaging",
    metadata=metadata,
)
