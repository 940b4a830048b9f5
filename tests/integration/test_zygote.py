"""The zygote (`pizzeria.zygote`): service processes forked from one that imported their code,
each as `python -m pizzeria <argv>` would have been — its own environment, log, session and
exit status — and their ends seen even when the zygote itself is gone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from pizzeria.zygote import UNKNOWN_EXIT, ForkedProcess, Zygote, ZygoteGone, available
from tests.support.polling import eventually
from tests.support.tcpproxy import free_port

pytestmark = pytest.mark.skipif(
    not available({}), reason="the zygote needs Linux (fork after import, pidfds); elsewhere processes start afresh"
)


@pytest.fixture
async def zygote() -> AsyncIterator[Zygote]:
    started = await Zygote.start({k: v for k, v in os.environ.items() if k != "PROVIDER_PORT"})
    assert started is not None, "the zygote did not start"
    try:
        yield started
    finally:
        await started.close()


async def health(port: int, timeout: float = 30) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=2) as client:

        async def answered() -> dict[str, object] | None:
            try:
                response = await client.get(f"http://127.0.0.1:{port}/health")
                if response.status_code == 200:
                    answer: dict[str, object] = response.json()
                    return answer
            except httpx.HTTPError:
                pass
            return None

        found: dict[str, object] = await eventually(answered, "the forked service never answered", timeout)
        return found


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
    await eventually(lambda: not zygote.alive, "the supervisor never noticed the zygote's end", 10, every=0.02)
    assert (await health(port))["pid"] == child.pid, "a child outlives the zygote"
    assert await killed(child) == UNKNOWN_EXIT
    with pytest.raises(ZygoteGone):
        await zygote.spawn(["serve", "provider"], provider_env(tmp_path, port), tmp_path / "d.log")


def signal_masks(pid: int) -> dict[str, str]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: line.split()[1] for line in status if line.startswith(("SigIgn", "SigCgt", "SigBlk"))}


async def metric_families(port: int) -> set[str]:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}


async def test_a_forked_service_has_a_fresh_ones_signals_and_metrics_and_no_other_services(
    zygote: Zygote, tmp_path: Path
) -> None:
    """SIGPIPE ignored (a write to a closed connection raises instead of killing), SIGINT
    Python's; and only its own code's metrics, though the zygote holds every library."""
    forked, forked_port = await provider(zygote, tmp_path)
    fresh_port = free_port()
    fresh = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pizzeria",
        "serve",
        "provider",
        env=provider_env(tmp_path, fresh_port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert (await health(fresh_port))["pid"] == fresh.pid
        assert signal_masks(forked.pid) == signal_masks(fresh.pid)
        assert await metric_families(forked_port) == await metric_families(fresh_port)
    finally:
        fresh.kill()
        await fresh.wait()
        await killed(forked)


async def test_two_spawns_at_once_each_get_their_own_child(zygote: Zygote, tmp_path: Path) -> None:
    """Services that died together are restarted together."""
    (first, first_port), (second, second_port) = await asyncio.gather(
        provider(zygote, tmp_path), provider(zygote, tmp_path)
    )
    assert first.pid != second.pid
    assert ((await health(first_port))["pid"], (await health(second_port))["pid"]) == (first.pid, second.pid)
    assert await killed(first) == -signal.SIGKILL
    assert await killed(second) == -signal.SIGKILL


class _Stdin:
    """Where the stand-in zygote's requests go."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.lines.append(data)

    async def drain(self) -> None:
        return None


async def test_the_answer_to_the_first_of_two_spawns_does_not_lose_the_second() -> None:
    """The order of events the real zygote allows but rarely shows: the first answer taken in
    (and its spawn resumed) before the second answer arrives."""
    sleepers = [await asyncio.create_subprocess_exec("sleep", "60") for _ in range(2)]
    replies = asyncio.StreamReader()
    process = SimpleNamespace(stdin=_Stdin(), pid=0)
    zygote = Zygote(process, replies, time.time())  # type: ignore[arg-type]
    reader = asyncio.create_task(zygote._read())
    try:
        first = asyncio.create_task(zygote.spawn(["serve", "provider"], {}, None))
        second = asyncio.create_task(zygote.spawn(["serve", "provider"], {}, None))
        while len(zygote._asked) < 2:
            await asyncio.sleep(0)
        replies.feed_data(json.dumps({"id": 1, "pid": sleepers[0].pid}).encode() + b"\n")
        assert (await first).pid == sleepers[0].pid
        replies.feed_data(json.dumps({"id": 2, "pid": sleepers[1].pid}).encode() + b"\n")
        async with asyncio.timeout(10):
            assert (await second).pid == sleepers[1].pid
    finally:
        replies.feed_eof()
        await reader
        for sleeper in sleepers:
            sleeper.kill()
            await sleeper.wait()
        for child in zygote._children.values():
            child.forget()


async def test_a_spawn_given_up_on_leaves_no_child_running(zygote: Zygote, tmp_path: Path) -> None:
    """Cancelled while the zygote forks (a stop during a restart): the child it forked anyway is
    killed once its pid arrives, not left running where nobody would stop it."""
    spawn = asyncio.create_task(zygote.spawn(["serve", "provider"], provider_env(tmp_path, free_port()), None))
    while not zygote._asked:  # asked, its answer not yet in
        await asyncio.sleep(0)
    spawn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await spawn
    await eventually(
        lambda: -signal.SIGKILL in zygote._early.values(),
        "the child forked for a cancelled spawn was not killed",
        30,
        every=0.02,
    )


async def test_it_knows_when_the_code_on_disk_is_newer_than_what_it_imported(zygote: Zygote) -> None:
    assert not zygote.outdated()
    zygote._imported_at = 0.0  # as if it had imported before every file was last written
    assert zygote.outdated(), "a restart would run code older than the files"


def test_it_can_be_turned_off() -> None:
    assert not available({"PIZZERIA_ZYGOTE": "0"})
