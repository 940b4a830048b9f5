"""Kitchen's own settings: the autopilot that cooks without staff (demos, benchmarks)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KitchenSettings(BaseSettings):
    """Read from the environment; `.env.example` lists them."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    autopilot: bool = Field(False, alias="KITCHEN_AUTOPILOT")
    stage_ms: int = Field(2000, alias="KITCHEN_STAGE_MS")
