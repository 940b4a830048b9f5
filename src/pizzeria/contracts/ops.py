"""Operations facts: what an administrator did to the messaging itself (replaying or discarding
a dead letter), so the audit log names who did it. Keyed by the dead letter's id."""

from __future__ import annotations

from datetime import datetime

from pizzeria.messaging.message import Message

CONTEXT = "ops"
EVENTS_TOPIC = "ops.events"


class DeadLetterReplayRequested(Message, context=CONTEXT, key="dead_letter_id"):
    """An administrator asked a service to run a dead letter through its consumer again."""

    dead_letter_id: str
    service: str
    group: str
    message_id: str | None
    message_type: str | None
    actor: str
    at: datetime


class DeadLetterDiscarded(Message, context=CONTEXT, key="dead_letter_id"):
    """An administrator gave up on a dead letter for good."""

    dead_letter_id: str
    service: str
    group: str
    message_id: str | None
    message_type: str | None
    actor: str
    at: datetime
