"""The deterministic simulation of the saga over the embedded broker (tests/chaos/simulation.py),
a few seeds of it: every check holds; a seed run twice makes the same steps and ends in the same
state, byte for byte; and a deliberate bug is caught by some seed, whose replay fails the same
way at the same step. `make chaos` runs many more seeds (`python -m tests.chaos.replay`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.simulation import ForgetfulKitchen, simulate

FAULT_SEEDS = range(1, 16)


@pytest.mark.parametrize("seed", [1, 3, 4])
async def test_every_check_holds_under_a_seeded_schedule_of_faults(seed: int, tmp_path: Path) -> None:
    outcome = await simulate(seed, tmp_path)
    assert outcome.ok, outcome.report()
    assert outcome.orders >= 5, "too few orders for the run to mean anything"


async def test_a_seed_replays_step_for_step_to_the_same_state(tmp_path: Path) -> None:
    first = await simulate(2, tmp_path / "first")
    again = await simulate(2, tmp_path / "again")
    assert again.steps == first.steps
    assert again.state_digest == first.state_digest
    assert (again.failure, again.failed_at) == (first.failure, first.failed_at)
    faults = (
        "killed in a handler's transaction",
        "killed before committing the offsets",
        "killed before publishing",
        "killed before marking",
    )
    assert all(any(fault in step for step in first.steps) for fault in faults), "the seed fired too few faults"
    assert any(" joins" in step for step in first.steps)
    other = await simulate(6, tmp_path / "other")
    assert other.steps != first.steps
    assert other.state_digest != first.state_digest


async def test_a_deliberate_bug_is_caught_and_its_seed_fails_the_same_way_again(tmp_path: Path) -> None:
    for seed in FAULT_SEEDS:
        caught = await simulate(seed, tmp_path / "search", kind=ForgetfulKitchen)
        if not caught.ok:
            break
    else:
        pytest.fail(f"no seed of {list(FAULT_SEEDS)} caught a kitchen that holds stock twice")
    assert caught.failed_at is not None
    assert caught.failure is not None
    assert "stock" in caught.failure or "the reservations say" in caught.failure, caught.report()
    assert f"CHAOS_SEED={caught.seed} make chaos-replay" in caught.report()
    replayed = await simulate(caught.seed, tmp_path / "replay", kind=ForgetfulKitchen)
    assert (replayed.failure, replayed.failed_at) == (caught.failure, caught.failed_at)
    assert replayed.steps == caught.steps
    assert replayed.state_digest == caught.state_digest
