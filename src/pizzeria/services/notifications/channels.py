"""Channel adapters: where a notification physically goes.

The embedded system has no mail server or SMS gateway, so the default sender writes each
message to the structured log (addresses masked like every log line); a deployment plugs in
real adapters with the same `send` signature.
"""

from __future__ import annotations

from typing import Protocol

from pizzeria.kit.logging import get_logger

log = get_logger("pizzeria.notifications.channels")


class ChannelSender(Protocol):
    async def send(self, *, channel: str, recipient: str, subject: str, body: str) -> None: ...


class LogSender:
    """Delivers by logging: the embedded stand-in for SMTP, SMS and push gateways."""

    async def send(self, *, channel: str, recipient: str, subject: str, body: str) -> None:
        log.info("notification delivered", channel=channel, recipient=recipient, subject=subject)
