"""Loading and saving users, refresh tokens and failed sign-in counters (the only module that
knows the tables). Statements are built once and executed with parameters."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.auth import Role
from pizzeria.kit.db import one_of
from pizzeria.kit.errors import Conflict
from pizzeria.services.identity.domain import RefreshToken, User
from pizzeria.services.identity.tables import identity_meta, login_failures, refresh_tokens, users

_INSERT_USER = users.insert()
_USER = sa.select(users).where(users.c.id == sa.bindparam("user_id"))
_USER_BY_EMAIL = sa.select(users).where(users.c.email == sa.bindparam("email"))
_UPDATE_USER = users.update().where(
    users.c.id == sa.bindparam("user_id"), users.c.version == sa.bindparam("expected_version")
)
_REPLACE_HASH = (
    users.update()
    .where(users.c.id == sa.bindparam("user_id"), users.c.password_hash == sa.bindparam("old_hash"))
    .values(password_hash=sa.bindparam("new_hash"))
)

_INSERT_TOKEN = refresh_tokens.insert()
_TOKEN = sa.select(refresh_tokens).where(refresh_tokens.c.token_hash == sa.bindparam("token_hash"))
# Bind names differ from column names: SQLAlchemy reserves those for the SET clause.
# Compare-and-set: of two requests racing to rotate one token, exactly one wins.
_REVOKE_TOKEN = (
    refresh_tokens.update()
    .where(refresh_tokens.c.token_hash == sa.bindparam("hash"), refresh_tokens.c.revoked_at.is_(None))
    .values(revoked_at=sa.bindparam("at"))
)
_REVOKE_FAMILY = (
    refresh_tokens.update()
    .where(refresh_tokens.c.family_id == sa.bindparam("family"), refresh_tokens.c.revoked_at.is_(None))
    .values(revoked_at=sa.bindparam("at"))
)
_REVOKE_USER_TOKENS = (
    refresh_tokens.update()
    .where(refresh_tokens.c.user_id == sa.bindparam("owner"), refresh_tokens.c.revoked_at.is_(None))
    .values(revoked_at=sa.bindparam("at"))
)
_PRUNE_TOKENS = refresh_tokens.delete().where(refresh_tokens.c.expires_at < sa.bindparam("before"))

_FAILURES = sa.select(login_failures).where(one_of(login_failures.c.key, "keys"))
_CLEAR_FAILURES = login_failures.delete().where(login_failures.c.key == sa.bindparam("key"))
_PRUNE_FAILURES = login_failures.delete().where(login_failures.c.last_failure_at < sa.bindparam("before"))

_FLAG = sa.select(identity_meta.c.value).where(identity_meta.c.key == sa.bindparam("key"))
_SET_FLAG = identity_meta.insert()


# -- users ------------------------------------------------------------------------------------


def _user_values(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "password_hash": user.password_hash,
        "deleted": user.deleted,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "version": user.version,
    }


def _to_user(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        name=row.name,
        role=row.role,
        password_hash=row.password_hash,
        deleted=row.deleted,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
        token_epoch=row.token_epoch,
    )


async def add_user(conn: AsyncConnection, user: User) -> None:
    await conn.execute(_INSERT_USER, _user_values(user))


async def save_user(conn: AsyncConnection, user: User) -> None:
    """Write a changed user; fails if another transaction saved it since it was loaded."""
    values = _user_values(user)
    del values["id"]
    result = await conn.execute(_UPDATE_USER, {**values, "user_id": user.id, "expected_version": user.version - 1})
    if result.rowcount != 1:
        raise Conflict(f"user {user.id} was changed concurrently; reload and retry")


_BUMP_EPOCH = (
    users.update()
    .where(users.c.id == sa.bindparam("user_id"))
    .values(token_epoch=users.c.token_epoch + 1)
    .returning(users.c.token_epoch)
)


async def bump_token_epoch(conn: AsyncConnection, user_id: UUID) -> int:
    """Move the account's token epoch on (in the caller's transaction); the new epoch. Access
    tokens issued before carry an older one and are refused everywhere once it is known."""
    return int((await conn.execute(_BUMP_EPOCH, {"user_id": user_id})).scalar_one())


async def replace_password_hash(conn: AsyncConnection, user_id: UUID, old_hash: str, new_hash: str) -> None:
    """Store a stronger hash of the same password. Not a change of the account (no new version),
    and skipped if the hash changed meanwhile: a sign-in never fails over housekeeping."""
    await conn.execute(_REPLACE_HASH, {"user_id": user_id, "old_hash": old_hash, "new_hash": new_hash})


async def get_user(conn: AsyncConnection, user_id: UUID) -> User | None:
    row = (await conn.execute(_USER, {"user_id": user_id})).first()
    return _to_user(row) if row else None


async def find_by_email(conn: AsyncConnection, email: str) -> User | None:
    """The account with this (normalized) email, deleted or not."""
    row = (await conn.execute(_USER_BY_EMAIL, {"email": email})).first()
    return _to_user(row) if row else None


async def list_users(conn: AsyncConnection, *, limit: int, before: UUID | None, role: Role | None) -> list[User]:
    """Live accounts, newest first (ids are UUIDv7), keyset-paginated."""
    query = sa.select(users).where(users.c.deleted.is_(False)).order_by(users.c.id.desc()).limit(limit)
    if role is not None:
        query = query.where(users.c.role == role)
    if before is not None:
        query = query.where(users.c.id < before)
    return [_to_user(r) for r in (await conn.execute(query)).all()]


# -- refresh tokens -----------------------------------------------------------------------------


async def add_refresh_token(conn: AsyncConnection, token: RefreshToken) -> None:
    await conn.execute(
        _INSERT_TOKEN,
        {
            "token_hash": token.token_hash,
            "family_id": token.family_id,
            "user_id": token.user_id,
            "issued_at": token.issued_at,
            "expires_at": token.expires_at,
            "revoked_at": token.revoked_at,
        },
    )


async def get_refresh_token(conn: AsyncConnection, token_hash: str) -> RefreshToken | None:
    row = (await conn.execute(_TOKEN, {"token_hash": token_hash})).first()
    if row is None:
        return None
    return RefreshToken(
        token_hash=row.token_hash,
        family_id=row.family_id,
        user_id=row.user_id,
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


async def revoke_token(conn: AsyncConnection, token_hash: str, at: datetime) -> bool:
    """Revoke one token; False if it was revoked already (someone else rotated it first)."""
    return (await conn.execute(_REVOKE_TOKEN, {"hash": token_hash, "at": at})).rowcount == 1


async def revoke_family(conn: AsyncConnection, family_id: UUID, at: datetime) -> int:
    return (await conn.execute(_REVOKE_FAMILY, {"family": family_id, "at": at})).rowcount or 0


async def revoke_user_tokens(conn: AsyncConnection, user_id: UUID, at: datetime) -> int:
    return (await conn.execute(_REVOKE_USER_TOKENS, {"owner": user_id, "at": at})).rowcount or 0


# -- failed sign-ins ---------------------------------------------------------------------------


@functools.cache
def _record_failure(dialect: str) -> sa.Insert:
    """One failure more, atomically; a count whose last failure left the window starts over."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(login_failures).values(
        key=sa.bindparam("key"),
        scope=sa.bindparam("scope"),
        failures=1,
        last_failure_at=sa.bindparam("now"),
    )
    restart = login_failures.c.last_failure_at < sa.bindparam("window_start")
    return stmt.on_conflict_do_update(
        index_elements=[login_failures.c.key],
        set_={
            "failures": sa.case((restart, 1), else_=login_failures.c.failures + 1),
            "last_failure_at": stmt.excluded.last_failure_at,
        },
    )


async def failures(conn: AsyncConnection, keys: Sequence[str]) -> dict[str, tuple[int, datetime]]:
    """Key → (failures, last failure) for the keys that have any."""
    rows = (await conn.execute(_FAILURES, {"keys": list(keys)})).all()
    return {r.key: (r.failures, r.last_failure_at) for r in rows}


async def record_failures(
    conn: AsyncConnection, keys: dict[str, str], *, now: datetime, window_start: datetime
) -> None:
    """Count one failure against each key (key → scope)."""
    await conn.execute(
        _record_failure(conn.dialect.name),
        [{"key": key, "scope": scope, "now": now, "window_start": window_start} for key, scope in keys.items()],
    )


async def clear_failures(conn: AsyncConnection, key: str) -> None:
    await conn.execute(_CLEAR_FAILURES, {"key": key})


async def prune(conn: AsyncConnection, *, failures_before: datetime, tokens_expired_before: datetime) -> int:
    """Drop counters nobody is throttled by any more and refresh tokens long expired."""
    dropped = (await conn.execute(_PRUNE_FAILURES, {"before": failures_before})).rowcount or 0
    return dropped + ((await conn.execute(_PRUNE_TOKENS, {"before": tokens_expired_before})).rowcount or 0)


# -- flags ------------------------------------------------------------------------------------------


async def get_flag(conn: AsyncConnection, key: str) -> str | None:
    value: str | None = (await conn.execute(_FLAG, {"key": key})).scalar()
    return value


async def set_flag(conn: AsyncConnection, key: str, value: str) -> None:
    await conn.execute(_SET_FLAG, {"key": key, "value": value})
