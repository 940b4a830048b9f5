"""How long `pizzeria up` takes to start the whole system (embedded), and a killed service to be
back: each process forked from the zygote (the default on Linux) against each started afresh
(`PIZZERIA_ZYGOTE=0`), alternated; with the CPU the start cost and the memory the system then
holds (`pizzeria up` and every process below it), and how long it takes to stop on SIGINT.

    .venv/bin/python -m bench.start_bench [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from tests.e2e.system import System

from bench.stats import pids, proc_stat, process_cpu_s

MODES = {"zygote": {}, "afresh": {"PIZZERIA_ZYGOTE": "0"}}


def _descendants(root: int) -> list[int]:
    """`root` and every process below it (the zygote and what it forked, or the children)."""
    parents: dict[int, int] = {}
    for pid in pids():
        with contextlib.suppress(OSError, ValueError):  # gone meanwhile
            parents[pid] = int(proc_stat(pid)[1])
    found = [root]
    for pid in found:
        found += [child for child, parent in parents.items() if parent == pid]
    return found


def _pss_mb(pid: int) -> float:
    """Proportional set size: pages shared with other processes counted in shares."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def one(mode: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        system = System(Path(tmp), MODES[mode])
        began = time.monotonic()
        await system.start()
        up = time.monotonic() - began
        try:
            assert system.process is not None
            tree = _descendants(system.process.pid)
            cpu = sum(process_cpu_s(pid) for pid in tree)
            pss = sum(_pss_mb(pid) for pid in tree)
            os.kill(await system.pid("kitchen"), signal.SIGKILL)
            killed = time.monotonic()
            async with httpx.AsyncClient(timeout=1) as client:
                while time.monotonic() - killed < 60:
                    try:
                        if (await client.get(f"{system.url('kitchen')}/ready")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.02)
                else:
                    raise RuntimeError("the killed kitchen was not back within 60 s")
            back = time.monotonic() - killed
        finally:
            stopping = time.monotonic()
            system.stop()
            down = time.monotonic() - stopping
    return {"up_s": up, "cpu_s": cpu, "pss_mb": pss, "back_s": back, "down_s": down}


async def main(rounds: int) -> None:
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for n in range(rounds):
        order = list(MODES) if n % 2 == 0 else list(reversed(MODES))
        for mode in order:
            results[mode].append(await one(mode))
    print(f"pizzeria up, embedded, {rounds} rounds alternated (min / median / max):")
    for mode, runs in results.items():
        parts = []
        for key, label, unit in (
            ("up_s", "up in", "s"),
            ("cpu_s", "CPU to start", "s"),
            ("pss_mb", "memory (PSS)", "MB"),
            ("back_s", "a killed kitchen back in", "s"),
            ("down_s", "Ctrl-C to stopped", "s"),
        ):
            values = sorted(r[key] for r in runs)
            parts.append(f"{label} {values[0]:.1f} / {statistics.median(values):.1f} / {values[-1]:.1f} {unit}")
        print(f"  {mode:<7} " + "; ".join(parts))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
