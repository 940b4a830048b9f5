"""The simulated devices' settings, apart from the simulator so that asking whether they run
(`pizzeria up`) imports no web framework."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FleetSettings(BaseSettings):
    """The simulated devices (read from the environment)."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    #: Whether `pizzeria up` starts the simulators (`make run` sets it).
    enabled: bool = Field(False, alias="DEVICE_SIMULATORS")
    ovens: int = Field(2, alias="SIM_OVENS", ge=0, le=20)
    tick_s: float = Field(1.0, alias="SIM_TICK_S", gt=0, le=60)
    oven_batch: int = Field(5, alias="SIM_OVEN_BATCH", ge=1, le=1000)
    trip_s: float = Field(18.0, alias="SIM_TRIP_S", gt=0, le=3600)
    idle_every: int = Field(10, alias="SIM_IDLE_EVERY", ge=1, le=3600)
    staff_email: str = Field("chef@pizzeria.example", alias="SIM_STAFF_EMAIL")
    staff_password: str = Field("chef-pizza-1", alias="SIM_STAFF_PASSWORD")
