"""What telemetry's routes are handed: the parts its composition root built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pizzeria.chassis.deps import parts_dependency
from pizzeria.services.telemetry.ingest import Ingest
from pizzeria.services.telemetry.settings import TelemetrySettings


@dataclass(frozen=True)
class TelemetryParts:
    """Telemetry besides its runtime: its settings and the ingest every batch goes through."""

    settings: TelemetrySettings
    ingest: Ingest


TelemetryDep = Annotated[TelemetryParts, parts_dependency(TelemetryParts)]
