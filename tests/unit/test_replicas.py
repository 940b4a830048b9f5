"""Replicas of a service: how `pizzeria up --replicas` and `<SERVICE>_REPLICAS` are read, where
each replica listens, how the gateway finds them, and which stacks refuse them (and why)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pizzeria.chassis.addresses import (
    MAX_REPLICAS,
    parse_replicas,
    port_for,
    replica_number,
    replicas_from_env,
    urls_for,
)
from pizzeria.cli import build_parser, replicas_asked
from pizzeria.kit.settings import Settings
from pizzeria.registry import SERVICES
from pizzeria.supervisor import Supervisor, replica_problems

PG = "postgresql+asyncpg://pizzeria@db/{service}"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ORDERS_PORT", "ORDERS_URL", "ORDERS_REPLICAS", "KITCHEN_REPLICAS", "PIZZERIA_REPLICA"):
        monkeypatch.delenv(name, raising=False)


def settings(**values: str) -> Settings:
    return Settings.model_validate({"PIZZERIA_VAR_DIR": "/tmp/pz-replicas-test", "REDIS_URL": "", **values})


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        ("orders=2", {"orders": 2}),
        ("orders=2,kitchen=3", {"orders": 2, "kitchen": 3}),
        (" orders = 2 , kitchen=1, ", {"orders": 2, "kitchen": 1}),
        (f"audit={MAX_REPLICAS}", {"audit": MAX_REPLICAS}),
    ],
)
def test_replica_counts_are_read_from_service_equals_count(text: str, counts: dict[str, int]) -> None:
    assert parse_replicas(text) == counts


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("orders", "write SERVICE=COUNT"),
        ("pizza=2", "'pizza' is no service"),
        ("orders=2,orders=3", "orders is named twice"),
        ("orders=0", "from 1 to 8"),
        (f"orders={MAX_REPLICAS + 1}", "from 1 to 8"),
        ("orders=two", "not 'two'"),
        ("orders=-1", "not '-1'"),
        ("orders=1.5", "not '1.5'"),
        ("orders=\u0662", "from 1 to 8"),  # a digit, but not an ASCII one
        ("orders=" + "9" * 5000, "from 1 to 8"),
        ("", "name at least one service"),
        (",", "name at least one service"),
    ],
)
def test_a_wrong_replica_count_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_replicas(text)


def test_the_command_line_overrides_the_environment_and_a_mistake_stops_it_plainly() -> None:
    environ = {"ORDERS_REPLICAS": "3", "KITCHEN_REPLICAS": "2", "ORDERS_PORT": "6000"}
    assert replicas_from_env(environ) == {"orders": 3, "kitchen": 2}
    assert replicas_asked(None, environ) == {"orders": 3, "kitchen": 2}
    assert replicas_asked("orders=2,payments=2", environ) == {"orders": 2, "kitchen": 2, "payments": 2}
    with pytest.raises(SystemExit, match="pizzeria: replicas: KITCHEN_REPLICAS: the number of replicas"):
        replicas_asked(None, {"KITCHEN_REPLICAS": "many"})
    with pytest.raises(SystemExit, match="'pizza' is no service"):
        replicas_asked("pizza=2", {})
    assert build_parser().parse_args(["up", "--replicas", "orders=2"]).replicas == "orders=2"


def test_replica_n_listens_100_ports_above_the_one_before(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [port_for("orders", n) for n in (1, 2, 3)] == [5002, 5102, 5202]
    monkeypatch.setenv("ORDERS_PORT", "41000")
    assert [port_for("orders", n) for n in (1, 2)] == [41000, 41100]
    assert replica_number({}) == 1
    assert replica_number({"PIZZERIA_REPLICA": "2"}) == 2
    with pytest.raises(ValueError, match="PIZZERIA_REPLICA: a replica's number"):
        replica_number({"PIZZERIA_REPLICA": "0"})


def test_the_gateway_finds_every_replica_unless_one_address_stands_for_them(monkeypatch: pytest.MonkeyPatch) -> None:
    local = settings()
    assert urls_for(local, "orders") == ["http://127.0.0.1:5002"]
    monkeypatch.setenv("ORDERS_REPLICAS", "3")
    assert urls_for(local, "orders") == ["http://127.0.0.1:5002", "http://127.0.0.1:5102", "http://127.0.0.1:5202"]
    monkeypatch.setenv("ORDERS_URL", "http://orders.internal:5002/")  # a platform's balancer in front of them
    assert urls_for(local, "orders") == ["http://orders.internal:5002"]


def test_replicas_run_on_postgresql_and_redis() -> None:
    production = settings(DATABASE_URL=PG, REDIS_URL="redis://127.0.0.1:6379/0")
    every_consumer = {"orders": 2, "kitchen": 2, "payments": 2, "delivery": 2, "notifications": 2, "audit": 2}
    assert replica_problems(production, {**every_consumer, "identity": 3, "catalog": 2, "gateway": 1}) == []
    # The broker may be either: the SQL log shares a group's partitions between members as Kafka does.
    assert (
        replica_problems(
            settings(DATABASE_URL=PG, REDIS_URL="redis://r", BROKER_URL="sqllog+sqlite:///b.db"), {"orders": 2}
        )
        == []
    )


def test_the_embedded_stack_refuses_replicas_and_says_why() -> None:
    [sqlite, redis] = replica_problems(settings(), {"orders": 2})
    assert "replicas of orders need its database on PostgreSQL" in sqlite
    assert "ORDERS_DATABASE_URL" in sqlite
    assert "one writer at a time" in sqlite
    assert "set REDIS_URL" in redis
    # Asking for one replica (as `<SERVICE>_REPLICAS=1` may) is no replicas at all.
    mixed = settings(REDIS_URL="redis://r")
    assert replica_problems(mixed, {"kitchen": 1, "orders": 1}) == []
    assert len(replica_problems(mixed, {"kitchen": 2})) == 1


@pytest.mark.parametrize(("service", "why"), [("gateway", "load balancer"), ("provider", "ledger in memory")])
def test_the_gateway_and_the_provider_run_once(service: str, why: str) -> None:
    [problem] = replica_problems(settings(DATABASE_URL=PG, REDIS_URL="redis://r"), {service: 2})
    assert problem.startswith(f"{service} runs once")
    assert why in problem


def test_the_supervisor_runs_each_replica_on_its_port_with_its_own_log(tmp_path: Path) -> None:
    supervisor = Supervisor(settings(PIZZERIA_VAR_DIR=str(tmp_path)), SERVICES, replicas={"orders": 2, "kitchen": 3})
    children = {c.label: c for c in supervisor.children}
    assert list(children).count("orders") == 1
    assert [label for label in children if label.startswith("kitchen")] == ["kitchen", "kitchen-2", "kitchen-3"]
    assert children["orders-2"].url == "http://127.0.0.1:5102"
    assert children["kitchen-3"].log_path == tmp_path / "log" / "kitchen-3.log"
    assert len(supervisor.children) == len(SERVICES) + 3
    # Replicas are listed right after their first: every orders replica before notifications.
    order = [c.label for c in supervisor.children]
    assert order.index("orders-2") == order.index("orders") + 1
    env = supervisor._env(children["kitchen-2"], parent=1234)
    assert env["PIZZERIA_REPLICA"] == "2"
    assert (env["ORDERS_REPLICAS"], env["KITCHEN_REPLICAS"]) == ("2", "3")
    assert supervisor._env(children["gateway"], parent=1234)["PIZZERIA_REPLICA"] == "1"
