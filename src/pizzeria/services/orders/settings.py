"""Orders' own settings: the order saga's deadlines."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrdersSettings(BaseSettings):
    """Read from the environment; `.env.example` lists them."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    reserve_timeout_s: float = Field(30.0, alias="SAGA_RESERVE_TIMEOUT_S")
    payment_timeout_s: float = Field(20.0, alias="SAGA_PAYMENT_TIMEOUT_S")
    kitchen_queue_timeout_s: float = Field(1800.0, alias="SAGA_KITCHEN_QUEUE_TIMEOUT_S")
    delivery_resend_s: float = Field(300.0, alias="SAGA_DELIVERY_RESEND_S")
    compensation_timeout_s: float = Field(30.0, alias="SAGA_COMPENSATION_TIMEOUT_S")
