"""Taking in a batch of one device's readings, from HTTP or MQTT alike: check the device's key
against the digest devices announced, check every reading, store the new ones and fold them
into their minutes, and turn what they mean into events, all in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pizzeria.contracts.telemetry import (
    CourierArriving,
    DeliveryEtaChanged,
    DeviceSeen,
    OvenTemperatureAlarm,
    OvenTemperatureRecovered,
)
from pizzeria.kit.auth import NOT_ITS_KEY, InvalidDeviceKey, device_key_matches
from pizzeria.kit.clock import utcnow
from pizzeria.kit.errors import ValidationFailed
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.telemetry import repository
from pizzeria.services.telemetry.domain import (
    DEFAULT_TARGET_C,
    VALUES,
    ArrivalRules,
    Band,
    DeviceKind,
    OvenState,
    Reading,
    checked_rows,
    due_to_announce,
    follow,
    from_ms,
    rollups,
    to_ms,
    watch_oven,
)
from pizzeria.services.telemetry.metrics import readings_ingested, readings_rejected
from pizzeria.services.telemetry.settings import TelemetrySettings


@dataclass(frozen=True)
class Ingested:
    """What became of a batch: readings stored now, and those stored before (sent again)."""

    stored: int
    duplicates: int


class Ingest:
    """One batch of one device's readings at a time (any number at once: each its own
    transaction; a device's batches wait for each other on its row)."""

    def __init__(self, settings: TelemetrySettings) -> None:
        self.settings = settings
        self.arrival = ArrivalRules(
            arriving_m=settings.arriving_distance_m,
            eta_change_s=settings.eta_change_s,
            usual_mps=settings.courier_speed_mps,
        )

    async def __call__(
        self, uow: UnitOfWork, device_id: UUID, key: str, batch: Sequence[Reading], *, source: str
    ) -> Ingested:
        """Take the batch in (`source`: where it came from, for the metrics)."""
        try:
            ingested = await self._take(uow, device_id, key, batch)
        except InvalidDeviceKey:
            readings_rejected.labels(source, "unauthorized").inc(len(batch))
            raise
        except ValidationFailed:
            readings_rejected.labels(source, "invalid").inc(len(batch))
            raise
        readings_ingested.labels(source, "stored").inc(ingested.stored)
        readings_ingested.labels(source, "duplicate").inc(ingested.duplicates)
        return ingested

    async def _take(self, uow: UnitOfWork, device_id: UUID, key: str, batch: Sequence[Reading]) -> Ingested:
        now = utcnow()
        async with uow:
            device = await repository.device(uow.conn, device_id, for_update=True)
            if device is None or not device_key_matches(key, device.key_digest):
                raise InvalidDeviceKey(NOT_ITS_KEY)
            kind = DeviceKind(device.kind)
            rows = checked_rows(
                kind,
                batch,
                earliest_ms=to_ms(now - timedelta(seconds=self.settings.retention_s)),
                latest_ms=to_ms(now + timedelta(seconds=self.settings.clock_skew_s)),
            )
            stored = await repository.add_readings(uow.conn, device_id, rows)
            new = rows if len(stored) == len(rows) else [row for row in rows if row["at_ms"] in stored]
            await repository.merge_rollups(uow.conn, device_id, rollups(kind, new))
            changes = self._follow(uow, device, kind, new, now)
            if kind is DeviceKind.TRACKER and "last_at_ms" in changes:
                await self._follow_courier(uow, device, changes, now)
            if due_to_announce(device.announced_at, now, self.settings.seen_every_s):
                uow.emit(DeviceSeen(device_id=device_id, at=now))
                changes["announced_at"] = now
            if changes:
                await repository.update_device(uow.conn, device_id, **changes)
            await uow.commit()
        return Ingested(stored=len(new), duplicates=len(batch) - len(new))

    def _follow(
        self, uow: UnitOfWork, device: Any, kind: DeviceKind, new: list[dict[str, Any]], now: datetime
    ) -> dict[str, Any]:
        """The device's newest values, and for an oven where it stands against its range
        (only readings newer than any before move them: a late one is stored, nothing more)."""
        newer = new if device.last_at_ms is None else [row for row in new if row["at_ms"] > device.last_at_ms]
        if not newer:
            return {}
        latest = newer[-1]
        changes: dict[str, Any] = {name: latest[name] for name in VALUES}
        changes.update(last_at_ms=latest["at_ms"], received_at=now)
        if kind is DeviceKind.OVEN:
            target = device.target_c if device.target_c is not None else DEFAULT_TARGET_C
            band = Band.around(target, self.settings.oven_tolerance_c)
            temperatures = ((row["at_ms"], row["temperature_c"]) for row in newer)
            state, excursions = watch_oven(OvenState(device.oven_state), band, temperatures)
            changes["oven_state"] = state.value
            for excursion in excursions:
                if excursion.direction is None:
                    uow.emit(
                        OvenTemperatureRecovered(
                            device_id=device.id,
                            station=device.station,
                            temperature_c=excursion.temperature_c,
                            at=from_ms(excursion.at_ms),
                        )
                    )
                else:
                    uow.emit(
                        OvenTemperatureAlarm(
                            device_id=device.id,
                            station=device.station,
                            direction=excursion.direction,
                            temperature_c=excursion.temperature_c,
                            low_c=band.low_c,
                            high_c=band.high_c,
                            at=from_ms(excursion.at_ms),
                        )
                    )
        return changes

    async def _follow_courier(self, uow: UnitOfWork, device: Any, latest: dict[str, Any], now: datetime) -> None:
        """The courier's newest position against each order they are out with."""
        if device.courier_id is None:
            return
        for delivery in await repository.out_with(uow.conn, device.courier_id):
            if delivery.dest_lat is None or delivery.dest_lon is None:
                continue  # its address's place is not known: no distance to tell
            progress = follow(
                self.arrival,
                position=(latest["lat"], latest["lon"]),
                speed_mps=latest["speed_mps"],
                destination=(delivery.dest_lat, delivery.dest_lon),
                arrived_before=delivery.arriving_at is not None,
                eta_announced=delivery.eta_s,
            )
            updates: dict[str, Any] = {}
            if progress.arriving:
                uow.emit(
                    CourierArriving(
                        order_id=delivery.order_id,
                        delivery_id=delivery.delivery_id,
                        customer_id=delivery.customer_id,
                        courier_id=delivery.courier_id,
                        distance_m=progress.distance_m,
                        eta_s=progress.eta_s,
                        at=now,
                    )
                )
                updates["arriving_at"] = now
            if progress.eta_changed:
                uow.emit(
                    DeliveryEtaChanged(
                        order_id=delivery.order_id,
                        delivery_id=delivery.delivery_id,
                        courier_id=delivery.courier_id,
                        eta_s=progress.eta_s,
                        distance_m=progress.distance_m,
                        at=now,
                    )
                )
                updates.update(eta_s=progress.eta_s, distance_m=progress.distance_m, eta_at=now)
            if updates:
                await repository.update_delivery(uow.conn, delivery.order_id, **updates)
