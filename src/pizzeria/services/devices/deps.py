"""What devices' routes are handed: the parts its composition root built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pizzeria.chassis.deps import parts_dependency
from pizzeria.services.devices.settings import DevicesSettings


@dataclass(frozen=True)
class DevicesParts:
    """Devices besides its runtime: its own settings (a command's default deadline)."""

    settings: DevicesSettings


DevicesDep = Annotated[DevicesParts, parts_dependency(DevicesParts)]
