"""Deterministic runs of the order saga over the embedded broker (tests/chaos/simulation.py):
many seeds, or one seed replayed step by step.

    python -m tests.chaos.replay --seeds 200 [--first 1]   # seeds 1..200; each failure's report
    python -m tests.chaos.replay --seed 1234               # replay one: every step, the verdict
    CHAOS_SEED=1234 make chaos-replay                      # the same
    python -m tests.chaos.replay --seeds 20 --fault forgetful-kitchen   # a deliberate bug, caught

A failing seed prints the command that replays it; a replay makes the same steps and ends in
the same state (the digests printed), on any machine."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pizzeria.kit.logging import configure_logging
from tests.chaos.simulation import FAULTS, STEPS, Outcome, Simulation, simulate


async def many(first: int, count: int, *, steps: int, kind: type[Simulation]) -> list[Outcome]:
    began = time.monotonic()
    outcomes: list[Outcome] = []
    workdir = Path(tempfile.mkdtemp(prefix="pizzeria-replay-"))
    try:
        for seed in range(first, first + count):
            outcome = await simulate(seed, workdir, steps=steps, kind=kind)
            outcomes.append(outcome)
            if not outcome.ok:
                print(outcome.report(), "\n", flush=True)
            if len(outcomes) % 25 == 0:
                print(f"replay: {len(outcomes)}/{count} seeds, {len(_failed(outcomes))} failed", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.monotonic() - began
    orders = sum(o.orders for o in outcomes)
    delivered = sum(o.delivered for o in outcomes)
    steps_run = sum(len(o.steps) for o in outcomes)
    print(
        f"replay: seeds {first}..{first + count - 1}: {len(outcomes) - len(_failed(outcomes))} ok, "
        f"{len(_failed(outcomes))} failed ({', '.join(str(o.seed) for o in _failed(outcomes)) or 'none'}); "
        f"{steps_run} steps, {orders} orders ({delivered} delivered) in {seconds:.0f} s "
        f"({len(outcomes) / seconds * 60:.0f} seeds a minute)",
        flush=True,
    )
    return outcomes


def _failed(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if not o.ok]


async def one(seed: int, *, steps: int, kind: type[Simulation]) -> Outcome:
    workdir = Path(tempfile.mkdtemp(prefix="pizzeria-replay-"))
    try:
        outcome = await simulate(seed, workdir, steps=steps, kind=kind)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(outcome.steps))
    print(outcome.report(last=0) if outcome.ok else outcome.report(last=10))
    print(f"steps digest {outcome.steps_digest}\nstate digest {outcome.state_digest}")
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.replay", description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--seed", type=int, help="replay this seed, printing every step")
    which.add_argument("--seeds", type=int, help="run this many seeds, from --first on")
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--steps", type=int, default=STEPS, help="steps of the chaotic part of each run")
    parser.add_argument("--fault", choices=sorted(FAULTS), help="run with this deliberate bug")
    args = parser.parse_args(argv)
    configure_logging("replay", level="CRITICAL")  # the steps tell the story; the checks judge
    kind = FAULTS[args.fault] if args.fault else Simulation
    if args.seed is not None:
        return 0 if asyncio.run(one(args.seed, steps=args.steps, kind=kind)).ok else 1
    return 0 if not _failed(asyncio.run(many(args.first, args.seeds, steps=args.steps, kind=kind))) else 1


if __name__ == "__main__":
    sys.exit(main())
