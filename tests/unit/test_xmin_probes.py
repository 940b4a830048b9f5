"""Which database the campaign's xmin hold goes to on each stack, and how its probe of the
sqllog reports a phase (tests/chaos/campaign.py)."""

from __future__ import annotations

import pytest

from tests.chaos.campaign import SCENARIOS, STACKS, LogSample, OutboxProbe, SqlLogProbe, _kept, held_database

SERVICE_DB = "postgresql+asyncpg://postgres@127.0.0.1:5432/pz_orders_1?ssl=disable"


def test_the_hold_goes_to_the_sqllog_when_the_log_is_on_postgresql() -> None:
    env = {"ORDERS_DATABASE_URL": SERVICE_DB, "BROKER_URL": "sqllog+postgresql://postgres@127.0.0.1:5432/pz_log"}
    probe = held_database(env)
    assert isinstance(probe, SqlLogProbe)
    # The URL a PostgreSQL sqllog is named by, with the driver the probe's engine needs.
    assert probe.url(env) == "postgresql+asyncpg://postgres@127.0.0.1:5432/pz_log"


def test_the_hold_goes_to_orders_outbox_beside_kafka_and_nowhere_on_sqlite() -> None:
    probe = held_database({"ORDERS_DATABASE_URL": SERVICE_DB, "BROKER_URL": "kafka://127.0.0.1:9092"})
    assert probe == OutboxProbe("orders")
    assert probe.database == "the orders database"
    assert held_database({}) is None
    assert held_database({"BROKER_URL": "sqllog+sqlite:///var/broker.db"}) is None


def test_the_log_probe_refuses_a_broker_that_is_not_the_sqllog_on_postgresql() -> None:
    with pytest.raises(AssertionError, match="not the sqllog on PostgreSQL"):
        SqlLogProbe().url({"BROKER_URL": "kafka://127.0.0.1:9092"})


def test_every_stack_but_the_embedded_one_has_the_xmin_hold() -> None:
    assert "postgres+sqllog" in STACKS
    assert SCENARIOS["xmin-hold"].stacks == STACKS - {"embedded"}
    assert "postgres+sqllog" in SCENARIOS["broker-pause"].stacks  # its broker has no process to stop


def sample(lag: int, dead_partitions: int, ends_ms: float) -> LogSample:
    dead = dict.fromkeys(SqlLogProbe.tables, 0) | {"log_partitions": dead_partitions}
    return LogSample(
        records=100 + lag,
        dead=dead,
        bookkeeping_kb=dead_partitions // 10,
        lag=lag,
        worst_lag=("kitchen", lag),
        ends_ms=ends_ms,
        ends_server_ms=ends_ms / 10,
        ends_pages=1 + dead_partitions // 40,
        read_ms=0.5,
        reads=40,
    )


def test_a_phase_of_the_log_is_summed_up_from_its_first_last_and_worst_looks() -> None:
    summary = SqlLogProbe().summary([sample(2, 10, 1.0), sample(9, 400, 3.0), sample(4, 900, 2.0)])
    assert "log records 102→104" in summary
    assert "log_partitions 10→900" in summary
    assert "consumer lag max 9 records over all groups (worst group kitchen 9)" in summary
    assert "bookkeeping 1→90 kB" in summary
    assert "end offsets query p50 2.00 ms, max 3.00 ms (server p50 0.20 ms, max 0.30 ms, pages 1→23)" in summary
    assert "(40 partitions read)" in summary


def test_kept_versions_are_summed_and_named_per_table_when_there_are_several() -> None:
    assert _kept({"outbox": 12}) == "12 dead rows"
    assert _kept({"log_partitions": 30, "log_offsets": 5}) == "35 dead rows (log_partitions 30, log_offsets 5)"
