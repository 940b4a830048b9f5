"""Delivery's own settings: the autopilot that drives couriers without people (demos, benchmarks)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeliverySettings(BaseSettings):
    """Read from the environment; `.env.example` lists them."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    autopilot: bool = Field(False, alias="DELIVERY_AUTOPILOT")
    stage_ms: int = Field(3000, alias="DELIVERY_STAGE_MS")
