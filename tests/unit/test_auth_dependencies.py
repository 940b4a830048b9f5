"""The route dependencies: `CurrentPrincipal` answers 401 problem+json with `WWW-Authenticate`
when there is no valid bearer token, `require_roles` answers 403 to the other roles."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends

from pizzeria.kit.auth import CurrentPrincipal, Principal, issue_access_token, require_roles
from pizzeria.kit.http import http_app
from pizzeria.kit.settings import Settings

SETTINGS = Settings(JWT_SECRET="dependency-test-secret-long-enough-for-hs256")
router = APIRouter()


@router.get("/whoami")
async def whoami(principal: CurrentPrincipal) -> dict[str, str | None]:
    return {"user_id": principal.user_id, "role": principal.role, "email": principal.email}


@router.get("/kitchen")
async def kitchen(principal: Annotated[Principal, Depends(require_roles("staff", "admin"))]) -> dict[str, str]:
    return {"role": principal.role}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = http_app(service="test", routers=[router])
    app.state.settings = SETTINGS
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        yield http


def bearer(role: str, user_id: str = "u-1") -> dict[str, str]:
    token = issue_access_token(Principal(user_id=user_id, role=role), SETTINGS).token
    return {"Authorization": f"Bearer {token}"}


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["detail"]


async def test_a_valid_token_names_the_caller(client: httpx.AsyncClient) -> None:
    response = await client.get("/whoami", headers=bearer("customer", "u-42"))
    assert response.json() == {"user_id": "u-42", "role": "customer", "email": None}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        {"Authorization": "Bearer not.a.token"},
        {"Authorization": "Bearer " + "x" * 5000},
    ],
)
async def test_missing_or_invalid_credentials_get_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    assert_401(await client.get("/whoami", headers=headers))


async def test_a_token_signed_with_another_secret_gets_401(client: httpx.AsyncClient) -> None:
    other = Settings(JWT_SECRET="some-other-secret-that-is-long-enough-too")
    token = issue_access_token(Principal(user_id="u-1", role="admin"), other).token
    response = await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
    assert_401(response)
    assert response.json()["type"].endswith("/invalid-token")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(("role", "status"), [("customer", 403), ("courier", 403), ("staff", 200), ("admin", 200)])
async def test_require_roles_lets_only_the_named_roles_in(client: httpx.AsyncClient, role: str, status: int) -> None:
    response = await client.get("/kitchen", headers=bearer(role))
    assert response.status_code == status, response.text
    if status == 403:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"].endswith("/forbidden")


async def test_require_roles_answers_401_not_403_to_anonymous(client: httpx.AsyncClient) -> None:
    assert_401(await client.get("/kitchen"))


def test_require_roles_refuses_unknown_roles() -> None:
    with pytest.raises(ValueError, match="known roles"):
        require_roles("chef")
    with pytest.raises(ValueError, match="known roles"):
        require_roles()
