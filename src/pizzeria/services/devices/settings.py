"""Devices' own settings: when a silent device counts as offline, how long a command waits."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DevicesSettings(BaseSettings):
    """Read from the environment; `.env.example` lists them."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    #: A device that reported nothing for this long is offline (DeviceWentOffline).
    offline_after_s: float = Field(30.0, alias="DEVICE_OFFLINE_AFTER_S", gt=0)
    #: How long a command waits for its acknowledgement when the sender names no deadline.
    command_deadline_s: int = Field(30, alias="DEVICE_COMMAND_DEADLINE_S", ge=1, le=3600)
