"""Signing in and out: login behind the failed-attempt throttle, refresh token rotation with
reuse detection, logout, and the pruning of what they leave behind.

A sign-in is one family of refresh tokens. Each refresh revokes the presented token and issues
the next of the family; a revoked token presented again means two parties hold the family (a
stolen token), so the whole family is revoked and both must sign in again.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from pizzeria.contracts.identity import UserSignedOut
from pizzeria.kit.auth import AccessToken, TokenIssuer
from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.errors import Overloaded, ProblemError, TooManyRequests, Unauthorized
from pizzeria.kit.ids import uuid7
from pizzeria.kit.logging import get_logger
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.identity import metrics, repository
from pizzeria.services.identity.domain import LoginThrottle, RefreshToken, User, fingerprint, normalize_email
from pizzeria.services.identity.passwords import Passwords

log = get_logger(__name__)

THROTTLE = LoginThrottle()
#: Expired refresh tokens are kept this long before pruning (for investigating a reuse).
EXPIRED_TOKEN_RETENTION = timedelta(days=1)


class InvalidCredentials(Unauthorized):
    """Wrong email or wrong password: deliberately the same answer for both."""

    type_slug = "invalid-credentials"
    title = "Invalid credentials"


class LoginThrottled(TooManyRequests):
    """Too many failed sign-ins for this email or from this address."""

    type_slug = "login-throttled"
    title = "Too many failed sign-ins"


class InvalidRefreshToken(Unauthorized):
    """The refresh token is unknown, expired, revoked, or its account is gone."""

    type_slug = "invalid-refresh-token"
    title = "Invalid refresh token"


class RefreshTokenReused(InvalidRefreshToken):
    """A refresh token was presented after it had been used: every session of its sign-in ended."""

    type_slug = "refresh-token-reused"
    title = "Refresh token reused"


@dataclass(frozen=True)
class Credentials:
    """What issuing credentials needs; built once by the composition root."""

    passwords: Passwords
    tokens: TokenIssuer
    refresh_ttl: timedelta


@dataclass(frozen=True)
class Session:
    """The tokens a sign-in or a refresh hands out."""

    access: AccessToken
    refresh_token: str


def throttle_keys(email: str, client_ip: str) -> dict[str, str]:
    """Counter key → scope. Keys are hashes, so the counters hold no addresses."""
    return {
        hashlib.sha256(f"email:{normalize_email(email)}".encode()).hexdigest(): "email",
        hashlib.sha256(f"ip:{client_ip}".encode()).hexdigest(): "ip",
    }


def _wait(found: dict[str, tuple[int, datetime]], now: datetime) -> int | None:
    waits = [w for failures, last in found.values() if (w := THROTTLE.retry_after(failures, last, now))]
    return max(waits) if waits else None


def _throttled(seconds: int) -> LoginThrottled:
    metrics.logins.labels("throttled").inc()
    return LoginThrottled(
        f"too many failed sign-ins; try again in {seconds} s",
        headers={"Retry-After": str(seconds)},
        retry_after=seconds,
    )


async def _new_refresh_token(uow: UnitOfWork, user_id: UUID, family_id: UUID, now: datetime, ttl: timedelta) -> str:
    token = secrets.token_urlsafe(32)
    await repository.add_refresh_token(
        uow.conn,
        RefreshToken(
            token_hash=fingerprint(token), family_id=family_id, user_id=user_id, issued_at=now, expires_at=now + ttl
        ),
    )
    return token


async def login(email: str, password: str, client_ip: str, uow: UnitOfWork, credentials: Credentials) -> Session:
    """Tokens for the right email and password. While throttled: 429 without looking at the
    password. Wrong email and wrong password cost the same time and get the same 401."""
    email = normalize_email(email)
    keys = throttle_keys(email, client_ip)
    # Throttle check and user lookup outside the write transaction: the password check takes
    # ~0.1 s and must not hold SQLite's one writer.
    async with uow.db.read() as conn:
        wait = _wait(await repository.failures(conn, list(keys)), utcnow())
        user = None if wait else await repository.find_by_email(conn, email)
    if wait:
        raise _throttled(wait)
    matches = await credentials.passwords.verify(user.password_hash if user else None, password)
    if user is None or user.deleted or not matches:
        now = utcnow()
        async with uow:
            await repository.record_failures(uow.conn, keys, now=now, window_start=THROTTLE.window_start(now))
            await uow.commit()
        metrics.logins.labels("failure").inc()
        raise InvalidCredentials("the email or the password is wrong")
    rehashed = None
    if credentials.passwords.needs_rehash(user.password_hash):
        # The password is right: a hashing queue that is full now only puts the rehash off to
        # the next sign-in.
        with contextlib.suppress(Overloaded):
            rehashed = await credentials.passwords.hash(password)
    now = utcnow()
    async with uow:
        # Failures that concurrent attempts recorded since the check count too: a burst of
        # parallel guesses learns nothing once the limit is reached.
        wait = _wait(await repository.failures(uow.conn, list(keys)), now)
        if wait:
            raise _throttled(wait)
        await repository.clear_failures(uow.conn, next(k for k, scope in keys.items() if scope == "email"))
        if rehashed is not None:
            await repository.replace_password_hash(uow.conn, user.id, user.password_hash, rehashed)
        refresh_token = await _new_refresh_token(uow, user.id, uuid7(), now, credentials.refresh_ttl)
        await uow.commit()
    metrics.logins.labels("success").inc()
    return Session(access=credentials.tokens.issue(user.principal), refresh_token=refresh_token)


async def _rotate(
    uow: UnitOfWork, presented: RefreshToken | None, now: datetime, credentials: Credentials
) -> tuple[User, str] | ProblemError:
    """The user and the family's next token, or the error to answer once the revocations the
    refusal implies are committed."""
    if presented is None:
        return InvalidRefreshToken("unknown refresh token; sign in again")
    user = await repository.get_user(uow.conn, presented.user_id)
    if user is None or user.deleted:
        await repository.revoke_family(uow.conn, presented.family_id, now)
        return InvalidRefreshToken("this account no longer exists")
    state = presented.state(now)
    if state == "expired":
        return InvalidRefreshToken("the refresh token has expired; sign in again")
    if state == "revoked" or not await repository.revoke_token(uow.conn, presented.token_hash, now):
        await repository.revoke_family(uow.conn, presented.family_id, now)
        metrics.refresh_token_reuse.inc()
        log.warning(
            "refresh token reused: its whole family is revoked",
            user_id=str(user.id),
            family_id=str(presented.family_id),
        )
        return RefreshTokenReused(
            "this refresh token was already used or revoked; for safety every session "
            "of this sign-in has ended: sign in again"
        )
    return user, await _new_refresh_token(uow, user.id, presented.family_id, now, credentials.refresh_ttl)


async def refresh(token: str, uow: UnitOfWork, credentials: Credentials) -> Session:
    """Trade a refresh token for a new access token and the next refresh token of its family."""
    now = utcnow()
    async with uow:
        presented = await repository.get_refresh_token(uow.conn, fingerprint(token))
        outcome = await _rotate(uow, presented, now, credentials)
        await uow.commit()
    if isinstance(outcome, ProblemError):
        raise outcome
    user, next_token = outcome
    # The role comes from the account, not the old token: an admin's change shows up here.
    return Session(access=credentials.tokens.issue(user.principal), refresh_token=next_token)


async def logout(token: str, uow: UnitOfWork) -> None:
    """End the sign-in the refresh token belongs to (its whole family), and every access token
    the user holds: the token epoch moves on (`UserSignedOut`), so services refuse them within
    seconds; the user's other sign-ins get new ones by refreshing. Unknown tokens are ignored:
    logging out twice is not an error."""
    now = utcnow()
    async with uow:
        presented = await repository.get_refresh_token(uow.conn, fingerprint(token))
        if presented is None:
            return
        await repository.revoke_family(uow.conn, presented.family_id, now)
        if presented.revoked_at is None:
            epoch = await repository.bump_token_epoch(uow.conn, presented.user_id)
            uow.emit(UserSignedOut(user_id=presented.user_id, token_epoch=epoch, at=now))
        await uow.commit()


async def prune(db: Database) -> None:
    """Drop failure counters that no longer throttle anyone and long-expired refresh tokens."""
    now = utcnow()
    async with db.transaction() as conn:
        dropped = await repository.prune(
            conn, failures_before=THROTTLE.window_start(now), tokens_expired_before=now - EXPIRED_TOKEN_RETENTION
        )
    if dropped:
        log.info("identity pruned", rows=dropped)
