"""Accounts and the rules of signing in: users and their roles, password policy, refresh token
rotation and the failed-login throttle. No I/O."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from pizzeria.kit.auth import ROLES, Principal, Role
from pizzeria.kit.errors import Conflict, ValidationFailed

MIN_PASSWORD_LENGTH = 10
# Long enough for any passphrase, short enough that hashing cannot be used to burn CPU.
MAX_PASSWORD_LENGTH = 256
MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit
MAX_NAME_LENGTH = 120
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_EMAIL = re.compile(EMAIL_PATTERN)


def normalize_email(email: str) -> str:
    """The form emails are stored and compared in: one account per address, whatever its case."""
    return email.strip().lower()


def password_problems(password: str, *, email: str = "") -> list[dict[str, str]]:
    """Field errors of a new password (empty when it is acceptable)."""
    errors = []
    if len(password) < MIN_PASSWORD_LENGTH:
        errors.append({"field": "password", "message": f"must be at least {MIN_PASSWORD_LENGTH} characters"})
    elif len(password) > MAX_PASSWORD_LENGTH:
        errors.append({"field": "password", "message": f"must be at most {MAX_PASSWORD_LENGTH} characters"})
    elif not password.strip():
        errors.append({"field": "password", "message": "must not be only spaces"})
    elif email and password.strip().lower() == normalize_email(email):
        errors.append({"field": "password", "message": "must not be the email address"})
    return errors


def check_password(password: str, *, email: str = "") -> None:
    errors = password_problems(password, email=email)
    if errors:
        raise ValidationFailed("; ".join(f"password {e['message']}" for e in errors), errors=errors)


@dataclass(frozen=True)
class User:
    """An account. Deleted accounts stay (soft delete) but can neither sign in nor refresh."""

    id: UUID
    email: str
    name: str
    role: Role
    password_hash: str
    created_at: datetime
    updated_at: datetime
    deleted: bool = False
    version: int = 1
    token_epoch: int = 0

    def __post_init__(self) -> None:
        errors = []
        if not _EMAIL.match(self.email) or len(self.email) > MAX_EMAIL_LENGTH:
            errors.append({"field": "email", "message": "must be an email address"})
        elif self.email != normalize_email(self.email):
            errors.append({"field": "email", "message": "must be normalized (trimmed, lower case)"})
        if not self.name.strip():
            errors.append({"field": "name", "message": "must not be blank"})
        elif len(self.name) > MAX_NAME_LENGTH:
            errors.append({"field": "name", "message": f"must be at most {MAX_NAME_LENGTH} characters"})
        if self.role not in ROLES:
            errors.append({"field": "role", "message": f"must be one of {', '.join(ROLES)}"})
        if errors:
            raise ValidationFailed("; ".join(f"{e['field']} {e['message']}" for e in errors), errors=errors)

    @classmethod
    def register(
        cls, *, id: UUID, email: str, name: str, password_hash: str, at: datetime, role: Role = "customer"
    ) -> User:
        """A new account; self-registration always makes a customer (admins promote)."""
        return cls(
            id=id,
            email=normalize_email(email),
            name=name.strip(),
            role=role,
            password_hash=password_hash,
            created_at=at,
            updated_at=at,
        )

    @property
    def principal(self) -> Principal:
        return Principal(user_id=str(self.id), role=self.role, email=self.email, epoch=self.token_epoch)

    def change(self, *, name: str, role: Role, by: UUID, at: datetime) -> User:
        """An admin's edit. Admins cannot take away their own admin role: that could leave the
        system with nobody able to manage it."""
        self._not_deleted()
        if by == self.id and self.role == "admin" and role != "admin":
            raise Conflict("you cannot remove your own admin role; ask another admin")
        return replace(self, name=name.strip(), role=role, updated_at=at, version=self.version + 1)

    def delete(self, *, by: UUID, at: datetime) -> User:
        self._not_deleted()
        if by == self.id:
            raise Conflict("you cannot delete your own account; ask another admin")
        return replace(self, deleted=True, updated_at=at, version=self.version + 1)

    def _not_deleted(self) -> None:
        if self.deleted:
            raise Conflict(f"user {self.id} was deleted")


def fingerprint(refresh_token: str) -> str:
    """What is stored of a refresh token: its SHA-256. The tokens are 256 random bits, so a plain
    hash is enough (no salt, no slow hash), and a leaked table reveals no usable token."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()


TokenState = Literal["active", "expired", "revoked"]


@dataclass(frozen=True)
class RefreshToken:
    """One refresh token of a family. Every refresh replaces the token with a new one of the same
    family; a token presented again after that was stolen or replayed, so the family dies."""

    token_hash: str
    family_id: UUID
    user_id: UUID
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None

    def state(self, now: datetime) -> TokenState:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"


@dataclass(frozen=True)
class LoginThrottle:
    """Repeated failed sign-ins slow down: from `threshold` failures on, each further attempt
    waits 2^(failures - threshold) seconds after the last failure, capped at `max_delay`. A quiet
    `window` since the last failure forgets the count. Counted per email and per client IP."""

    threshold: int = 5
    window: timedelta = timedelta(minutes=15)
    max_delay: timedelta = timedelta(minutes=15)

    def delay(self, failures: int) -> timedelta:
        if failures < self.threshold:
            return timedelta(0)
        exponent = min(failures - self.threshold, 30)  # 2^30 s is far past any cap
        return min(timedelta(seconds=2**exponent), self.max_delay)

    def retry_after(self, failures: int, last_failure_at: datetime, now: datetime) -> int | None:
        """Whole seconds to wait before the next attempt, or None if it may go ahead."""
        if now - last_failure_at >= self.window:
            return None
        remaining = (last_failure_at + self.delay(failures) - now).total_seconds()
        return math.ceil(remaining) if remaining > 0 else None

    def window_start(self, now: datetime) -> datetime:
        """Failures before this instant no longer count."""
        return now - self.window
