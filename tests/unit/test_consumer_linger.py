"""How long a consumer lingers for a longer run: what `CONSUMER_LINGER_MS` says, else its broker's
default (a Kafka consumer is handed records one by one; the SQL log's are polled)."""

from __future__ import annotations

import pytest

from pizzeria.kit.settings import CONSUMER_LINGER_MS_BY_BROKER, Settings


@pytest.fixture(autouse=True)
def _no_linger_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSUMER_LINGER_MS", raising=False)


@pytest.mark.parametrize(
    ("broker_url", "expected_ms"),
    [
        ("kafka://127.0.0.1:9092", CONSUMER_LINGER_MS_BY_BROKER["kafka"]),
        ("sqllog+sqlite:///{var}/broker.db", CONSUMER_LINGER_MS_BY_BROKER["sqllog"]),
        ("sqllog+postgresql+asyncpg://pizzeria@127.0.0.1/broker", CONSUMER_LINGER_MS_BY_BROKER["sqllog"]),
    ],
)
def test_unset_the_linger_is_the_brokers(monkeypatch: pytest.MonkeyPatch, broker_url: str, expected_ms: float) -> None:
    monkeypatch.setenv("BROKER_URL", broker_url)
    assert Settings().consumer_linger_s() == pytest.approx(expected_ms / 1000)


@pytest.mark.parametrize("broker_url", ["kafka://127.0.0.1:9092", "sqllog+sqlite:///{var}/broker.db"])
@pytest.mark.parametrize(("value", "expected_s"), [("0", 0.0), ("12.5", 0.0125)])
def test_the_setting_wins_on_every_broker(
    monkeypatch: pytest.MonkeyPatch, broker_url: str, value: str, expected_s: float
) -> None:
    monkeypatch.setenv("BROKER_URL", broker_url)
    monkeypatch.setenv("CONSUMER_LINGER_MS", value)
    assert Settings().consumer_linger_s() == pytest.approx(expected_s)


@pytest.mark.parametrize("empty", ["", " "])
def test_an_empty_setting_is_unset(monkeypatch: pytest.MonkeyPatch, empty: str) -> None:
    monkeypatch.setenv("BROKER_URL", "kafka://127.0.0.1:9092")
    monkeypatch.setenv("CONSUMER_LINGER_MS", empty)
    assert Settings().consumer_linger_s() == pytest.approx(CONSUMER_LINGER_MS_BY_BROKER["kafka"] / 1000)


def test_a_linger_out_of_bounds_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUMER_LINGER_MS", "1001")
    with pytest.raises(ValueError, match="CONSUMER_LINGER_MS"):
        Settings()
