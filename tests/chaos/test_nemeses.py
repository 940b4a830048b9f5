"""The chaos campaign's short version: one system under a steady order load through the
gateway, a few nemeses one after the other (kill -9 of payments and of orders at random moments,
kitchen paused past the consumer session timeout), then the history checker's verdict on
everything. `make chaos` runs the long campaign (tests/chaos/campaign.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.campaign import Scenario, kill, pause, run

pytestmark = pytest.mark.e2e


# About a minute on an idle machine; the suite's five-minute limit leaves a loaded one too
# little room for the run's own deadlines (a restart, the settling, the reading back).
@pytest.mark.timeout(900)
async def test_nothing_lost_or_doubled_under_kills_and_a_pause(tmp_path: Path) -> None:
    scenario = Scenario(
        "short", "kill -9 payments and orders, SIGSTOP kitchen", (kill(("payments", "orders")), pause("kitchen"))
    )
    outcome = await run(scenario, tmp_path, seed=5, rate=3.0)
    print(outcome.result.table())
    outcome.result.assert_ok()
    assert outcome.result.acknowledged >= 20, "too few orders for the check to mean anything"
    assert outcome.result.finished == outcome.result.acknowledged
    assert outcome.result.unanswered == 0, "an order request went unanswered for three minutes"
    assert len(outcome.recoveries) == 3, outcome.recoveries
