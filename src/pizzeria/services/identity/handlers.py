"""Account use cases: registration, an admin's edits and deletions, the demo accounts. Each
loads, acts through the domain, saves, emits, commits."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from uuid import UUID

from sqlalchemy.exc import IntegrityError

from pizzeria.contracts.identity import UserDeleted, UserRegistered, UserUpdated
from pizzeria.kit.auth import Role
from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import hold_lock
from pizzeria.kit.errors import Conflict, NotFound
from pizzeria.kit.ids import uuid7
from pizzeria.kit.logging import get_logger
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.identity import repository
from pizzeria.services.identity.demo_accounts import DEMO_ACCOUNTS
from pizzeria.services.identity.domain import User, check_password
from pizzeria.services.identity.passwords import Passwords

log = get_logger(__name__)

DEMO_SEEDED_FLAG = "demo_accounts_seeded"


class EmailTaken(Conflict):
    """An account with this email exists already."""

    type_slug = "email-taken"
    title = "Email already registered"


def _registered(user: User) -> UserRegistered:
    return UserRegistered(user_id=user.id, email=user.email, name=user.name, role=user.role, at=user.created_at)


async def register(email: str, password: str, name: str, uow: UnitOfWork, passwords: Passwords) -> User:
    """A new customer account and its `UserRegistered`; 409 if the email is taken."""
    check_password(password, email=email)
    # Hash before the transaction: it takes ~0.1 s, and SQLite has one writer.
    user = User.register(id=uuid7(), email=email, name=name, password_hash=await passwords.hash(password), at=utcnow())
    async with uow:
        if await repository.find_by_email(uow.conn, user.email) is not None:
            raise EmailTaken("an account with this email exists already; sign in instead")
        try:
            await repository.add_user(uow.conn, user)
        except IntegrityError:  # a concurrent registration with the same email won
            raise EmailTaken("an account with this email exists already; sign in instead") from None
        uow.emit(_registered(user))
        await uow.commit()
    log.info("user registered", user_id=str(user.id), role=user.role)
    return user


async def _load(uow: UnitOfWork, user_id: UUID) -> User:
    user = await repository.get_user(uow.conn, user_id)
    if user is None or user.deleted:
        raise NotFound(f"user {user_id} does not exist")
    return user


async def update_user(user_id: UUID, name: str, role: Role, by: UUID, uow: UnitOfWork) -> User:
    """An admin renames an account or changes its role. A role change moves the token epoch on:
    access tokens with the old role are refused everywhere once the event arrives, and the next
    token (sign-in or refresh) has the new role."""
    async with uow:
        before = await _load(uow, user_id)
        user = before.change(name=name, role=role, by=by, at=utcnow())
        await repository.save_user(uow.conn, user)
        if user.role != before.role:
            user = replace(user, token_epoch=await repository.bump_token_epoch(uow.conn, user.id))
        uow.emit(
            UserUpdated(
                user_id=user.id,
                name=user.name,
                role=user.role,
                at=user.updated_at,
                actor=str(by),
                token_epoch=user.token_epoch,
            )
        )
        await uow.commit()
    log.info("user updated", user_id=str(user.id), role=user.role, by_user_id=str(by))
    return user


async def delete_user(user_id: UUID, by: UUID, uow: UnitOfWork) -> None:
    """Soft-delete an account and revoke all its refresh tokens: it can neither sign in nor refresh."""
    async with uow:
        user = (await _load(uow, user_id)).delete(by=by, at=utcnow())
        await repository.save_user(uow.conn, user)
        await repository.revoke_user_tokens(uow.conn, user.id, user.updated_at)
        epoch = await repository.bump_token_epoch(uow.conn, user.id)
        uow.emit(UserDeleted(user_id=user.id, at=user.updated_at, actor=str(by), token_epoch=epoch))
        await uow.commit()
    log.info("user deleted", user_id=str(user.id), by_user_id=str(by))


async def seed_demo_accounts(uow: UnitOfWork, passwords: Passwords) -> bool:
    """Create the demo accounts on a brand-new identity, once; False if that happened before."""
    async with uow.db.read() as conn:
        if await repository.get_flag(conn, DEMO_SEEDED_FLAG):
            return False  # checked before hashing: restarts should not pay for five hashes
    hashes = await asyncio.gather(*(passwords.made_ahead(a.password_hash, a.password) for a in DEMO_ACCOUNTS))
    now = utcnow()
    async with uow:
        await hold_lock(uow.conn, "identity seed")  # replicas starting together seed once
        if await repository.get_flag(uow.conn, DEMO_SEEDED_FLAG):
            return False
        for account, password_hash in zip(DEMO_ACCOUNTS, hashes, strict=True):
            if await repository.find_by_email(uow.conn, account.email) is not None:
                continue
            user = User.register(
                id=uuid7(),
                email=account.email,
                name=account.name,
                role=account.role,
                password_hash=password_hash,
                at=now,
            )
            await repository.add_user(uow.conn, user)
            uow.emit(_registered(user))
        await repository.set_flag(uow.conn, DEMO_SEEDED_FLAG, now.isoformat())
        await uow.commit()
    log.info("demo accounts seeded", accounts=len(DEMO_ACCOUNTS))
    return True
