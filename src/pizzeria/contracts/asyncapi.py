"""The AsyncAPI 3.0 document of the whole system, generated from the message registry and the
topology, so it can never drift from the code (`pizzeria asyncapi`)."""

from __future__ import annotations

import inspect
from typing import Any

import pizzeria.contracts  # noqa: F401  (registers every message type)
from pizzeria import __version__
from pizzeria.contracts.topology import COMMAND_TOPICS, CONSUMER_GROUPS, EVENT_TOPICS
from pizzeria.messaging.message import REGISTRY, Message

_REF = "#/components/schemas/{model}"

CLOUDEVENT_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0 attributes in Kafka binary content mode.",
    "required": ["ce_id", "ce_source", "ce_type", "ce_specversion", "ce_time"],
    "properties": {
        "ce_id": {"type": "string", "description": "unique message id (UUIDv7); the inbox key"},
        "ce_source": {"type": "string", "description": "emitting service, /pizzeria/<service>"},
        "ce_type": {"type": "string", "description": "pizzeria.<context>.<Name>.v<version>"},
        "ce_specversion": {"const": "1.0"},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_subject": {"type": "string", "description": "aggregate id, also the record key"},
        "ce_correlationid": {"type": "string", "description": "id of the request or message that began the flow"},
        "ce_causationid": {"type": "string", "description": "id of the message that caused this one"},
        "ce_traceparent": {"type": "string", "description": "W3C trace context"},
        "content-type": {"const": "application/json"},
    },
}


def _schema_name(cls: type[Message]) -> str:
    return f"{cls.__name__}.v{cls.schema_version}"


def build() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    by_topic: dict[str, list[str]] = {}
    for type_name, cls in sorted(REGISTRY.items()):
        if cls.message_context not in {t.split(".")[0] for t in (*EVENT_TOPICS, *COMMAND_TOPICS)}:
            continue  # a message type defined outside the product (tests, benchmarks)
        schema = cls.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[_schema_name(cls)] = schema
        messages[type_name] = {
            "name": type_name,
            "title": cls.__name__,
            "summary": inspect.getdoc(cls) or "",
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/CloudEventHeaders"},
            "payload": {"$ref": _REF.format(model=_schema_name(cls))},
            "bindings": {"kafka": {"key": {"type": "string", "description": f"the message key: {cls.key_field}"}}},
        }
        by_topic.setdefault(cls.topic(), []).append(type_name)
    schemas["CloudEventHeaders"] = CLOUDEVENT_HEADERS

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in (*EVENT_TOPICS, *COMMAND_TOPICS):
        names = by_topic.get(topic, [])
        channels[topic] = {
            "address": topic,
            "description": "facts" if topic.endswith(".events") else "commands",
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
        }
        refs = [{"$ref": f"#/channels/{topic}/messages/{n}"} for n in names]
        operations[f"{topic.split('.')[0]}.send.{topic}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{topic}"},
            "messages": refs,
        }
    for group, topics in sorted(CONSUMER_GROUPS.items()):
        for topic in topics:
            operations[f"{group}.receive.{topic}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{topic}"},
                "summary": f"consumer group `{group}`; failures go to `{group}.dlq`",
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Pizzeria messaging",
            "version": __version__,
            "description": "Every event and command the services exchange through Kafka (or the embedded "
            "SQL log). Delivery is at least once; consumers are idempotent through their inbox.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "production": {"host": "kafka:9092", "protocol": "kafka", "description": "Apache Kafka"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
