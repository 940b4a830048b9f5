"""Poison on every topic of the running system, on the embedded stack and on PostgreSQL + Apache
Kafka, as a broken or hostile producer would write it: records that are not a CloudEvent (no
attributes, a spec version of another day, no type, a time that is not one), a type nobody
declares, and for every message type of the contracts another schema version, data missing its
fields, data of the wrong types, data that is not JSON, text with a lone surrogate, with NUL,
right-to-left overrides and 100 000 characters; and 900 kB of data on each topic.

What each consumer group reading the topic must make of each record follows from what it
handles (its own HandlerRegistry, built here as its service builds it):

- not a CloudEvent: a dead letter, `malformed: ...`;
- a type the group does not take: ignored (messaging/consumer.py: a topic carries types for
  other groups too), unless it takes another version of it: a dead letter, `unknown schema
  version: ...`;
- a type it takes, with data its schema refuses: a dead letter, `schema: ...`;
- the audit log takes every type undecoded and keeps what came: the entry is recorded when the
  data is JSON, else a dead letter `permanent: ... not JSON`; with NUL in its text (which
  PostgreSQL's JSON cannot hold), a dead letter `permanent: ... NUL ...` at once (the analytics
  beside the log, read from the same runs, count the facts they cannot read and leave them).

And nothing else happens: no order, ticket, delivery, notification, stock or menu changes; no
service restarts (nothing crash-loops) and every one stays ready (no group is stuck); the next
good order is delivered."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from pizzeria.chassis.access import access_handlers
from pizzeria.contracts.topology import (
    COMMAND_TOPICS,
    CONSUMER_GROUPS,
    EVENT_TOPICS,
    REBUILT_GROUPS,
    TOKEN_CHECKERS,
    access_group,
    generations_of,
)
from pizzeria.kit.settings import Settings
from pizzeria.messaging.broker import Broker, OutgoingMessage
from pizzeria.messaging.connect import broker_from_settings
from pizzeria.messaging.consumer import HandlerRegistry
from pizzeria.messaging.message import REGISTRY, Message
from pizzeria.registry import SERVICES
from pizzeria.services.audit import handlers as audit
from pizzeria.services.delivery import handlers as delivery
from pizzeria.services.devices import handlers as devices
from pizzeria.services.kitchen import handlers as kitchen
from pizzeria.services.notifications.handlers import build_events
from pizzeria.services.orders import handlers as orders
from pizzeria.services.orders.projection import build_projector
from pizzeria.services.payments import handlers as payments
from pizzeria.services.telemetry import handlers as telemetry
from tests.e2e.conftest import start_system
from tests.e2e.scenario import TERMINAL, holds_within, wait_for_menu_sync
from tests.e2e.system import Shop, System
from tests.support.kafka import KafkaCluster

pytestmark = pytest.mark.e2e

TOPICS = (*EVENT_TOPICS, *COMMAND_TOPICS)
#: Under the 1 MB a Kafka record may have by default (its dead letter carries it again).
ENORMOUS = 900_000
#: Text no field should take whole: a lone surrogate is not even JSON; NUL, a right-to-left
#: override and 100 000 characters are, and no schema of ours takes them where an id goes.
LONE_SURROGATE = '"\\ud800 lone"'
HOSTILE_TEXT = "\x00\u202egnp.exe\u202c"
LONG_TEXT = "\u0635" * 100_000


def registries() -> dict[str, HandlerRegistry]:
    """Every consumer group's handlers, as its service builds them (what the handlers act on is
    never called here: only which types they take)."""
    stand_in: Any = None

    def wake() -> None:
        return None

    found = {
        "orders": orders.build_handlers(stand_in),
        "orders-projection": build_projector(1),
        "kitchen": kitchen.build_handlers(),
        "kitchen-menu": kitchen.build_menu_handlers(),
        "payments": payments.build_handlers(wake),
        "delivery": delivery.build_handlers(wake),
        "notifications": build_events(wake),
        "audit": audit.build_handlers(),
        "devices": devices.build_handlers(),
        "telemetry": telemetry.build_handlers(),
        **{access_group(s): access_handlers(stand_in) for s in TOKEN_CHECKERS},
    }
    assert set(found) == set(CONSUMER_GROUPS), "a consumer group this test does not know: add it"
    return found


@dataclass(frozen=True)
class Poison:
    """One record as written to `topic` (its key names it), and what it is."""

    key: str
    topic: str
    kind: str
    headers: dict[str, str]
    value: bytes
    #: False: the record is not a CloudEvent at all.
    envelope: bool = True

    @property
    def type(self) -> str:
        return self.headers.get("ce_type", "")

    @property
    def message_id(self) -> str:
        return self.headers.get("ce_id", "")

    def outgoing(self) -> OutgoingMessage:
        return OutgoingMessage(self.topic, self.value, self.key, self.headers)

    def outcome(self, handlers: HandlerRegistry) -> tuple[str, str]:
        """What a group with these handlers must make of it: ("dead", what its error begins
        with), ("ignored", "") or ("recorded", "") (the audit log)."""
        if not self.envelope:
            return "dead", "malformed: "
        route = handlers.get(self.type)
        if route is None:
            return ("dead", "unknown schema version: ") if handlers.other_versions(self.type) else ("ignored", "")
        if route.model is None:  # every type, undecoded: the audit log keeps what came
            try:
                orjson.loads(self.value)
            except orjson.JSONDecodeError:
                return "dead", "permanent: "
            # NUL in text no store keeps (audit/handlers.py: refused at once, on SQLite too).
            return ("dead", "permanent: ") if b"\\u0000" in self.value else ("recorded", "")
        return "dead", "schema: "


def attributes(type_name: str, context: str) -> dict[str, str]:
    return {
        "ce_id": str(uuid.uuid4()),
        "ce_source": f"/forged/{context}",
        "ce_specversion": "1.0",
        "ce_type": type_name,
        "ce_time": "2026-11-22T10:00:00+00:00",
        "content-type": "application/json",
    }


def wrong_types(message: type[Message]) -> bytes:
    """Every field of `message` given an object of the wrong shape (or, where an object goes,
    a number)."""
    data = {
        name: 7 if "dict" in str(info.annotation).lower() or "BaseModel" in str(info.annotation) else {"x": [1]}
        for name, info in message.model_fields.items()
    }
    return orjson.dumps(data)


def poison() -> list[Poison]:
    """The records: for every topic, those of no type or no schema; for every message type of
    the contracts, those of its type that its schema refuses."""
    found: list[Poison] = []

    def add(topic: str, kind: str, headers: dict[str, str], value: bytes, *, envelope: bool = True) -> None:
        found.append(Poison(f"poison-{len(found)}-{kind}", topic, kind, headers, value, envelope))

    for topic in TOPICS:
        context = topic.split(".")[0]
        declared = sorted((m for m in REGISTRY.values() if m.topic() == topic), key=lambda m: m.type_name())
        some = declared[0].type_name()
        add(topic, "no attributes", {}, b"\x00\xffnot an event, not JSON", envelope=False)
        add(topic, "spec version 0.3", {**attributes(some, context), "ce_specversion": "0.3"}, b"{}", envelope=False)
        without_type = {k: v for k, v in attributes(some, context).items() if k != "ce_type"}
        add(topic, "no type", without_type, b"{}", envelope=False)
        add(topic, "time not a time", {**attributes(some, context), "ce_time": "yesterday"}, b"{}", envelope=False)
        add(topic, "unknown type", attributes(f"pizzeria.{context}.NoSuchThing.v1", context), b"{}")
        enormous = orjson.dumps({"padding": "x" * ENORMOUS})
        add(topic, "enormous", attributes(some, context), enormous)
        for message in declared:
            name = message.type_name()
            other_version = f"{name.rpartition('.')[0]}.v99"
            add(topic, "other schema version", attributes(other_version, context), b"{}")
            add(topic, "missing fields", attributes(name, context), b"{}")
            add(topic, "wrong types", attributes(name, context), wrong_types(message))
            add(topic, "not JSON", attributes(name, context), b'{"order_id": ')
            fields = list(message.model_fields)
            add(topic, "lone surrogate", attributes(name, context), f'{{"{fields[0]}": {LONE_SURROGATE}}}'.encode())
            hostile = {f: LONG_TEXT if n == 0 else HOSTILE_TEXT for n, f in enumerate(fields)}
            add(topic, "hostile text", attributes(name, context), orjson.dumps(hostile))
    return found


def group_of(group_id: str) -> str:
    """The consumer group a dead letter's group belongs to (a rebuilt group's generations are
    one group)."""
    return next((g for g in REBUILT_GROUPS if group_id.startswith(generations_of(g))), group_id)


@dataclass
class Expected:
    dead: dict[tuple[str, str], str] = field(default_factory=dict)  # (group, key) → error prefix
    recorded: set[str] = field(default_factory=set)  # message ids the audit log must hold


def expectations(records: list[Poison]) -> Expected:
    handlers = registries()
    expected = Expected()
    for record in records:
        for group, topics in CONSUMER_GROUPS.items():
            if record.topic not in topics:
                continue
            outcome, reason = record.outcome(handlers[group])
            if outcome == "dead":
                expected.dead[(group, record.key)] = reason
            elif outcome == "recorded":
                expected.recorded.add(record.message_id)
    return expected


@pytest.fixture
async def running(
    stack: tuple[str, dict[str, str]], tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[System, Broker]]:
    """The system, with orders knowing the menu, and a broker client that writes as anyone."""
    name, env = stack
    system = await start_system(tmp_path, {**env, "RATE_LIMIT_PER_IP": "100000", "RATE_LIMIT_PER_USER": "100000"})
    shop = Shop(system)
    try:
        for warmup in await wait_for_menu_sync(shop, await shop.menu()):
            await delivered(shop, warmup["id"])  # so that nothing moves on its own any more
        if name == "embedded":
            broker = broker_from_settings(Settings(PIZZERIA_VAR_DIR=str(system.workdir / "var")))  # type: ignore[call-arg]
        else:
            cluster: KafkaCluster = request.getfixturevalue("kafka_direct")
            broker = cluster.broker()
        await broker.start()
        try:
            yield system, broker
        finally:
            await broker.close()
    finally:
        await shop.close()
        system.stop()


async def delivered(shop: Shop, order_id: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while (order := await shop.order(order_id))["status"] not in TERMINAL:
        assert time.monotonic() < deadline, f"order {order_id} never ended: {order['status']}"
        await asyncio.sleep(0.2)
    assert order["status"] == "delivered", order


async def snapshot(shop: Shop) -> dict[str, Any]:
    """What a poison record must not change (the notifications of orders placed before left
    out: the last of them may still be on its way)."""
    orders_, tickets, deliveries, notifications, inventory, menu = await asyncio.gather(
        shop.all_orders(),
        shop.tickets(),
        shop.deliveries(),
        shop.all_notifications(),
        shop.inventory(),
        shop.menu(include_unavailable=True),
    )
    return {
        "orders": sorted((o["id"], o["status"]) for o in orders_),
        "tickets": sorted((t["order_id"], t["status"]) for t in tickets),
        "deliveries": sorted((d["order_id"], d["status"]) for d in deliveries),
        "notifications": sorted(
            (n["order_id"], n["template"], n["channel"])
            for n in notifications
            if n["order_id"] not in {o["id"] for o in orders_}
        ),
        "inventory": inventory,
        "menu": menu,
    }


async def dead_letters(shop: Shop) -> list[dict[str, Any]]:
    """Every service's dead letters, each asked directly (the gateway's merged list stops at 500)."""
    found: list[dict[str, Any]] = []
    for service in (s.name for s in SERVICES if s.has_database):
        response = await shop.http.get(f"{shop.system.url(service)}/api/v1/ops/dlq", params={"limit": 500})
        response.raise_for_status()
        items = response.json()["items"]
        assert len(items) < 500, f"{service} has more dead letters than a page"
        found += items
    return found


async def audited(shop: Shop) -> set[str]:
    """The message ids of every entry of the audit log."""
    ids: set[str] = set()
    params: dict[str, Any] = {"limit": 1000}
    while True:
        response = await shop.http.get(f"{shop.system.url('audit')}/api/v1/ops/audit", params=params)
        response.raise_for_status()
        page = response.json()
        ids |= {e["message_id"] for e in page["items"]}
        if page["next_after"] is None:
            return ids
        params["after"] = page["next_after"]


@pytest.mark.timeout(600)
async def test_poison_on_every_topic_is_dead_lettered_or_ignored_and_the_next_order_is_delivered(
    running: tuple[System, Broker],
) -> None:
    system, broker = running
    shop = Shop(system)
    try:
        before = await snapshot(shop)
        pids = {s.name: await system.pid(s.name) for s in SERVICES}
        records = poison()
        expected = expectations(records)
        assert {r.topic for r in records} == set(TOPICS)
        for record in records:  # each of a declared type is one its schema refuses
            declared = REGISTRY.get(record.type)
            if declared is not None and record.envelope:
                with pytest.raises(ValidationError):
                    declared.model_validate_json(record.value)
        for n in range(0, len(records), 50):  # in batches, as a producer would
            await broker.publish([r.outgoing() for r in records[n : n + 50]])
        ours = {r.key: r for r in records}

        async def settled() -> None:
            found = {
                (group_of(d["group_id"]), d["key"]): d["error"] for d in await dead_letters(shop) if d["key"] in ours
            }
            missing = sorted(set(expected.dead) - set(found))
            assert not missing, f"{len(missing)} records not dead-lettered yet, e.g. {missing[:5]}"
            unexpected = sorted(set(found) - set(expected.dead))
            assert not unexpected, f"dead-lettered although the group ignores or takes them: {unexpected[:10]}"
            unclear = {k: found[k][:160] for k, reason in expected.dead.items() if not found[k].startswith(reason)}
            assert not unclear, f"dead letters without the reason expected: {unclear}"
            unrecorded = expected.recorded - await audited(shop)
            assert not unrecorded, f"{len(unrecorded)} records missing from the audit log"

        await holds_within(settled, 240)
        kinds = Counter(ours[key].kind for _, key in expected.dead)
        assert set(kinds) == {r.kind for r in records} - {"unknown type"}, kinds

        # Nothing acted on any of them, nothing crashed or is held up.
        assert await snapshot(shop) == before
        assert {s.name: await system.pid(s.name) for s in SERVICES} == pids, "a service restarted"
        for service in (s.name for s in SERVICES):
            ready = await shop.http.get(f"{system.url(service)}/ready")
            assert ready.status_code == 200, f"{service}: {ready.text}"

        # The next good order still goes all the way.
        menu = await shop.menu()
        body = {
            "items": [{"menu_item_id": menu[0]["id"], "size": menu[0]["sizes"][0]["size"], "quantity": 1}],
            "delivery_address": "1 Main St",
            "payment": {"token": "tok_visa"},
        }
        await delivered(shop, (await shop.place(body, customer="after-poison"))["id"])
    finally:
        await shop.close()
