"""The zygote (`pizzeria.zygote`): service processes forked from one that imported their code,
each as `python -m pizzeria <argv>` would have been — its own environment, log, session and
exit status — and their ends seen even when the zygote itself is gone."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pizzeria.zygote import UNKNOWN_EXIT, ForkedProcess, Zygote, ZygoteGone, available
from tests.support.tcpproxy import free_port

pytestmark = pytest.mark.skipif(not available({}), reason="the zygote is Linux's")


@pytest.fixture
async def zygote() -> AsyncIterator[Zygote]:
    started = await Zygote.start({k: v for k, v in os.environ.items() if k != "PROVIDER_PORT"})
    assert started is not None, "the zygote did not start"
    try:
        yield started
    finally:
        await started.close()


async def health(port: int, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            try:
                response = await client.get(f"http://127.0.0.1:{port}/health")
                if response.status_code == 200:
                    answer: dict[str, object] = response.json()
                    return answer
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the forked service never answered"
            await asyncio.sleep(0.05)


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def provider_env(tmp_path: Path, port: int) -> dict[str, str]:
    return {**os.environ, "PIZZERIA_VAR_DIR": str(tmp_path / "var"), "PROVIDER_PORT": str(port)}


async def provider(zygote: Zygote, tmp_path: Path) -> tuple[ForkedProcess, int]:
    """The payment provider simulator forked and answering, and its port."""
    port = free_port()
    child = await zygote.spawn(["serve", "provider"], provider_env(tmp_path, port), tmp_path / f"{port}.log")
    await health(port)
    return child, port


async def killed(child: ForkedProcess) -> int:
    child.kill()
    async with asyncio.timeout(30):
        return await child.wait()


async def test_a_forked_service_has_its_own_environment_log_and_session_and_stops_cleanly(
    zygote: Zygote, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "provider.log"
    child = await zygote.spawn(["serve", "provider"], provider_env(tmp_path, port), log)
    answer = await health(port)  # on the port its own environment named, not the zygote's
    assert answer["pid"] == child.pid
    assert os.getsid(child.pid) == child.pid, "a session of its own: Ctrl-C reaches the supervisor only"
    # Its parent is the zygote: the supervisor names the zygote as the one that applied the
    # migrations (`kit.migrations.applied_by_parent`).
    assert parent_of(child.pid) == zygote.process.pid
    child.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        # as from `python -m pizzeria serve`: uvicorn shuts down, then raises the signal again
        assert await child.wait() == -signal.SIGTERM
    said = log.read_text()
    assert f"Started server process [{child.pid}]" in said, said[-2000:]
    assert "Shutting down" in said, said[-2000:]


async def test_a_killed_child_reports_its_signal_and_a_failing_one_its_status_and_words(
    zygote: Zygote, tmp_path: Path
) -> None:
    child, port = await provider(zygote, tmp_path)
    assert await killed(child) == -signal.SIGKILL
    child.kill()  # after its end: nothing, and no other process's pid is signalled

    log = tmp_path / "b.log"
    failing = await zygote.spawn(["serve", "no-such-service"], provider_env(tmp_path, port), log)
    async with asyncio.timeout(30):
        assert await failing.wait() == 2
    assert "no-such-service" in log.read_text(), log.read_text()


async def test_a_childs_end_is_seen_when_the_zygote_is_gone_and_a_new_start_is_refused(
    zygote: Zygote, tmp_path: Path
) -> None:
    child, port = await provider(zygote, tmp_path)
    zygote.process.kill()
    await zygote.process.wait()
    deadline = time.monotonic() + 10
    while zygote.alive:
        assert time.monotonic() < deadline, "the supervisor never noticed the zygote's end"
        await asyncio.sleep(0.02)
    assert (await health(port))["pid"] == child.pid, "a child outlives the zygote"
    assert await killed(child) == UNKNOWN_EXIT
    with pytest.raises(ZygoteGone):
        await zygote.spawn(["serve", "provider"], provider_env(tmp_path, port), tmp_path / "d.log")


async def test_it_knows_when_the_code_on_disk_is_newer_than_what_it_imported(zygote: Zygote) -> None:
    assert not zygote.outdated()
    zygote._imported_at = 0.0  # as if it had imported before every file was last written
    assert zygote.outdated(), "a restart would run code older than the files"


def test_it_can_be_turned_off() -> None:
    assert not available({"PIZZERIA_ZYGOTE": "0"})
