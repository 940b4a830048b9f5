"""Payments' own settings: the provider, how long to wait for it, how many charges at once."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PaymentsSettings(BaseSettings):
    """Read from the environment; `.env.example` lists them."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    provider_url: str = Field("", alias="PAYMENT_PROVIDER_URL")  # empty: the simulator on this host
    timeout_ms: int = Field(3000, alias="PAYMENT_TIMEOUT_MS")
    concurrency: int = Field(16, alias="PAYMENT_CONCURRENCY")
    # A bulkhead: one customer's charges in flight at once, and the customers whose calls must
    # fail in a row before the breaker opens for everyone.
    concurrency_per_customer: int = Field(2, alias="PAYMENT_CONCURRENCY_PER_CUSTOMER", gt=0)
    breaker_customers: int = Field(2, alias="PAYMENT_BREAKER_CUSTOMERS", gt=0)
    max_attempts: int = Field(10, alias="PAYMENT_MAX_ATTEMPTS")
    breaker_failures: int = Field(5, alias="PAYMENT_BREAKER_FAILURES", gt=0)
    breaker_reset_s: float = Field(5.0, alias="PAYMENT_BREAKER_RESET_S", gt=0)
