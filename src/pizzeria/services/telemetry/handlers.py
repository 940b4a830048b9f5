"""The `telemetry` group: what telemetry keeps of other contexts' facts. From devices, each
device with its kind, place and key's digest, and an oven's desired temperature; from
delivery, each order out for delivery: who carries it, to whom, and where its address is."""

from __future__ import annotations

from collections.abc import Sequence

from pizzeria.contracts.delivery import DeliveryCompleted, DeliveryPickedUp
from pizzeria.contracts.devices import DeviceConfigurationChanged, DeviceRegistered
from pizzeria.kit.clock import utcnow
from pizzeria.kit.logging import get_logger
from pizzeria.messaging.consumer import HandlerRegistry, Incoming
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.telemetry import repository
from pizzeria.services.telemetry.domain import OvenState

log = get_logger(__name__)


def build_handlers() -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.on_batch(DeviceRegistered, DeviceConfigurationChanged)
    async def on_devices(items: Sequence[Incoming], uow: UnitOfWork) -> None:
        """In order: a device registered is known from now (a repeat changes nothing); a newer
        desired configuration gives an oven its range, which it is settling into until reached."""
        now = utcnow()
        for item in items:
            message = item.message
            if isinstance(message, DeviceRegistered):
                if message.key_digest is None:
                    log.warning("device registered without its key's digest: ignored", device_id=str(message.device_id))
                    continue
                await repository.add_devices(
                    uow.conn,
                    [
                        {
                            "id": message.device_id,
                            "kind": message.kind,
                            "station": message.station,
                            "courier_id": message.courier_id,
                            "key_digest": message.key_digest,
                            "target_c": None,
                            "config_version": 0,
                            "oven_state": OvenState.SETTLING.value,
                            "registered_at": now,
                        }
                    ],
                )
            else:
                temperature = message.desired.get("temperature_c")
                target = float(temperature) if isinstance(temperature, int | float) else None
                await repository.set_configuration(
                    uow.conn,
                    message.device_id,
                    target_c=target,
                    version=message.version,
                    state=OvenState.SETTLING.value,
                )

    @registry.on_batch(DeliveryPickedUp, DeliveryCompleted)
    async def on_deliveries(items: Sequence[Incoming], uow: UnitOfWork) -> None:
        """An order out for delivery is followed until it is delivered."""
        for item in items:
            message = item.message
            if isinstance(message, DeliveryPickedUp):
                destination = message.destination
                await repository.add_deliveries(
                    uow.conn,
                    [
                        {
                            "order_id": message.order_id,
                            "delivery_id": message.delivery_id,
                            "courier_id": str(message.courier_id),
                            "customer_id": message.customer_id or "",
                            "dest_lat": destination.lat if destination else None,
                            "dest_lon": destination.lon if destination else None,
                            "status": "out",
                            "picked_up_at": message.at,
                        }
                    ],
                )
            else:
                await repository.complete_delivery(uow.conn, message.order_id, message.at)

    return registry
