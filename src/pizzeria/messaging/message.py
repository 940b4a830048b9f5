"""The base of every event and command schema; the registry the AsyncAPI document comes from.

A message class names its bounded context, kind and schema version; from those follow its
CloudEvents `type` (`pizzeria.orders.OrderPlaced.v1`) and its topic (`orders.events`). Commands
live on the topic of the context that executes them (`payments.commands`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from pizzeria.messaging.topics import commands_topic, events_topic

Kind = Literal["event", "command"]

#: Every message type by its CloudEvents `type`.
REGISTRY: dict[str, type[Message]] = {}


class Message(BaseModel):
    """A fact (event, past tense) or a request (command, imperative) crossing a boundary."""

    # Readers ignore fields they do not know, so producers can add optional fields freely.
    model_config = ConfigDict(frozen=True, extra="ignore")

    message_context: ClassVar[str] = ""
    message_kind: ClassVar[Kind] = "event"
    schema_version: ClassVar[int] = 1
    #: The field whose value is the message key (the aggregate id): it keeps per-key order.
    key_field: ClassVar[str] = ""

    def __init_subclass__(
        cls, context: str = "", kind: Kind = "event", version: int = 1, key: str = "", **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if not context:
            return  # an abstract intermediate class
        cls.message_context, cls.message_kind, cls.schema_version = context, kind, version
        cls.key_field = key
        name = cls.type_name()
        previous = REGISTRY.get(name)
        if previous is not None and (previous.__module__, previous.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"message type {name} declared twice")
        REGISTRY[name] = cls

    @classmethod
    def type_name(cls) -> str:
        return f"pizzeria.{cls.message_context}.{cls.__name__}.v{cls.schema_version}"

    @classmethod
    def topic(cls) -> str:
        return (events_topic if cls.message_kind == "event" else commands_topic)(cls.message_context)

    def message_key(self) -> str:
        return str(getattr(self, self.key_field)) if self.key_field else ""
