"""How `pizzeria up` stops its processes: in waves, each wave at once — the clients of the
running system, then the gateway, then every other service, then the payment provider — and a
process that does not end on SIGTERM within the grace is killed."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from pizzeria.kit.settings import Settings
from pizzeria.registry import SERVICES, SIMULATORS
from pizzeria.supervisor import Supervisor


class Process:
    """A child that ends soon after SIGTERM (or never, if `stubborn`), and says what befell it."""

    def __init__(self, label: str, story: list[tuple[str, str]], stubborn: bool = False) -> None:
        self.label = label
        self.story = story
        self.stubborn = stubborn
        self.returncode: int | None = None
        self._ended = asyncio.Event()

    def send_signal(self, sig: int) -> None:
        assert sig == signal.SIGTERM
        self.story.append(("term", self.label))
        if not self.stubborn:
            asyncio.get_running_loop().call_soon(self._end, 0)

    def kill(self) -> None:
        self.story.append(("kill", self.label))
        self._end(-9)

    def _end(self, code: int) -> None:
        self.returncode = code
        self.story.append(("ended", self.label))
        self._ended.set()

    async def wait(self) -> int:
        await self._ended.wait()
        assert self.returncode is not None
        return self.returncode


def supervisor(tmp_path: Path, story: list[tuple[str, str]], stubborn: str = "") -> Supervisor:
    settings = Settings.model_validate({"PIZZERIA_VAR_DIR": str(tmp_path)})
    running = Supervisor(settings, [*SERVICES, *SIMULATORS], replicas={"orders": 2})
    for child in running.children:
        child.process = Process(child.label, story, stubborn=child.label == stubborn)  # type: ignore[assignment]
    return running


@pytest.fixture(autouse=True)
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pizzeria.supervisor.say", lambda _: None)


async def test_the_processes_stop_in_waves_each_at_once(tmp_path: Path) -> None:
    story: list[tuple[str, str]] = []
    running = supervisor(tmp_path, story)
    await running.shutdown()

    ended = [label for what, label in story if what == "ended"]
    assert sorted(ended) == sorted(c.label for c in running.children), "a process was not stopped"
    clients = {s.name for s in SIMULATORS}
    others = {c.label for c in running.children} - clients - {"gateway", "provider"}
    assert "orders-2" in others
    waves = [clients, {"gateway"}, others, {"provider"}]

    def wave_of(label: str) -> int:
        return next(n for n, wave in enumerate(waves) if label in wave)

    # Nobody of a wave is asked to stop before the wave ahead of it has ended...
    for n, (what, label) in enumerate(story):
        if what == "term":
            ahead = [c for c in running.children if wave_of(c.label) < wave_of(label)]
            assert all(("ended", c.label) in story[:n] for c in ahead), f"{label} asked to stop too soon: {story}"
    # ...and each wave is asked at once: every one of it before any of it has ended.
    for wave in waves:
        asked = [n for n, (what, label) in enumerate(story) if what == "term" and label in wave]
        first_end = min(n for n, (what, label) in enumerate(story) if what == "ended" and label in wave)
        assert max(asked) < first_end, f"the wave {sorted(wave)} was stopped one by one: {story}"


async def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    story: list[tuple[str, str]] = []
    running = supervisor(tmp_path, story, stubborn="kitchen")
    async with asyncio.timeout(10):
        await running.shutdown(grace=0.2)
    assert ("kill", "kitchen") in story
    assert [what for what, label in story if what == "kill"] == ["kill"], "only the stubborn one is killed"
    assert story.index(("ended", "kitchen")) < story.index(("term", "provider")), "the provider went first"
    assert all(c.process is not None and c.process.returncode is not None for c in running.children)
