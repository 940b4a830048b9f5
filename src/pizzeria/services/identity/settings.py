"""Identity's own settings: how much password hashing may wait."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IdentitySettings(BaseSettings):
    """Read from the environment; `.env.example` lists them."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    # Hashes run one per CPU at a time; this many more may wait for their turn, each at most
    # this long (seconds), else the request is refused at once (503 + Retry-After): well within
    # the gateway's deadline, so a burst of sign-ins never looks like identity being down.
    password_hash_queue: int = Field(32, alias="PASSWORD_HASH_QUEUE", ge=0)
    password_hash_wait_s: float = Field(2.0, alias="PASSWORD_HASH_WAIT_S", gt=0)
