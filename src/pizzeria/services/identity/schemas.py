"""Identity request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints

from pizzeria.kit.auth import Role
from pizzeria.kit.schemas import RequestBody
from pizzeria.services.identity.domain import (
    EMAIL_PATTERN,
    MAX_EMAIL_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
)

# Refresh tokens are 43 characters (32 random bytes, base64url); anything far off is not one.
RefreshTokenField = Field(min_length=16, max_length=256, description="the refresh token from sign-in or refresh")


#: Surrounding spaces are forgiven in emails (pasted addresses); never in passwords.
Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_EMAIL_LENGTH, pattern=EMAIL_PATTERN)]


class RegisterBody(RequestBody):
    email: Email = Field(examples=["carol@example.com"])
    password: str = Field(
        min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH, examples=["correct-horse-pizza"]
    )
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, examples=["Carol"])


class LoginBody(RequestBody):
    # No format rules here: a malformed email is simply an unknown account (the same 401).
    email: str = Field(min_length=1, max_length=MAX_EMAIL_LENGTH, examples=["alice@pizzeria.example"])
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH, examples=["alice-pizza-1"])


class RefreshBody(RequestBody):
    refresh_token: str = RefreshTokenField


class TokenPair(BaseModel):
    """What signing in or refreshing answers (OAuth 2.0 token response shape)."""

    access_token: str
    refresh_token: str = Field(description="single use: each refresh returns a new one")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds until the access token expires")


class UserView(BaseModel):
    id: UUID
    email: str
    name: str
    role: Role
    created_at: datetime
    updated_at: datetime


class UserUpdateBody(RequestBody):
    """An admin's edit of an account (PUT: both fields)."""

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    role: Role


class UserPage(BaseModel):
    items: list[UserView]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")
