"""Value types shared by several contracts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Money(BaseModel):
    """An amount in integer minor units (cents) with its ISO 4217 currency."""

    model_config = ConfigDict(frozen=True)

    amount: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)
