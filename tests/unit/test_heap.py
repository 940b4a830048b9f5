"""The collector's settings for a server process (kit/heap.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn
from starlette.applications import Starlette

from pizzeria.kit import heap
from tests.support.polling import eventually


@pytest.fixture
def collector() -> Iterator[None]:
    """The collector as the test found it, afterwards."""
    thresholds = gc.get_threshold()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def server(*, fails: bool = False) -> heap.Server:
    @contextlib.asynccontextmanager
    async def starting(_: Starlette) -> AsyncIterator[None]:
        if fails:
            raise RuntimeError("no database")
        yield

    app = Starlette(lifespan=starting)
    return heap.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on"))


def test_a_server_collects_its_youngest_objects_less_often(collector: None) -> None:
    heap.tune()
    assert gc.get_threshold() == heap.THRESHOLDS
    assert heap.THRESHOLDS[0] > 700, "less often than CPython's default"


async def test_once_started_what_the_process_built_is_out_of_the_collectors_sight(collector: None) -> None:
    running = server()
    serving = asyncio.create_task(running.serve())
    try:

        def started() -> bool:
            if running.started:
                return True
            assert not serving.done(), serving
            return False

        await eventually(started, "the server never started", 10, every=0.01)
        assert gc.get_freeze_count() > 0
    finally:
        running.should_exit = True
        await serving


async def test_a_startup_that_failed_freezes_nothing(collector: None) -> None:
    failing = server(fails=True)
    with pytest.raises(SystemExit):  # uvicorn ends the process
        await failing.serve()
    assert not failing.started
    assert gc.get_freeze_count() == 0


async def test_the_servers_tick_wakes_as_soon_as_it_is_told_to_stop() -> None:
    """The tick runs once a second, but a stop (a signal sets `should_exit`) does not wait for
    it: the tick's wait ends when `should_exit` is set."""
    running = server()
    serving = asyncio.create_task(running.serve())
    try:
        deadline = time.monotonic() + 10
        while not (running.started and running._exiting is not None):
            assert time.monotonic() < deadline, "the server never started"
            assert not serving.done(), serving
            await asyncio.sleep(0.01)
        assert not running._exiting.is_set()
        running.should_exit = True
        while not running._exiting.is_set():
            assert time.monotonic() < deadline, "the tick was not woken"
            await asyncio.sleep(0.01)
    finally:
        running.should_exit = True
        await serving
