"""Access ends everywhere within seconds of a sign-out, a role change or a deletion: identity
moves the account's token epoch on and says so in its events; every service keeps the newest
epoch of each account (its `<service>-access` group) and refuses access tokens of an older one,
while tokens of the current epoch and other accounts' tokens keep working."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pizzeria.contracts.identity import UserSignedOut
from pizzeria.contracts.topology import TOKEN_CHECKERS
from pizzeria.kit.auth import Principal, decode_access_token, issue_access_token
from pizzeria.kit.clock import utcnow
from pizzeria.messaging.connect import broker_from_settings
from pizzeria.messaging.envelope import Envelope
from tests.integration.gateway import Gateway, problem
from tests.integration.identity import Identity, identity_settings, running_identity
from tests.integration.services import embedded_settings, running
from tests.integration.test_service_api import assert_problem
from tests.support.polling import eventually


@pytest.mark.parametrize("service", TOKEN_CHECKERS)
async def test_each_service_refuses_tokens_of_an_older_epoch_once_identity_says_so(
    service: str, tmp_path: Path
) -> None:
    settings = embedded_settings(tmp_path)
    user, other = str(uuid.uuid4()), str(uuid.uuid4())

    def bearer(user_id: str, epoch: int) -> dict[str, str]:
        token = issue_access_token(Principal(user_id=user_id, role="admin", epoch=epoch), settings).token
        return {"Authorization": f"Bearer {token}"}

    async with running(service, settings) as (_, client):

        async def status(headers: dict[str, str]) -> int:
            return (await client.get("/api/v1/ops/dlq", headers=headers)).status_code

        assert await status(bearer(user, 0)) == 200
        broker = broker_from_settings(settings)
        await broker.start()
        try:
            signed_out = UserSignedOut(user_id=uuid.UUID(user), token_epoch=1, at=utcnow())
            await broker.publish(
                [Envelope.wrap(signed_out, source="/pizzeria/identity").to_outgoing(signed_out.topic())]
            )
        finally:
            await broker.close()

        async def refused() -> bool:
            return await status(bearer(user, 0)) == 401

        await eventually(refused, f"{service} to refuse the signed-out token", 20.0)
        body = assert_problem(await client.get("/api/v1/ops/dlq", headers=bearer(user, 0)), 401, "invalid-token")
        assert "revoked" in body["detail"]
        assert await status(bearer(user, 1)) == 200, "a token of the current epoch works"
        assert await status(bearer(other, 0)) == 200, "other accounts are not touched"


# -- identity: the epoch moves on, and its own tokens stop working ------------------------------------


@pytest.fixture
async def identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Identity]:
    async with (
        identity_settings("sqlite", tmp_path, monkeypatch) as settings,
        running_identity(settings, monkeypatch) as started,
    ):
        yield started


async def refused_by_identity(identity: Identity, access_token: str) -> bool:
    me = await identity.http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {access_token}"})
    return me.status_code == 401


async def test_sign_out_ends_every_access_token_of_the_user_and_a_refresh_gets_a_new_one(identity: Identity) -> None:
    first, second = await identity.tokens("customer"), await identity.tokens("customer")
    logout = await identity.http.post("/api/v1/auth/logout", json={"refresh_token": first["refresh_token"]})
    assert logout.status_code == 204
    for access in (first["access_token"], second["access_token"]):
        await eventually(lambda a=access: refused_by_identity(identity, a), "the old access tokens refused", 20.0)
    renewed = (await identity.http.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})).json()
    assert not await refused_by_identity(identity, renewed["access_token"])
    epochs = [decode_access_token(t["access_token"], identity.settings).epoch for t in (first, second, renewed)]
    assert epochs[0] == epochs[1] < epochs[2]
    [event] = [m for m in await identity.outbox() if m["type"] == UserSignedOut.type_name()]
    assert event["data"]["token_epoch"] == epochs[2]


async def test_a_role_change_or_a_deletion_ends_the_access_tokens_issued_before(identity: Identity) -> None:
    admin = await identity.bearer("admin")
    chef, bob = await identity.tokens("staff"), await identity.tokens("customer2")
    chef_id = decode_access_token(chef["access_token"], identity.settings).user_id
    bob_id = decode_access_token(bob["access_token"], identity.settings).user_id
    renamed = await identity.http.put(f"/api/v1/users/{chef_id}", json={"name": "Chef", "role": "staff"}, headers=admin)
    assert renamed.status_code == 200
    assert not await refused_by_identity(identity, chef["access_token"]), "a new name changes no access"
    demoted = await identity.http.put(
        f"/api/v1/users/{chef_id}", json={"name": "Chef", "role": "customer"}, headers=admin
    )
    assert demoted.status_code == 200
    assert (await identity.http.delete(f"/api/v1/users/{bob_id}", headers=admin)).status_code == 204
    for access in (chef["access_token"], bob["access_token"]):
        await eventually(lambda a=access: refused_by_identity(identity, a), "the old access tokens refused", 20.0)
    assert not await refused_by_identity(identity, (await identity.tokens("admin"))["access_token"])


# -- the gateway's own answers -------------------------------------------------------------------------


async def test_the_gateway_answers_401_where_services_refuse_the_token(gateway: Gateway) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401,
            json={"type": "x", "title": "Invalid token", "status": 401, "detail": "this access token was revoked"},
            headers={"content-type": "application/problem+json"},
        )

    for upstream in gateway.upstreams.values():
        upstream.answer = refuse
    for path, role in (
        ("/api/v1/me/overview", "customer"),
        ("/api/v1/ops/dlq", "admin"),
        ("/api/v1/ops/outbox", "admin"),
    ):
        body = problem(await gateway.client.get(path, headers=gateway.token(role)), 401, "invalid-token")
        assert "revoked" in body["detail"], path
