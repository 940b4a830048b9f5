"""Operations facts: what an administrator did to the messaging itself (replaying or discarding
a dead letter), so the audit log names who did it. Keyed by the dead letter's id."""

from __future__ import annotations

from datetime import datetime

from pizzeria.messaging.message import Message

CONTEXT = "ops"


class DeadLetterAction(Message):
    """What an administrator did to one dead letter, and who it was."""

    dead_letter_id: str
    service: str
    group: str
    message_id: str | None
    message_type: str | None
    actor: str
    at: datetime


class DeadLetterReplayRequested(DeadLetterAction, context=CONTEXT, key="dead_letter_id"):
    """An administrator asked a service to run a dead letter through its consumer again."""


class DeadLetterDiscarded(DeadLetterAction, context=CONTEXT, key="dead_letter_id"):
    """An administrator gave up on a dead letter for good."""
