"""The monitoring that ships in `deploy/`: Prometheus' configuration and alert rules pass
`promtool` (and the rules' own unit tests), the Grafana dashboards are well formed, and every
metric they name is one the services export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from pizzeria.registry import SERVICES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
METRIC = re.compile(r"\b(pizzeria_[a-z0-9_]+)")


def promtool(*args: str) -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make test` installs Debian's prometheus package"
    done = subprocess.run([binary, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_prometheus_configuration_is_valid() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")


def test_alert_rules_are_valid_and_fire_when_they_should() -> None:
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    assert alerts == tested


def test_every_service_is_scraped() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    scraped = {c["labels"]["service"] for job in config["scrape_configs"] for c in job["static_configs"]}
    assert scraped == {s.name for s in SERVICES if s.name != "provider"}  # the provider is "external"


def exported_metric_families() -> set[str]:
    for service in SERVICES:  # importing a service registers its metrics
        service.load()
    import pizzeria.services.gateway.app
    import pizzeria.services.identity.metrics  # noqa: F401

    return {metric.name for metric in REGISTRY.collect()}


def family(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_total", "_created"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_is_well_formed_and_uses_exported_metrics(path: Path) -> None:
    board: dict[str, Any] = json.loads(path.read_text())
    for key in ("uid", "title", "panels", "schemaVersion", "time"):
        assert key in board, key
    panels = board["panels"]
    assert panels, "a dashboard with nothing on it"
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    exported = exported_metric_families()
    for panel in panels:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        assert 0 < panel["gridPos"]["w"] <= 24
        assert panel["datasource"]["uid"] in uids
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = METRIC.findall(target["expr"])
            assert names, f"{panel['title']}: no pizzeria metric in {target['expr']}"
            unknown = {n for n in names if family(n) not in exported}
            assert not unknown, f"{panel['title']}: {unknown} are not exported by any service"


def test_alerts_use_exported_metrics() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    exported = exported_metric_families()
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        unknown = {n for n in METRIC.findall(rule["expr"]) if family(n) not in exported}
        assert not unknown, f"{rule['alert']}: {unknown}"
