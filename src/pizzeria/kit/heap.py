"""CPython's cyclic garbage collector, set for a long-running service.

A service makes and drops many small objects for every request and message. Left at CPython's
defaults (thresholds 700, 10, 10) the collector ran about 1,600 times in the orders service over
a bench flood of 1,000 orders and took 8% of its CPU; each full collection walked the whole heap,
most of it the structures every library builds at startup (SQLAlchemy's tables and compiled
statements, pydantic's validators, OpenTelemetry's and FastAPI's objects), 84 ms every time,
during which nothing else in the process ran (docs/performance.md, "The garbage collector").

So a server collects its youngest objects less often, and once it has started it moves what
it built out of the collector's sight for good (`gc.freeze`): nearly all of it lives as long as the
process, and no collection needs to walk it again. What is made afterwards is collected as
before; only the rhythm changes. The price: an object that was alive at the freeze and later
becomes part of an unreachable cycle (a pool connection replaced after a database restart, a
consumer client replaced after a rejoin) is never collected — at most once each, a bounded cost.
(From Python 3.14 the collector is incremental and the second and third thresholds mean less.)
"""

from __future__ import annotations

import asyncio
import gc
import socket

import uvicorn

from pizzeria.kit.loops import wait_for_event

#: The youngest generation is collected after this many more container objects were made than
#: dropped (CPython's default: 700); each older one after 20 collections of the one below (10).
THRESHOLDS = (10_000, 20, 20)


def tune() -> None:
    """Set the collector's thresholds for a server process (before it builds its app)."""
    gc.set_threshold(*THRESHOLDS)


def freeze_startup() -> None:
    """Once the app has started: collect what starting left behind, then keep every object
    still alive out of all later collections."""
    gc.collect()
    gc.freeze()


#: How often the server's own tick runs (uvicorn's: every 0.1 s, its date header renewed every
#: tenth). Being told to stop (a signal, or `should_exit` set) wakes it at once, so a longer tick
#: delays nothing; a process that waits for nothing else then wakes once a second, not ten times.
TICK_S = 1.0


class Server(uvicorn.Server):
    """uvicorn's server; once the app's startup is done, what it built leaves the collector's
    sight (`freeze_startup`); its tick runs every `TICK_S`, and `should_exit` wakes it."""

    _loop: asyncio.AbstractEventLoop | None = None
    _exiting: asyncio.Event | None = None
    _should_exit = False

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        # Set from a signal handler, between any two steps of the loop: it only asks the loop to
        # wake its tick.
        if value and self._loop is not None and self._exiting is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._exiting.set)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # a startup that fails ends the process
        if not self.should_exit:  # a signal came while starting
            freeze_startup()

    async def main_loop(self) -> None:
        self._loop, self._exiting = asyncio.get_running_loop(), asyncio.Event()
        ticks = round(TICK_S / 0.1)  # uvicorn counts ticks of 0.1 s (its date header: every 10th)
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + ticks) % 864000
            await wait_for_event(self._exiting, TICK_S)
            should_exit = await self.on_tick(counter)
