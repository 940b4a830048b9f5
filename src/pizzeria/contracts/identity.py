"""Identity facts: accounts were created, changed or deleted. Keyed by the user id, so one
user's events keep their order. `UserRegistered` carries the email: personal data that readers
must neither log unmasked nor put in a field ending in `_id`."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pizzeria.messaging.message import Message

CONTEXT = "identity"


class UserRegistered(Message, context=CONTEXT, key="user_id"):
    """A new account exists (self-registered customer or seeded demo account)."""

    user_id: UUID
    email: str
    name: str
    role: str
    at: datetime


class UserUpdated(Message, context=CONTEXT, key="user_id"):
    """An admin changed an account's name or role; carries both new values. A role change moves
    the account's token epoch on: access tokens of an older epoch are refused everywhere."""

    user_id: UUID
    name: str
    role: str
    at: datetime
    actor: str | None = None  # the administrator who did it (audited)
    token_epoch: int = 0


class UserDeleted(Message, context=CONTEXT, key="user_id"):
    """An account was deleted: it can no longer sign in, its sessions are revoked."""

    user_id: UUID
    at: datetime
    actor: str | None = None  # the administrator who did it (audited)
    token_epoch: int = 0  # access tokens of an older epoch are refused everywhere


class UserSignedOut(Message, context=CONTEXT, key="user_id"):
    """A user signed out: their access tokens issued before (of an older token epoch) are
    refused everywhere; their other sign-ins get new ones by refreshing."""

    user_id: UUID
    token_epoch: int
    at: datetime
