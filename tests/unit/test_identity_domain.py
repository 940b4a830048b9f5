"""Identity rules: accounts and roles, the password policy, refresh token states, the failed
sign-in throttle and password hashing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from argon2.low_level import Type

from pizzeria.kit.errors import Conflict, ValidationFailed
from pizzeria.services.identity.domain import (
    LoginThrottle,
    RefreshToken,
    User,
    fingerprint,
    normalize_email,
    password_problems,
)
from pizzeria.services.identity.passwords import Passwords, default_hasher
from pizzeria.services.identity.sessions import throttle_keys

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def user(**overrides: object) -> User:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "email": "Carol@Example.COM ",
        "name": " Carol ",
        "password_hash": "h",
        "at": NOW,
    }
    values.update(overrides)
    return User.register(**values)


def test_emails_are_compared_trimmed_and_in_lower_case() -> None:
    assert normalize_email("  Alice@Pizzeria.Example ") == "alice@pizzeria.example"
    carol = user()
    assert (carol.email, carol.name, carol.role) == ("carol@example.com", "Carol", "customer")
    assert carol.principal.user_id == str(carol.id)
    assert carol.principal.email == "carol@example.com"


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short", "at least 10"),
        ("x" * 257, "at most 256"),
        (" " * 12, "only spaces"),
        ("carol@example.com", "email"),
    ],
)
def test_weak_passwords_are_refused(password: str, problem: str) -> None:
    errors = password_problems(password, email="Carol@example.com")
    assert len(errors) == 1
    assert errors[0]["field"] == "password"
    assert problem in errors[0]["message"]


def test_a_long_enough_password_is_accepted() -> None:
    assert password_problems("correct-horse-pizza", email="carol@example.com") == []
    assert password_problems("x" * 10) == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"name": "   "}, "name"),
        ({"name": "n" * 121}, "name"),
        ({"role": "chef"}, "role"),
    ],
)
def test_invalid_accounts_are_refused_with_field_errors(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        user(**overrides)
    assert caught.value.errors
    assert caught.value.errors[0]["field"] == field


def test_an_admin_changes_name_and_role_as_a_new_version() -> None:
    carol, admin_id = user(), uuid.uuid4()
    later = NOW + timedelta(minutes=1)
    staff = carol.change(name=" Carol B. ", role="staff", by=admin_id, at=later)
    assert (staff.name, staff.role, staff.version, staff.updated_at) == ("Carol B.", "staff", 2, later)
    assert staff.created_at == NOW
    assert carol.role == "customer", "users are immutable values"


def test_an_admin_cannot_demote_or_delete_themselves() -> None:
    admin = user(role="admin")
    with pytest.raises(Conflict, match="own admin role"):
        admin.change(name="Admin", role="customer", by=admin.id, at=NOW)
    assert admin.change(name="Renamed", role="admin", by=admin.id, at=NOW).name == "Renamed"
    with pytest.raises(Conflict, match="own account"):
        admin.delete(by=admin.id, at=NOW)
    assert admin.change(name="Admin", role="staff", by=uuid.uuid4(), at=NOW).role == "staff"


def test_a_deleted_account_cannot_be_changed() -> None:
    gone = user().delete(by=uuid.uuid4(), at=NOW)
    assert gone.deleted
    assert gone.version == 2
    with pytest.raises(Conflict, match="deleted"):
        gone.change(name="X", role="customer", by=uuid.uuid4(), at=NOW)
    with pytest.raises(Conflict, match="deleted"):
        gone.delete(by=uuid.uuid4(), at=NOW)


def test_refresh_tokens_are_stored_as_sha256() -> None:
    digest = fingerprint("some-refresh-token")
    assert len(digest) == 64
    assert digest == fingerprint("some-refresh-token") != fingerprint("some-refresh-tokeN")
    assert "some-refresh-token" not in digest


def test_refresh_token_states() -> None:
    token = RefreshToken(
        token_hash="h", family_id=uuid.uuid4(), user_id=uuid.uuid4(), issued_at=NOW, expires_at=NOW + timedelta(days=14)
    )
    assert token.state(NOW) == "active"
    assert token.state(NOW + timedelta(days=14)) == "expired"
    revoked = RefreshToken(**{**token.__dict__, "revoked_at": NOW})
    assert revoked.state(NOW) == "revoked"
    assert revoked.state(NOW + timedelta(days=30)) == "revoked"


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [
        (0, 0),
        (4, 0),
        (5, 1),
        (6, 2),
        (7, 4),
        (14, 512),
        (15, 900),
        (16, 900),
        (10_000, 900),
    ],
)
def test_the_throttle_delay_doubles_from_the_fifth_failure_up_to_15_minutes(failures: int, seconds: int) -> None:
    assert LoginThrottle().delay(failures) == timedelta(seconds=seconds)


def test_retry_after_counts_from_the_last_failure() -> None:
    throttle = LoginThrottle()
    assert throttle.retry_after(4, NOW, NOW) is None, "four failures do not throttle"
    assert throttle.retry_after(5, NOW, NOW) == 1
    assert throttle.retry_after(5, NOW, NOW + timedelta(seconds=1)) is None
    assert throttle.retry_after(8, NOW, NOW + timedelta(seconds=2.5)) == 6, "8 s delay, whole seconds rounded up"
    assert throttle.retry_after(20, NOW, NOW + timedelta(minutes=14)) == 60
    assert throttle.retry_after(20, NOW, NOW + timedelta(minutes=15)) is None, "a quiet window forgets"
    assert throttle.window_start(NOW) == NOW - timedelta(minutes=15)


def test_throttle_keys_hold_no_address_and_ignore_case() -> None:
    keys = throttle_keys("Alice@Pizzeria.example", "10.0.0.7")
    assert sorted(keys.values()) == ["email", "ip"]
    assert all("alice" not in k and "10.0.0.7" not in k for k in keys)
    assert keys == throttle_keys(" alice@pizzeria.EXAMPLE", "10.0.0.7")
    assert set(keys) & set(throttle_keys("alice@pizzeria.example", "10.0.0.8"))  # the email key is shared


def test_the_default_hasher_is_argon2id_with_the_rfc_9106_profile() -> None:
    hasher = default_hasher()
    assert (hasher.type, hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (Type.ID, 3, 65536, 4)


async def test_passwords_hash_and_verify() -> None:
    passwords = Passwords(CHEAP)
    stored = await passwords.hash("alice-pizza-1")
    assert stored.startswith("$argon2id$")
    assert "alice-pizza-1" not in stored
    assert await passwords.verify(stored, "alice-pizza-1")
    assert not await passwords.verify(stored, "alice-pizza-2")
    assert not await passwords.verify(None, "alice-pizza-1"), "no account: the same work, then no"
    assert not await passwords.verify("not-a-hash", "alice-pizza-1")
    assert not passwords.needs_rehash(stored)
    assert Passwords(default_hasher()).needs_rehash(stored), "hashes made with other parameters get redone"
    assert passwords.needs_rehash("not-a-hash")
