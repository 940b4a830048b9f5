"""The retention loop: raw readings older than TELEMETRY_RETENTION_S and per-minute rollups
older than TELEMETRY_ROLLUP_RETENTION_S are deleted, device by device, a chunk at a time (a
backlog never holds the write lock for long; the loop runs again at once while one is left)."""

from __future__ import annotations

from datetime import timedelta

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.clock import utcnow
from pizzeria.kit.logging import get_logger
from pizzeria.kit.loops import StepResult
from pizzeria.services.telemetry import repository
from pizzeria.services.telemetry.domain import to_ms
from pizzeria.services.telemetry.settings import TelemetrySettings
from pizzeria.services.telemetry.tables import readings, rollups

log = get_logger(__name__)

#: The most rows of one device and table one transaction deletes.
CHUNK = 5000


class Retention:
    def __init__(self, runtime: ServiceRuntime, settings: TelemetrySettings) -> None:
        self.runtime = runtime
        self.settings = settings

    async def step(self) -> StepResult:
        """Delete what is past its retention; True while more is left."""
        now = utcnow()
        cutoffs = (
            (readings, to_ms(now - timedelta(seconds=self.settings.retention_s))),
            (rollups, to_ms(now - timedelta(seconds=self.settings.rollup_retention_s))),
        )
        due = []
        async with self.runtime.db.read() as conn:  # most steps find nothing: no write for that
            for device_id in await repository.device_ids(conn):
                for table, cutoff in cutoffs:
                    first = await repository.oldest(conn, table, device_id)
                    if first is not None and first < cutoff:
                        due.append((device_id, table, cutoff))
        deleted, more = {"readings": 0, "rollups": 0}, False
        for device_id, table, cutoff in due:
            async with self.runtime.db.transaction() as conn:
                gone = await repository.delete_before(conn, table, device_id, cutoff, CHUNK)
            deleted[str(table.name)] += gone
            more = more or gone >= CHUNK
        if any(deleted.values()):
            log.info("old readings deleted", **deleted)
        return more
