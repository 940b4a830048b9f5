"""The gateway's own settings: deadlines, retries and breakers of upstream calls, rate limits, CORS,
the payment provider (for the fault lab)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """Read from the environment; `.env.example` lists them."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    upstream_timeout_s: float = Field(5.0, alias="GATEWAY_UPSTREAM_TIMEOUT_S", gt=0)
    read_retries: int = Field(2, alias="GATEWAY_READ_RETRIES", ge=0)
    breaker_failures: int = Field(5, alias="GATEWAY_BREAKER_FAILURES", gt=0)
    breaker_reset_s: float = Field(10.0, alias="GATEWAY_BREAKER_RESET_S", gt=0)
    # Connections to each upstream for requests, and (a pool of their own) for streams: the
    # gateway holds at most that many streams in all, and one caller at most streams_per_user.
    upstream_connections: int = Field(200, alias="GATEWAY_UPSTREAM_CONNECTIONS", gt=0)
    stream_connections: int = Field(1000, alias="GATEWAY_STREAM_CONNECTIONS", gt=0)
    streams_per_user: int = Field(5, alias="GATEWAY_STREAMS_PER_USER", gt=0)
    rate_limit_per_user: int = Field(600, alias="RATE_LIMIT_PER_USER", gt=0)
    rate_limit_per_ip: int = Field(1200, alias="RATE_LIMIT_PER_IP", gt=0)
    rate_limit_window_s: int = Field(60, alias="RATE_LIMIT_WINDOW_S", gt=0)
    cors_origins: str = Field("http://127.0.0.1:8000,http://localhost:8000", alias="CORS_ORIGINS")
    # The fault lab's switches reach the payment provider payments uses (empty: the simulator on
    # this host).
    provider_url: str = Field("", alias="PAYMENT_PROVIDER_URL")
