"""A poison message goes to its group's dead-letter topic and table; `pizzeria dlq` lists,
shows, replays and discards it, against a running service; with replicas, a replay happens
once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.db import Database
from pizzeria.kit.migrations import upgrade
from pizzeria.messaging.broker import OutgoingMessage, Record
from pizzeria.messaging.connect import broker_from_settings
from pizzeria.messaging.deadletters import DeadLetterStatus, DeadLetterStore
from pizzeria.messaging.tables import MESSAGING_MIGRATIONS, outbox
from pizzeria.messaging.uow import UnitOfWork
from tests.integration.services import embedded_settings, running
from tests.support.polling import eventually
from tests.support.tokens import bearer


def cli(var_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIZZERIA_VAR_DIR": str(var_dir)}
    return subprocess.run(
        [sys.executable, "-m", "pizzeria", "dlq", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_poison_message_lifecycle_through_the_cli(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    async with running("orders", settings) as (app, _):
        runtime: ServiceRuntime = app.state.runtime
        broker = broker_from_settings(settings)
        await broker.start()
        message_id = str(uuid.uuid4())
        # A catalog event whose data breaks its schema: it can never be processed.
        await broker.publish(
            [
                OutgoingMessage(
                    topic="catalog.events",
                    key="k",
                    value=orjson.dumps({"menu_item_id": "not-a-uuid"}),
                    headers={
                        "ce_id": message_id,
                        "ce_source": "/pizzeria/catalog",
                        "ce_specversion": "1.0",
                        "ce_type": "pizzeria.catalog.MenuItemUpdated.v1",
                        "ce_correlationid": "corr-1",
                    },
                )
            ]
        )
        store = runtime.dead_letters
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not await store.recent():
            await asyncio.sleep(0.05)
        [dead] = await store.recent()
        assert (dead["message_id"], dead["group_id"]) == (message_id, "orders")
        assert (dead["status"], dead["attempts"]) == ("dead", 1)
        assert dead["error"].startswith("schema:")

        # It also went to the group's dead-letter topic with its original headers.
        consumer = broker.consumer("dlq-watcher", ["orders.dlq"])
        await consumer.start()
        records = []
        while time.monotonic() < deadline and not records:
            records = await consumer.fetch(10, timeout=0.2)
        await consumer.close()
        assert records[0].headers["ce_id"] == message_id
        assert records[0].headers["dlq_group"] == "orders"
        assert records[0].headers["dlq_error"].startswith("schema:")
        assert records[0].headers["dlq_attempts"] == "1"
        assert records[0].headers["dlq_original_topic"] == "catalog.events"
        await broker.close()

        listed = cli(tmp_path, "list")
        assert listed.returncode == 0, listed.stderr
        assert dead["id"] in listed.stdout
        assert "pizzeria.catalog.MenuItemUpdated.v1" in listed.stdout
        shown = cli(tmp_path, "show", dead["id"])
        assert shown.returncode == 0, shown.stderr
        detail = orjson.loads(shown.stdout)
        assert detail["headers"]["ce_correlationid"] == "corr-1"
        assert detail["payload"] == {"menu_item_id": "not-a-uuid"}

        replayed = cli(tmp_path, "replay", dead["id"])
        assert replayed.returncode == 0, replayed.stderr
        # The consumer runs it again; it is still poison, so it is dead again, with both attempts.

        async def dead_again() -> dict[str, Any] | None:
            row = await store.get(dead["id"])
            return row if row and row["status"] == "dead" else None

        again = await eventually(dead_again, f"dead letter {dead['id']} never became dead", 20)
        assert again["attempts"] == 2

        assert cli(tmp_path, "discard", dead["id"]).returncode == 0
        assert (await store.get(dead["id"]))["status"] == "discarded"  # type: ignore[index]
        refused = cli(tmp_path, "replay", dead["id"])
        assert refused.returncode == 1
        assert "only 'dead' ones" in refused.stderr
        assert cli(tmp_path, "show", str(uuid.uuid4())).returncode == 1

        # The command line takes the same path as the API: each action is an `ops.events` fact
        # naming who did it, for the audit log.
        async with runtime.db.read() as conn:
            facts = (
                (
                    await conn.execute(
                        sa.select(outbox.c.headers).where(outbox.c.topic == "ops.events").order_by(outbox.c.seq)
                    )
                )
                .scalars()
                .all()
            )
        actions = [orjson.loads(h)["ce_type"] for h in facts]
        assert actions == ["pizzeria.ops.DeadLetterReplayRequested.v1", "pizzeria.ops.DeadLetterDiscarded.v1"]


async def test_a_dead_letter_of_a_group_that_no_longer_runs_is_refused_a_replay_not_left_waiting(
    tmp_path: Path,
) -> None:
    """A dead letter of a consumer group the service does not run (an earlier release's, as the
    audit service's `analytics`, or the order views' base group, which runs only as
    generations): nothing would replay it, so the API and the command refuse (409) instead of
    leaving it to wait for ever, and it can still be discarded. One of a group that runs is
    replayed as ever."""
    settings = embedded_settings(tmp_path)
    admin = bearer("admin-1", "admin", settings=settings)
    async with running("orders", settings, headers=admin) as (app, client):
        runtime: ServiceRuntime = app.state.runtime
        store = runtime.dead_letters
        for n, group in enumerate(("analytics", "orders-projection", "orders")):
            record = Record("catalog.events", 0, n, b"{}", "k", {"ce_id": f"m-{n}"}, timestamp_ms=0)
            await store.add(group, record, None, "schema: broken", 1, topic=f"{group}.dlq")
        ids = {r["group_id"]: r["id"] for r in await store.recent()}

        refused = await client.post(f"/api/v1/ops/dlq/{ids['orders-projection']}/replay")
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "no longer runs in orders" in refused.json()["detail"]
        by_cli = cli(tmp_path, "replay", ids["analytics"])
        assert by_cli.returncode == 1
        assert "consumer group analytics, which no longer runs in orders" in by_cli.stderr
        assert (await client.post(f"/api/v1/ops/dlq/{ids['orders']}/replay")).status_code == 202
        assert cli(tmp_path, "discard", ids["analytics"]).returncode == 0
        statuses = {r["group_id"]: r["status"] for r in await store.recent()}
        assert statuses["orders-projection"] == "dead"
        assert statuses["analytics"] == "discarded"
        assert statuses["orders"] in ("replay_requested", "dead")  # taken up within a second


async def test_replicas_replay_a_dead_letter_once(pg_url: str) -> None:
    """Every replica's replayer sees the replay request; the one that takes a dead letter holds
    it while it replays, the others pass it by, and once it is replayed nobody takes it again;
    a replica that lets go without replaying (it died) leaves it to the next."""
    await upgrade(pg_url, [MESSAGING_MIGRATIONS])
    databases = [Database(pg_url, pool_size=2), Database(pg_url, pool_size=2)]
    first, second = (DeadLetterStore(db, partial(UnitOfWork, db, source="/pizzeria/test")) for db in databases)
    try:
        ids = []
        for offset in range(2):
            record = Record(topic="t", partition=0, offset=offset, value=b"{}", key="k", headers={}, timestamp_ms=0)
            await first.add("g", record, None, "poison", 1)
        for row in await first.recent():
            async with databases[0].transaction() as conn:
                assert await first.leave_dead(conn, row["id"], DeadLetterStatus.REPLAY_REQUESTED)
            ids.append(row["id"])
        replayed, abandoned = ids

        async with first.replaying(replayed) as mine:
            assert mine
            async with second.replaying(replayed) as theirs:
                assert not theirs, "taken by the first replica: the second passes it by"
            await first.mark_replayed(replayed)
        async with second.replaying(replayed) as theirs:
            assert not theirs, "replayed already"

        async with first.replaying(abandoned) as mine:
            assert mine  # ... and the replica dies before replaying it: its transaction ends
        async with second.replaying(abandoned) as theirs:
            assert theirs, "still waiting for its replay: the next replica takes it"
    finally:
        for db in databases:
            await db.dispose()
