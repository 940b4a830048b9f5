"""Message schemas: type names, topics and keys follow from the class; the registry has each
type exactly once."""

from __future__ import annotations

import re
from uuid import UUID

import pytest
from pydantic import ValidationError

import pizzeria.contracts  # noqa: F401  (registers every contract message)
from pizzeria.messaging.message import REGISTRY, Message


class ParcelShipped(Message, context="unittest_registry", key="parcel_id"):
    """A test event keyed by its parcel."""

    parcel_id: UUID
    weight: int


class ShipParcel(Message, context="unittest_registry", kind="command", version=3, key="parcel_id"):
    """A test command, schema version 3."""

    parcel_id: UUID


class Heartbeat(Message, context="unittest_registry"):
    """A test event without a key."""

    beat: int


class ParcelBase(Message):
    """An abstract intermediate class: no context, so not a message type of its own."""

    parcel_id: UUID


PARCEL = UUID("0190a5c4-7e2b-7c3d-8f1e-2a3b4c5d6e7f")
TYPE_NAME = re.compile(r"^pizzeria\.[a-z_]+\.[A-Z][A-Za-z]+\.v\d+$")


def test_type_name_names_context_class_and_version() -> None:
    assert ParcelShipped.type_name() == "pizzeria.unittest_registry.ParcelShipped.v1"
    assert ShipParcel.type_name() == "pizzeria.unittest_registry.ShipParcel.v3"


def test_events_and_commands_have_their_own_topics() -> None:
    assert ParcelShipped.topic() == "unittest_registry.events"
    assert ShipParcel.topic() == "unittest_registry.commands"


def test_key_is_the_key_field_as_text() -> None:
    assert ParcelShipped(parcel_id=PARCEL, weight=3).message_key() == str(PARCEL)
    assert Heartbeat(beat=1).message_key() == ""


def test_declared_types_are_registered_and_abstract_ones_are_not() -> None:
    assert REGISTRY["pizzeria.unittest_registry.ParcelShipped.v1"] is ParcelShipped
    assert REGISTRY["pizzeria.unittest_registry.ShipParcel.v3"] is ShipParcel
    assert ParcelBase not in REGISTRY.values()


def test_declaring_a_type_twice_is_refused() -> None:
    with pytest.raises(TypeError, match="declared twice"):

        class ParcelShipped(Message, context="unittest_registry"):
            other: str

    assert REGISTRY["pizzeria.unittest_registry.ParcelShipped.v1"].model_fields.keys() == {
        "parcel_id",
        "weight",
    }


def test_a_new_schema_version_is_a_new_type() -> None:
    class ShipParcelV4(Message, context="unittest_registry", kind="command", version=4):
        parcel_id: UUID

    assert ShipParcelV4.type_name() == "pizzeria.unittest_registry.ShipParcelV4.v4"
    assert REGISTRY[ShipParcelV4.type_name()] is ShipParcelV4


def test_readers_ignore_unknown_fields_and_messages_are_frozen() -> None:
    message = ParcelShipped.model_validate_json(f'{{"parcel_id": "{PARCEL}", "weight": 2, "added_later": true}}')
    assert message.model_dump() == {"parcel_id": PARCEL, "weight": 2}
    with pytest.raises(ValidationError):
        message.weight = 5  # type: ignore[misc]


def test_every_contract_message_follows_the_naming_rules() -> None:
    contracts = {n: c for n, c in REGISTRY.items() if c.__module__.startswith("pizzeria.contracts.")}
    assert len(contracts) >= 8
    for name, cls in contracts.items():
        assert TYPE_NAME.match(name), name
        assert name == cls.type_name()
        assert cls.topic() in {f"{cls.message_context}.events", f"{cls.message_context}.commands"}
        assert not cls.key_field or cls.key_field in cls.model_fields, name
