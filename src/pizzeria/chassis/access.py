"""Access ends when identity says so, everywhere within seconds: each service keeps the newest
token epoch identity announced for each account (`UserSignedOut`, `UserUpdated`, `UserDeleted`)
in its own `token_epochs` table, through its `<service>-access` consumer group, and refuses access
tokens of an older epoch (kit.auth.current_principal).

Every replica reads the table into memory twice a second (chassis/runtime.py:
`CONTROL_INTERVAL_S`), so a replica that is not the one consuming learns of a change as fast as
the one that is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.contracts.identity import UserDeleted, UserSignedOut, UserUpdated
from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.statements import fetch_rows
from pizzeria.kit.upsert import upsert
from pizzeria.messaging.consumer import HandlerRegistry, Incoming
from pizzeria.messaging.tables import token_epochs
from pizzeria.messaging.uow import UnitOfWork

_EPOCHS = sa.select(token_epochs.c.user_id, token_epochs.c.epoch)
_CHANGED_SINCE = _EPOCHS.where(token_epochs.c.updated_at >= sa.bindparam("since"))
#: Rows written by another replica may carry a slightly earlier time than this replica's last
#: look: each look goes back this far.
CLOCK_OVERLAP = timedelta(seconds=10)


class TokenEpochCache:
    """The token epochs a service knows, in memory (kit.auth.TokenEpochs)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._epochs: dict[str, int] = {}
        self._since: datetime | None = None

    def current(self, user_id: str) -> int:
        return self._epochs.get(user_id, 0)

    def learn(self, user_id: str, epoch: int) -> None:
        if epoch > self._epochs.get(user_id, 0):
            self._epochs[user_id] = epoch

    async def look(self, conn: AsyncConnection) -> None:
        """Take in the rows written since the last look, by any replica's consumer (every
        replica, in its runtime's control read)."""
        started = utcnow()
        if self._since is None:
            rows = await fetch_rows(conn, _EPOCHS)
        else:
            rows = await fetch_rows(conn, _CHANGED_SINCE, {"since": self._since - CLOCK_OVERLAP})
        for user_id, epoch in rows:
            self.learn(user_id, int(epoch))
        self._since = started


def access_handlers(cache: TokenEpochCache) -> HandlerRegistry:
    """The `<service>-access` group: identity's events that move a token epoch on."""
    registry = HandlerRegistry()

    @registry.on_batch(UserSignedOut, UserUpdated, UserDeleted)
    async def record(items: Sequence[Incoming], uow: UnitOfWork) -> None:
        newest: dict[str, int] = {}
        for item in items:
            user_id, epoch = str(item.message.user_id), int(item.message.token_epoch)
            newest[user_id] = max(newest.get(user_id, 0), epoch)
        now = utcnow()
        moved = {u: e for u, e in newest.items() if e > 0}
        if moved:
            await uow.conn.execute(
                upsert(uow.conn, token_epochs, ["user_id"], only_if_newer="epoch"),
                [{"user_id": u, "epoch": e, "updated_at": now} for u, e in moved.items()],
            )
        # An epoch only moves forward and identity has committed it: this replica refuses the
        # older tokens at once, whether or not this transaction commits.
        for user_id, epoch in moved.items():
            cache.learn(user_id, epoch)

    return registry
