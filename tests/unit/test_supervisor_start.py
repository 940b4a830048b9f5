"""How `pizzeria up` starts its processes: every service at once, each reported in the
registry's order once it and those before it are ready, the clients of the running system
only after every service is ready, and a process that does not become ready stops the start."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pizzeria.kit.migrations import APPLIED_VARIABLE, applied_by_parent
from pizzeria.kit.settings import Settings
from pizzeria.registry import SERVICES, SIMULATORS
from pizzeria.supervisor import Child, Supervisor, listening


class Scripted(Supervisor):
    """A supervisor whose children are not processes: the test says when each is ready."""

    def __init__(self, tmp_path: Path, fails: str = "") -> None:
        settings = Settings.model_validate({"PIZZERIA_VAR_DIR": str(tmp_path)})
        super().__init__(settings, [*SERVICES, *SIMULATORS])
        self.fails = fails
        self.spawned: list[str] = []
        self.said: list[str] = []
        self.answers = {c.label: asyncio.Event() for c in self.children}

    async def _spawn(self, child: Child) -> None:
        self.spawned.append(child.label)

    async def _wait_ready(self, child: Child, timeout: float = 0.0) -> bool:
        await self.answers[child.label].wait()
        return child.label != self.fails


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr("pizzeria.supervisor.say", lines.append)
    return lines


async def test_every_service_starts_at_once_and_is_reported_in_the_registry_order(
    tmp_path: Path, said: list[str]
) -> None:
    supervisor = Scripted(tmp_path)
    services, clients = supervisor._waves()
    assert [c.label for c in clients] == [s.name for s in SIMULATORS]
    start = asyncio.create_task(supervisor._start(services))
    await asyncio.sleep(0)
    assert supervisor.spawned == [s.name for s in SERVICES]
    # Ready in reverse order: nothing is reported until the first is ready, then all at once.
    for child in reversed(services[1:]):
        supervisor.answers[child.label].set()
        await asyncio.sleep(0)
    assert said == []
    supervisor.answers[services[0].label].set()
    assert await start is None
    assert [line.split()[0] for line in said] == [s.name for s in SERVICES]


async def test_the_clients_of_the_system_start_only_once_every_service_is_ready(
    tmp_path: Path, said: list[str]
) -> None:
    supervisor = Scripted(tmp_path)
    for label in supervisor.answers:
        if label != "gateway":
            supervisor.answers[label].set()
    run = asyncio.create_task(supervisor._start_all())
    for _ in range(5):
        await asyncio.sleep(0)
    assert "devicesim" not in supervisor.spawned
    supervisor.answers["gateway"].set()
    assert await run is None
    assert supervisor.spawned[-1] == "devicesim"
    assert [line.split()[0] for line in said] == [c.label for c in supervisor.children]


async def test_a_service_that_does_not_become_ready_is_named_and_nothing_after_it_is_reported(
    tmp_path: Path, said: list[str]
) -> None:
    supervisor = Scripted(tmp_path, fails="catalog")
    services, _ = supervisor._waves()
    start = asyncio.create_task(supervisor._start(services))
    for child in services[:2]:
        supervisor.answers[child.label].set()
    for _ in range(5):
        await asyncio.sleep(0)
    for child in services[2:]:
        supervisor.answers[child.label].set()
    failed = await start
    assert failed is not None
    assert failed.label == "catalog"
    assert [line.split()[0] for line in said] == ["provider", "identity"]


def test_a_process_is_told_its_migrations_are_applied_on_its_first_start_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(APPLIED_VARIABLE, "1")  # inherited from whoever ran `pizzeria up`: not believed
    supervisor = Scripted(tmp_path)
    orders = next(c for c in supervisor.children if c.label == "orders")
    # the value names the process that starts it: the supervisor, or the zygote that forks it
    assert supervisor._env(orders, parent=4321)[APPLIED_VARIABLE] == "4321"
    orders.restarts = 1  # its code may have changed since `run` applied the migrations
    assert APPLIED_VARIABLE not in supervisor._env(orders, parent=4321)


def test_only_the_parent_that_applied_the_migrations_is_believed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(APPLIED_VARIABLE, str(os.getppid()))
    assert applied_by_parent()
    for leaked in ("1", str(os.getpid()), ""):  # a value left in a shell's environment, say
        monkeypatch.setenv(APPLIED_VARIABLE, leaked)
        assert not applied_by_parent()
    monkeypatch.delenv(APPLIED_VARIABLE)
    assert not applied_by_parent()


async def test_a_port_is_found_listening_only_while_something_accepts_on_it() -> None:
    server = await asyncio.start_server(lambda _reader, writer: writer.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    assert await listening(f"http://127.0.0.1:{port}")
    server.close()
    await server.wait_closed()
    assert not await listening(f"http://127.0.0.1:{port}")


async def _answering_ready(body: bytes) -> asyncio.Server:
    """An HTTP server on a free port that answers every request `200 body`."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("answer", "ready"),
    [
        (b'{"status": "ready", "service": "kitchen", "pid": 424242}', True),
        (b'{"status": "ready", "service": "kitchen", "pid": 7}', False),  # another process on the port
        (b'{"status": "ready", "service": "kitchen"}', True),  # loopback not an operations network
        (b'{"status": "ready", "service": "catalog"}', False),
        (b'["ready"]', False),
    ],
)
async def test_a_ready_answer_counts_only_from_the_child_itself(tmp_path: Path, answer: bytes, ready: bool) -> None:
    """Another process holding a child's port (the child then fails to bind it) must not make
    `pizzeria up` report the child ready: the answer names the child's pid, or its service."""
    server = await _answering_ready(answer)
    port = server.sockets[0].getsockname()[1]
    supervisor = Supervisor(Settings.model_validate({"PIZZERIA_VAR_DIR": str(tmp_path)}), SERVICES)
    child = next(c for c in supervisor.children if c.entry.name == "kitchen")
    child.url = f"http://127.0.0.1:{port}"
    child.process = SimpleNamespace(pid=424242, returncode=None)  # type: ignore[assignment]
    child.started_at = time.monotonic()
    try:
        assert await supervisor._wait_ready(child, timeout=1.0) is ready
    finally:
        server.close()
        await server.wait_closed()
        if supervisor._http is not None:
            await supervisor._http.aclose()
