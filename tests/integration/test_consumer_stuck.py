"""A service whose consumer group is held up on one record is not ready: `/ready` answers 503
naming the group and `pizzeria_consumer_stuck` is 1 until the record is settled. Here the
record cannot even be dead-lettered (the dead-letter table is gone), as when the service
database refuses every write."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import sqlalchemy as sa
from prometheus_client import REGISTRY as METRICS

from pizzeria.messaging.broker import OutgoingMessage
from pizzeria.messaging.connect import broker_from_settings
from pizzeria.messaging.tables import dead_letters
from tests.integration.services import embedded_settings, running


async def until_ready_is(client: object, status: int, timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/ready")  # type: ignore[attr-defined]
        if response.status_code == status:
            body: dict[str, object] = response.json()
            return body
        assert time.monotonic() < deadline, f"/ready never answered {status}: {response.text}"
        await asyncio.sleep(0.05)


async def test_a_group_held_up_on_one_record_makes_the_service_not_ready_until_it_moves_on(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path, CONSUMER_STUCK_AFTER_S="0.5")
    async with running("notifications", settings) as (app, client):
        await until_ready_is(client, 200)
        db = app.state.runtime.db
        async with db.transaction() as conn:
            await conn.run_sync(dead_letters.drop)
        broker = broker_from_settings(settings)
        await broker.start()
        try:
            await broker.publish([OutgoingMessage("orders.events", b"{}", "k", {"ce_id": "not-a-cloudevent"})])
        finally:
            await broker.close()

        body = await until_ready_is(client, 503)
        assert "notifications" in str(body["checks"]["consumers"])  # type: ignore[index]
        assert METRICS.get_sample_value("pizzeria_consumer_stuck", {"group": "notifications"}) == 1.0

        async with db.transaction() as conn:
            await conn.run_sync(dead_letters.create)
        await until_ready_is(client, 200)
        assert METRICS.get_sample_value("pizzeria_consumer_stuck", {"group": "notifications"}) == 0.0
        async with db.read() as conn:
            [error] = (await conn.execute(sa.select(dead_letters.c.error))).scalars().all()
        assert error.startswith("malformed: not a CloudEvent")
