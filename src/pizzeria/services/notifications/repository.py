"""Loading and saving contacts, templates and notifications.

Statements are built once and executed with parameters: building a SQLAlchemy statement per
call costs more than SQLite takes to run it. What a consumed message writes is staged in its
unit of work and written at commit, one statement per table for a whole run of messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.db import one_of
from pizzeria.kit.statements import execute, fetch_rows
from pizzeria.kit.upsert import insert_rows, upsert
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.notifications.domain import MessageTemplate
from pizzeria.services.notifications.tables import contacts, deferred, notifications, templates

_CONTACTS = sa.select(contacts).where(one_of(contacts.c.order_id, "ids"))
_TEMPLATES = sa.select(templates)
_DEFERRED_FOR_ORDER = (
    sa.select(deferred).where(deferred.c.order_id == sa.bindparam("order_id")).order_by(deferred.c.created_at)
)
_DROP_DEFERRED_FOR_ORDER = deferred.delete().where(deferred.c.order_id == sa.bindparam("order_id"))
_DROP_DEFERRED = deferred.delete().where(
    deferred.c.event_id == sa.bindparam("event_id"), deferred.c.template == sa.bindparam("template")
)
_DEFERRED_WITH_CONTACT = (
    sa.select(deferred)
    .join(contacts, contacts.c.order_id == deferred.c.order_id)
    .order_by(deferred.c.created_at)
    .limit(sa.bindparam("limit"))
)
# `status = 'queued'` written out (not a parameter) so the planner can use the partial index.
_QUEUED = (
    sa.select(notifications)
    .where(sa.text("status = 'queued'"))
    .order_by(notifications.c.id)
    .limit(sa.bindparam("limit"))
)
# PostgreSQL's claims: locked for the transaction, skipping those another transaction holds.
_DEFERRED_WITH_CONTACT_CLAIM = _DEFERRED_WITH_CONTACT.with_for_update(of=deferred, skip_locked=True)
_QUEUED_CLAIM = _QUEUED.with_for_update(skip_locked=True)
_MARK = notifications.update().where(one_of(notifications.c.id, "ids")).values(status=sa.bindparam("status"))


@dataclass(frozen=True)
class Contact:
    """How to reach the customer about one order."""

    order_id: UUID
    customer_id: str
    email: str | None
    phone: str | None


_NO_CONTACT = Contact(UUID(int=0), "", None, None)  # remembered: looked up, not there


def add_contact(
    uow: UnitOfWork, order_id: UUID, customer_id: str, email: str | None, phone: str | None, at: datetime
) -> Contact:
    found = uow.recall("contact", order_id)
    if found is not None and found is not _NO_CONTACT:
        return found  # type: ignore[no-any-return]
    contact = Contact(order_id, customer_id, email, phone)
    uow.stage(
        _insert_contacts,
        {"order_id": order_id, "customer_id": customer_id, "email": email, "phone": phone, "created_at": at},
        key=order_id,
    )
    return uow.remember("contact", order_id, contact)


async def _insert_contacts(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await insert_rows(conn, contacts, rows, ignore=True)


async def load_contacts(uow: UnitOfWork, order_ids: set[UUID]) -> None:
    """The contacts of a run's orders, at once; `contact` then finds them (or their absence)."""
    wanted = [i for i in order_ids if uow.recall("contact", i) is None]
    if not wanted:
        return
    for row in await fetch_rows(uow.conn, _CONTACTS, {"ids": wanted}):
        uow.remember("contact", row.order_id, Contact(row.order_id, row.customer_id, row.email, row.phone))
    for order_id in wanted:
        if uow.recall("contact", order_id) is None:
            uow.remember("contact", order_id, _NO_CONTACT)


async def contact(uow: UnitOfWork, order_id: UUID) -> Contact | None:
    await load_contacts(uow, {order_id})
    found: Contact = uow.recall("contact", order_id)
    return None if found is _NO_CONTACT else found


async def seed_templates(conn: AsyncConnection, defaults: list[MessageTemplate]) -> None:
    """The release's templates, their words as this release has them (a template this release
    no longer has stays, and is not sent: `contracts.notifications.TOLD` says what is)."""
    await conn.execute(
        upsert(conn, templates, ["name", "channel"]),
        [{"name": t.name, "channel": t.channel, "subject": t.subject, "body": t.body} for t in defaults],
    )


async def all_templates(conn: AsyncConnection) -> dict[str, dict[str, MessageTemplate]]:
    """Template name → channel → template."""
    found: dict[str, dict[str, MessageTemplate]] = {}
    for r in (await conn.execute(_TEMPLATES)).all():
        found.setdefault(r.name, {})[r.channel] = MessageTemplate(r.name, r.channel, r.subject, r.body)
    return found


def add_notification(uow: UnitOfWork, values: dict[str, Any]) -> None:
    """Queue a notification (written at commit; one per event and channel, whatever repeats)."""
    uow.stage(_insert_notifications, values)


async def _insert_notifications(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await insert_rows(conn, notifications, rows, ignore=True)


def defer(uow: UnitOfWork, event_id: str, template: str, order_id: UUID, values: dict[str, str], at: datetime) -> None:
    uow.stage(
        _insert_deferred,
        {"event_id": event_id, "template": template, "order_id": order_id, "values": values, "created_at": at},
    )


async def _insert_deferred(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await insert_rows(conn, deferred, rows, ignore=True)


async def take_deferred(conn: AsyncConnection, order_id: UUID) -> list[Any]:
    rows = await fetch_rows(conn, _DEFERRED_FOR_ORDER, {"order_id": order_id})
    if rows:
        await execute(conn, _DROP_DEFERRED_FOR_ORDER, {"order_id": order_id})
    return list(rows)


async def deferred_with_contact(conn: AsyncConnection, limit: int, *, claim: bool = False) -> list[Any]:
    """Deferred notifications whose contact has arrived since (a race between two topics);
    `claim`: locked for the transaction, skipping those another transaction holds (PostgreSQL:
    another replica's sender)."""
    query = _DEFERRED_WITH_CONTACT_CLAIM if claim and conn.dialect.name == "postgresql" else _DEFERRED_WITH_CONTACT
    return list(await fetch_rows(conn, query, {"limit": limit}))


async def drop_deferred(conn: AsyncConnection, event_id: str, template: str) -> None:
    await conn.execute(_DROP_DEFERRED, {"event_id": event_id, "template": template})


async def any_queued(conn: AsyncConnection) -> bool:
    return bool(await fetch_rows(conn, _QUEUED, {"limit": 1}))


async def claim_queued(conn: AsyncConnection, limit: int) -> list[Any]:
    query = _QUEUED_CLAIM if conn.dialect.name == "postgresql" else _QUEUED
    return list(await fetch_rows(conn, query, {"limit": limit}))


async def mark(conn: AsyncConnection, ids: list[UUID], status: str) -> None:
    await execute(conn, _MARK, {"ids": ids, "status": status})


async def history(
    conn: AsyncConnection, *, customer_id: str | None, order_id: UUID | None, limit: int, before: UUID | None
) -> list[Any]:
    query = sa.select(notifications).order_by(notifications.c.id.desc()).limit(limit)
    if customer_id is not None:
        query = query.where(notifications.c.customer_id == customer_id)
    if order_id is not None:
        query = query.where(notifications.c.order_id == order_id)
    if before is not None:
        query = query.where(notifications.c.id < before)
    return list((await conn.execute(query)).all())
