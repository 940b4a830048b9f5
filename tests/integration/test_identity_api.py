"""The identity service through HTTP, on SQLite and on PostgreSQL: accounts, sign-in and its
throttle, refresh token rotation and reuse detection, logout, admin-only account management,
demo accounts and the events it writes to its outbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from pizzeria.kit.auth import Principal, decode_access_token, issue_access_token
from pizzeria.kit.settings import Settings
from pizzeria.services.identity.demo_accounts import DEMO_ACCOUNTS
from pizzeria.services.identity.passwords import DUMMY_HASH, default_hasher
from pizzeria.services.identity.tables import users
from tests.integration.identity import DEMO, Identity, identity_settings, running_identity
from tests.integration.test_service_api import assert_problem

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def identity(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Identity]:
    async with (
        identity_settings(backend, tmp_path, monkeypatch) as settings,
        running_identity(settings, monkeypatch) as running,
    ):
        yield running


def carol(**overrides: str) -> dict[str, str]:
    return {"email": "Carol@Example.com", "password": "correct-horse-pizza", "name": "Carol", **overrides}


def principal(identity: Identity, tokens: dict[str, Any]) -> Any:
    return decode_access_token(tokens["access_token"], identity.settings)


# -- accounts ---------------------------------------------------------------------------------


async def test_register_login_and_me(identity: Identity) -> None:
    created = await identity.http.post(REGISTER, json=carol())
    assert created.status_code == 201, created.text
    user = created.json()
    assert (user["email"], user["name"], user["role"]) == ("carol@example.com", "Carol", "customer")
    assert created.headers["location"] == f"/api/v1/users/{user['id']}"
    assert "password" not in created.text
    assert "argon2" not in created.text

    signed_in = await identity.login("CAROL@example.com", "correct-horse-pizza")
    assert signed_in.status_code == 200, signed_in.text
    tokens = signed_in.json()
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    assert tokens["refresh_token"]
    who = principal(identity, tokens)
    assert (who.user_id, who.role, who.email) == (user["id"], "customer", "carol@example.com")

    me = await identity.http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200
    assert me.json() == user
    anonymous = assert_problem(await identity.http.get("/api/v1/users/me"), 401, "unauthorized")
    assert anonymous["detail"]
    forged = await identity.http.get("/api/v1/users/me", headers={"Authorization": "Bearer abc.def.ghi"})
    assert_problem(forged, 401, "invalid-token")
    assert forged.headers["www-authenticate"].startswith("Bearer")


async def test_a_registered_email_cannot_register_again_in_any_case(identity: Identity) -> None:
    assert (await identity.http.post(REGISTER, json=carol())).status_code == 201
    again = await identity.http.post(REGISTER, json=carol(email=" carol@EXAMPLE.com", name="Other Carol"))
    assert_problem(again, 409, "email-taken")
    assert_problem(await identity.http.post(REGISTER, json=carol(email=DEMO["admin"][0])), 409, "email-taken")


async def test_bad_input_is_a_422_with_field_errors_and_writes_nothing(identity: Identity) -> None:
    admin = await identity.bearer("admin")
    before = (await identity.http.get("/api/v1/users", headers=admin)).json()["items"]
    bodies: list[tuple[str, Any, str]] = [
        (REGISTER, {}, "email"),
        (REGISTER, carol(password="short"), "password"),
        (REGISTER, carol(password="x" * 300), "password"),
        (REGISTER, carol(email="not-an-email"), "email"),
        (REGISTER, carol(name=""), "name"),
        (REGISTER, carol(name="   "), "name"),
        (REGISTER, carol(password="carol@example.com"), "password"),
        (REGISTER, {**carol(), "role": "admin"}, "role"),
        (REGISTER, ["not", "an", "object"], "body"),
        (LOGIN, {"email": "alice@pizzeria.example"}, "password"),
        (LOGIN, {"email": "", "password": "x"}, "email"),
        (REFRESH, {}, "refresh_token"),
        (REFRESH, {"refresh_token": "short"}, "refresh_token"),
        (LOGOUT, {"refresh_token": 42}, "refresh_token"),
    ]
    for path, body, field in bodies:
        problem = assert_problem(await identity.http.post(path, json=body), 422, "validation-failed")
        assert field in {e["field"] for e in problem["errors"]}, (path, body, problem)
    not_json = await identity.http.post(REGISTER, content=b"{nope", headers={"content-type": "application/json"})
    assert_problem(not_json, 422)
    users = "/api/v1/users"
    assert_problem(await identity.http.get(users, params={"limit": 0}, headers=admin), 422)
    assert_problem(await identity.http.get(users, params={"role": "chef"}, headers=admin), 422)
    assert_problem(await identity.http.get(users, params={"cursor": "%%%"}, headers=admin), 400, "bad-cursor")
    assert_problem(await identity.http.get(f"{users}/not-a-uuid", headers=admin), 422)
    assert_problem(await identity.http.get(f"{users}/{uuid.uuid4()}", headers=admin), 404, "not-found")
    alice_id = principal(identity, await identity.tokens("customer")).user_id
    bad_role = await identity.http.put(f"{users}/{alice_id}", json={"name": "A", "role": "chef"}, headers=admin)
    assert_problem(bad_role, 422)
    assert_problem(await identity.http.put(f"{users}/{alice_id}", json={"role": "staff"}, headers=admin), 422)
    after = (await identity.http.get(users, headers=admin)).json()["items"]
    assert after == before, "no partial writes"


async def test_wrong_password_gets_the_same_answer_as_an_unknown_email(
    identity: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    passwords = identity.app.state.parts.passwords
    verified: list[str | None] = []
    real_verify = passwords.verify

    async def counting_verify(stored_hash: str | None, password: str) -> bool:
        verified.append(stored_hash)
        return bool(await real_verify(stored_hash, password))

    monkeypatch.setattr(passwords, "verify", counting_verify)
    wrong_password = await identity.login("alice@pizzeria.example", "not-alices-password")
    unknown_email = await identity.login("nobody@pizzeria.example", "not-alices-password")
    for response in (wrong_password, unknown_email):
        assert_problem(response, 401, "invalid-credentials")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert wrong_password.json() == unknown_email.json()
    assert len(verified) == 2
    assert verified[1] is None, "an unknown email still costs a password check (against a dummy hash)"


# -- the failed sign-in throttle ----------------------------------------------------------------


async def test_five_failures_throttle_with_growing_retry_after_and_success_resets(identity: Identity) -> None:
    alice, password = DEMO["customer"]
    identity.clock.freeze()
    first = await identity.from_ip("10.0.0.1")
    for _ in range(5):
        assert_problem(await identity.login(alice, "wrong-password", first), 401, "invalid-credentials")
    throttled = await identity.login(alice, password, first)
    problem = assert_problem(throttled, 429, "login-throttled")
    assert throttled.headers["retry-after"] == "1"
    assert problem["retry_after"] == 1
    # The lock is on the email: another address gets it too, even with the right password.
    elsewhere = await identity.from_ip("10.0.0.2")
    assert_problem(await identity.login(alice.upper(), password, elsewhere), 429, "login-throttled")

    identity.clock.advance(1)  # 2^(5-5) s later the next attempt is checked
    assert_problem(await identity.login(alice, "wrong-password", elsewhere), 401)
    assert (await identity.login(alice, password, elsewhere)).headers["retry-after"] == "2"
    identity.clock.advance(2)
    assert_problem(await identity.login(alice, "wrong-password", elsewhere), 401)
    assert (await identity.login(alice, password, elsewhere)).headers["retry-after"] == "4"
    identity.clock.advance(4)
    third = await identity.from_ip("10.0.0.3")
    assert (await identity.login(alice, password, third)).status_code == 200

    # The success reset the email's count: four new failures do not throttle it.
    fourth = await identity.from_ip("10.0.0.4")
    for _ in range(4):
        assert_problem(await identity.login(alice, "wrong-password", fourth), 401)
    assert (await identity.login(alice, password, await identity.from_ip("10.0.0.5"))).status_code == 200


async def test_failures_from_one_address_throttle_that_address(identity: Identity) -> None:
    identity.clock.freeze()
    sprayer = await identity.from_ip("192.0.2.66")
    for n in range(5):
        assert_problem(await identity.login(f"guess{n}@pizzeria.example", "Summer2026!", sprayer), 401)
    assert_problem(await identity.login(*DEMO["customer2"], client=sprayer), 429, "login-throttled")
    assert (await identity.login(*DEMO["customer2"], client=await identity.from_ip("192.0.2.7"))).status_code == 200


async def test_the_throttle_holds_across_restarts(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with identity_settings(backend, tmp_path, monkeypatch) as settings:
        async with running_identity(settings, monkeypatch) as first:
            for _ in range(5):
                assert_problem(await first.login(DEMO["staff"][0], "wrong-password"), 401)
        async with running_identity(settings, monkeypatch) as second:
            assert_problem(await second.login(*DEMO["staff"]), 429, "login-throttled")
            registered = [m for m in await second.outbox() if m["type"].endswith("UserRegistered.v1")]
            assert len(registered) == len(DEMO), "demo accounts are seeded once, not on every start"


# -- refresh tokens -----------------------------------------------------------------------------


async def refresh(identity: Identity, token: str) -> httpx.Response:
    return await identity.http.post(REFRESH, json={"refresh_token": token})


async def test_refresh_rotates_the_refresh_token(identity: Identity) -> None:
    signed_in = await identity.tokens("customer")
    first = await refresh(identity, signed_in["refresh_token"])
    assert first.status_code == 200, first.text
    rotated = first.json()
    assert rotated["refresh_token"] != signed_in["refresh_token"]
    assert rotated["token_type"] == "bearer"
    assert principal(identity, rotated).user_id == principal(identity, signed_in).user_id
    second = await refresh(identity, rotated["refresh_token"])
    assert second.status_code == 200
    assert second.json()["refresh_token"] not in {signed_in["refresh_token"], rotated["refresh_token"]}
    assert_problem(await refresh(identity, "x" * 43), 401, "invalid-refresh-token")


async def test_reusing_a_rotated_refresh_token_revokes_its_whole_family(identity: Identity) -> None:
    stolen = await identity.tokens("customer")
    other_device = await identity.tokens("customer")
    legit = (await refresh(identity, stolen["refresh_token"])).json()
    reused = await refresh(identity, stolen["refresh_token"])
    assert_problem(reused, 401, "refresh-token-reused")
    assert reused.headers["www-authenticate"].startswith("Bearer")
    assert_problem(await refresh(identity, legit["refresh_token"]), 401, "refresh-token-reused")  # family revoked
    assert (await refresh(identity, other_device["refresh_token"])).status_code == 200, "other sign-ins live on"


async def test_logout_revokes_the_sign_in(identity: Identity) -> None:
    signed_in = await identity.tokens("courier")
    rotated = (await refresh(identity, signed_in["refresh_token"])).json()
    logged_out = await identity.http.post(LOGOUT, json={"refresh_token": signed_in["refresh_token"]})
    assert logged_out.status_code == 204
    assert_problem(await refresh(identity, rotated["refresh_token"]), 401)
    again = await identity.http.post(LOGOUT, json={"refresh_token": rotated["refresh_token"]})
    assert again.status_code == 204, "logging out twice is fine"
    assert (await identity.http.post(LOGOUT, json={"refresh_token": "y" * 43})).status_code == 204


# -- admin-only account management ----------------------------------------------------------------


async def test_admin_endpoints_refuse_anonymous_and_other_roles(identity: Identity) -> None:
    target = principal(identity, await identity.tokens("customer2")).user_id
    calls = [
        ("GET", "/api/v1/users", None),
        ("GET", f"/api/v1/users/{target}", None),
        ("PUT", f"/api/v1/users/{target}", {"name": "Bob", "role": "admin"}),
        ("DELETE", f"/api/v1/users/{target}", None),
    ]
    for method, path, body in calls:
        assert_problem(await identity.http.request(method, path, json=body), 401, "unauthorized")
        for role in ("customer", "staff", "courier"):
            refused = await identity.http.request(method, path, json=body, headers=await identity.bearer(role))
            assert_problem(refused, 403, "forbidden")
    admin = await identity.bearer("admin")
    assert (await identity.http.get(f"/api/v1/users/{target}", headers=admin)).json()["role"] == "customer"


async def test_a_role_change_shows_in_the_next_token(identity: Identity) -> None:
    admin = await identity.bearer("admin")
    before = await identity.tokens("customer2")
    bob_id = principal(identity, before).user_id
    changed = await identity.http.put(
        f"/api/v1/users/{bob_id}", json={"name": "Bob the Chef", "role": "staff"}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["role"]) == ("Bob the Chef", "staff")
    assert principal(identity, await identity.tokens("customer2")).role == "staff"
    refreshed = (await refresh(identity, before["refresh_token"])).json()
    assert principal(identity, refreshed).role == "staff", "refresh reads the account, not the old token"
    updated = [m for m in await identity.outbox() if m["type"] == "pizzeria.identity.UserUpdated.v1"]
    assert [(m["key"], m["data"]["role"]) for m in updated] == [(bob_id, "staff")]


async def test_admins_cannot_demote_or_delete_themselves(identity: Identity) -> None:
    admin_tokens = await identity.tokens("admin")
    admin = {"Authorization": f"Bearer {admin_tokens['access_token']}"}
    me = principal(identity, admin_tokens).user_id
    demote = await identity.http.put(f"/api/v1/users/{me}", json={"name": "Admin", "role": "customer"}, headers=admin)
    assert_problem(demote, 409)
    assert_problem(await identity.http.delete(f"/api/v1/users/{me}", headers=admin), 409)


async def test_a_deleted_user_can_neither_sign_in_nor_refresh(identity: Identity) -> None:
    admin = await identity.bearer("admin")
    bob = await identity.tokens("customer2")
    bob_id = principal(identity, bob).user_id
    assert (await identity.http.delete(f"/api/v1/users/{bob_id}", headers=admin)).status_code == 204
    gone = await identity.login(*DEMO["customer2"])
    assert_problem(gone, 401, "invalid-credentials")
    assert gone.json() == (await identity.login(DEMO["customer2"][0], "wrong-password")).json()
    assert_problem(await refresh(identity, bob["refresh_token"]), 401, "invalid-refresh-token")
    me = await identity.http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {bob['access_token']}"})
    assert_problem(me, 401)
    assert_problem(await identity.http.get(f"/api/v1/users/{bob_id}", headers=admin), 404)
    assert_problem(await identity.http.delete(f"/api/v1/users/{bob_id}", headers=admin), 404)
    listed = (await identity.http.get("/api/v1/users", headers=admin)).json()["items"]
    assert bob_id not in {u["id"] for u in listed}
    deleted = [m for m in await identity.outbox() if m["type"] == "pizzeria.identity.UserDeleted.v1"]
    assert [m["key"] for m in deleted] == [bob_id]


async def test_admin_pages_through_users_newest_first(identity: Identity) -> None:
    admin = await identity.bearer("admin")
    ids = [
        (await identity.http.post(REGISTER, json=carol(email=f"user{n}@example.com"))).json()["id"] for n in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, "role": "customer", **({"cursor": cursor} if cursor else {})}
        page = (await identity.http.get("/api/v1/users", params=params, headers=admin)).json()
        seen += [u["id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen[:5] == list(reversed(ids))
    assert len(seen) == 7, "five new customers and the two demo customers"


# -- demo accounts and events ------------------------------------------------------------------------


async def test_demo_accounts_exist_after_start(identity: Identity) -> None:
    roles = {"customer": "customer", "customer2": "customer", "staff": "staff", "courier": "courier", "admin": "admin"}
    for who, role in roles.items():
        assert principal(identity, await identity.tokens(who)).role == role


async def test_registering_writes_user_registered_to_the_outbox(identity: Identity) -> None:
    user = (await identity.http.post(REGISTER, json=carol())).json()
    registered = [m for m in await identity.outbox() if m["key"] == user["id"]]
    assert len(registered) == 1
    message = registered[0]
    assert (message["type"], message["topic"]) == ("pizzeria.identity.UserRegistered.v1", "identity.events")
    data = message["data"]
    assert (data["user_id"], data["email"], data["name"], data["role"]) == (
        user["id"],
        "carol@example.com",
        "Carol",
        "customer",
    )
    assert "password" not in str(message)


async def test_production_mode_seeds_no_demo_accounts(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Production also insists on PostgreSQL and Kafka; only the seeding is under test here.
    monkeypatch.setattr(Settings, "production_problems", lambda self, service, **_: [])
    async with (
        identity_settings(backend, tmp_path, monkeypatch, PIZZERIA_MODE="production") as settings,
        running_identity(settings, monkeypatch) as identity,
    ):
        assert settings.mode == "production"
        assert_problem(await identity.login(*DEMO["admin"]), 401, "invalid-credentials")
        assert await identity.outbox() == []


async def test_a_valid_token_naming_no_account_gets_401_not_500(identity: Identity) -> None:
    stranger = issue_access_token(Principal(user_id="not-a-uuid", role="admin"), identity.settings).token
    headers = {"Authorization": f"Bearer {stranger}"}
    assert_problem(await identity.http.get("/api/v1/users/me", headers=headers), 401, "invalid-token")
    target = principal(identity, await identity.tokens("customer")).user_id
    assert_problem(await identity.http.delete(f"/api/v1/users/{target}", headers=headers), 401, "invalid-token")


async def test_sign_in_rehashes_a_password_hashed_with_older_parameters(identity: Identity) -> None:
    user = (await identity.http.post(REGISTER, json=carol())).json()
    stronger = PasswordHasher(time_cost=2, memory_cost=1024, parallelism=1)
    identity.app.state.parts.passwords._hasher = stronger
    assert (await identity.login("carol@example.com", "correct-horse-pizza")).status_code == 200
    async with identity.app.state.runtime.db.read() as conn:
        query = sa.select(users.c.password_hash).where(users.c.id == uuid.UUID(user["id"]))
        stored = (await conn.execute(query)).scalar()
    assert not stronger.check_needs_rehash(stored), "the stored hash now has today's parameters"
    assert (await identity.login("carol@example.com", "correct-horse-pizza")).status_code == 200


# -- hashes made ahead --------------------------------------------------------------------------


def test_the_hashes_made_ahead_are_of_their_passwords_with_the_default_parameters() -> None:
    hasher = default_hasher()  # argon2 at its production cost: what a new embedded identity uses
    for account in DEMO_ACCOUNTS:
        assert not hasher.check_needs_rehash(account.password_hash), account.email
        assert hasher.verify(account.password_hash, account.password), account.email
    assert not hasher.check_needs_rehash(DUMMY_HASH)
