"""Wakes the readers of an order's live status stream when its view changes in this process
(the projector calls `changed` once a change has committed); readers also look again every
few seconds, for changes made by another process."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from uuid import UUID

from pizzeria.kit.loops import wait_for_event


class OrderWatch:
    def __init__(self) -> None:
        self._waiting: defaultdict[UUID, set[asyncio.Event]] = defaultdict(set)

    def changed(self, order_id: UUID) -> None:
        for event in self._waiting.get(order_id, ()):
            event.set()

    async def wait(self, order_id: UUID, timeout: float) -> bool:
        """True once the order changed, False if `timeout` seconds passed first."""
        event = asyncio.Event()
        self._waiting[order_id].add(event)
        try:
            return await wait_for_event(event, timeout)
        finally:
            self._waiting[order_id].discard(event)
            if not self._waiting[order_id]:
                del self._waiting[order_id]
