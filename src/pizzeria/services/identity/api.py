"""Identity HTTP routes: sign-up, sign-in, token refresh and logout; the caller's own account;
account management for admins."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response, status

from pizzeria.chassis.deps import RuntimeDep, parts_dependency
from pizzeria.kit.auth import Admin, CurrentPrincipal, InvalidToken, Principal, Role
from pizzeria.kit.clientaddr import client_address
from pizzeria.kit.errors import BadRequest, NotFound
from pizzeria.kit.settings import Settings
from pizzeria.services.identity import handlers, repository, sessions
from pizzeria.services.identity.domain import User
from pizzeria.services.identity.schemas import (
    LoginBody,
    RefreshBody,
    RegisterBody,
    TokenPair,
    UserPage,
    UserUpdateBody,
    UserView,
)
from pizzeria.services.identity.sessions import Credentials, Session

auth = APIRouter(prefix="/api/v1/auth", tags=["auth"])
users = APIRouter(prefix="/api/v1/users", tags=["users"])


CredentialsDep = Annotated[Credentials, parts_dependency(Credentials)]


class BadCursor(BadRequest):
    type_slug = "bad-cursor"
    title = "Bad cursor"


def view(user: User) -> UserView:
    return UserView(
        id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,
        created_at=user.created_at,
        updated_at=user.updated_at,
    )


def token_pair(session: Session) -> TokenPair:
    return TokenPair(
        access_token=session.access.token, refresh_token=session.refresh_token, expires_in=session.access.expires_in
    )


def client_ip(request: Request, settings: Settings) -> str:
    """The caller's address, for the sign-in throttle: the peer's, or what a trusted proxy (the
    gateway, a load balancer: TRUSTED_PROXIES) says it forwarded for. Never what a client says."""
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.getlist("x-forwarded-for"), settings.trusted_networks())


# -- sign-up, sign-in, refresh, logout ----------------------------------------------------------


@auth.post(
    "/register",
    response_model=UserView,
    status_code=status.HTTP_201_CREATED,
    summary="Create a customer account",
    responses={409: {"description": "email already registered"}, 422: {"description": "invalid input"}},
)
async def register(
    body: RegisterBody, runtime: RuntimeDep, credentials: CredentialsDep, response: Response
) -> UserView:
    user = await handlers.register(body.email, body.password, body.name, runtime.uow(), credentials.passwords)
    response.headers["Location"] = f"/api/v1/users/{user.id}"
    return view(user)


@auth.post(
    "/login",
    response_model=TokenPair,
    summary="Sign in: an access token and a refresh token",
    responses={
        401: {"description": "wrong email or password"},
        429: {"description": "too many failed sign-ins; see Retry-After"},
    },
)
async def login(body: LoginBody, request: Request, runtime: RuntimeDep, credentials: CredentialsDep) -> TokenPair:
    ip = client_ip(request, runtime.settings)
    session = await sessions.login(body.email, body.password, ip, runtime.uow(), credentials)
    return token_pair(session)


@auth.post(
    "/refresh",
    response_model=TokenPair,
    summary="Trade a refresh token for new tokens (rotation)",
    responses={401: {"description": "refresh token unknown, expired, revoked or reused"}},
)
async def refresh(body: RefreshBody, runtime: RuntimeDep, credentials: CredentialsDep) -> TokenPair:
    return token_pair(await sessions.refresh(body.refresh_token, runtime.uow(), credentials))


@auth.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End the sign-in of a refresh token")
async def logout(body: RefreshBody, runtime: RuntimeDep) -> Response:
    await sessions.logout(body.refresh_token, runtime.uow())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- accounts ---------------------------------------------------------------------------------


def _decode_cursor(cursor: str) -> UUID:
    try:
        return UUID(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("the cursor is not one this API returned") from None


def _encode_cursor(user_id: UUID) -> str:
    return base64.urlsafe_b64encode(str(user_id).encode()).decode().rstrip("=")


def account_id(principal: Principal) -> UUID:
    """The account a principal names (a valid token from elsewhere may name none)."""
    try:
        return UUID(principal.user_id)
    except ValueError:
        raise InvalidToken("the access token does not name an account of this service") from None


# Declared before `/{user_id}`, which would otherwise take "me" for a (malformed) id.
@users.get("/me", response_model=UserView, summary="The caller's own account")
async def me(principal: CurrentPrincipal, runtime: RuntimeDep) -> UserView:
    async with runtime.db.read() as conn:
        user = await repository.get_user(conn, account_id(principal))
    if user is None or user.deleted:
        raise InvalidToken("this account no longer exists")
    return view(user)


@users.get("", response_model=UserPage, summary="Accounts, newest first (admin)")
async def list_users(
    _: Admin,
    runtime: RuntimeDep,
    role: Role | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> UserPage:
    before = _decode_cursor(cursor) if cursor else None
    async with runtime.db.read() as conn:
        found = await repository.list_users(conn, limit=limit + 1, before=before, role=role)
    page, more = found[:limit], len(found) > limit
    return UserPage(items=[view(u) for u in page], next_cursor=_encode_cursor(page[-1].id) if more else None)


@users.get("/{user_id}", response_model=UserView, summary="One account (admin)")
async def get_user(user_id: UUID, _: Admin, runtime: RuntimeDep) -> UserView:
    async with runtime.db.read() as conn:
        user = await repository.get_user(conn, user_id)
    if user is None or user.deleted:
        raise NotFound(f"user {user_id} does not exist")
    return view(user)


@users.put(
    "/{user_id}",
    response_model=UserView,
    summary="Rename an account or change its role (admin)",
    responses={409: {"description": "admins cannot demote themselves"}},
)
async def update_user(user_id: UUID, body: UserUpdateBody, admin: Admin, runtime: RuntimeDep) -> UserView:
    user = await handlers.update_user(user_id, body.name, body.role, account_id(admin), runtime.uow())
    return view(user)


@users.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an account (admin)",
    responses={409: {"description": "admins cannot delete themselves"}},
)
async def delete_user(user_id: UUID, admin: Admin, runtime: RuntimeDep) -> Response:
    await handlers.delete_user(user_id, account_id(admin), runtime.uow())
    return Response(status_code=status.HTTP_204_NO_CONTENT)
