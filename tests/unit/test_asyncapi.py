"""The AsyncAPI document covers every message and stays in step with the code."""

from __future__ import annotations

from pathlib import Path

import orjson

import pizzeria.contracts  # noqa: F401
from pizzeria.contracts.asyncapi import build
from pizzeria.contracts.topology import CONSUMER_GROUPS, EVENT_TOPICS
from pizzeria.messaging.message import REGISTRY

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def test_every_product_message_has_a_schema_and_a_channel() -> None:
    doc = build()
    product = {n: c for n, c in REGISTRY.items() if c.topic() in EVENT_TOPICS}
    assert product, "the registry holds the product's messages"
    for name, cls in product.items():
        message = doc["components"]["messages"][name]
        schema_ref = message["payload"]["$ref"].rsplit("/", 1)[1]
        assert set(doc["components"]["schemas"][schema_ref]["properties"]) == set(cls.model_fields)
        assert name in doc["channels"][cls.topic()]["messages"]


def test_every_consumer_group_has_a_receive_operation() -> None:
    operations = build()["operations"]
    for group, topics in CONSUMER_GROUPS.items():
        for topic in topics:
            assert operations[f"{group}.receive.{topic}"]["action"] == "receive"


def test_every_reference_resolves() -> None:
    doc = build()

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        target: object = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict)
            assert part in target, f"dangling reference {ref}"
            target = target[part]


def test_the_committed_document_is_current() -> None:
    # Regenerate with `pizzeria asyncapi -o docs/asyncapi.json` after changing a contract.
    assert orjson.loads(DOC.read_text()) == orjson.loads(orjson.dumps(build()))
