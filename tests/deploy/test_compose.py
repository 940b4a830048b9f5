"""The Compose files (deploy/compose): valid by the Compose specification's schema and loaded by
compose-go, the loader of `docker compose` (interpolation, merging, references between services);
and every process in them configured the way the code reads its configuration."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pizzeria.chassis.addresses import SERVICE_PORTS, port_for, url_for
from pizzeria.registry import SERVICES
from pizzeria.services.gateway.routes import UPSTREAMS
from tests.deploy.conftest import COMPOSE, COMPOSE_FILES, PROD_ENV_EXAMPLE, TEST_SECRETS, env_file_values
from tests.deploy.environment import host_port, kafka_bootstrap, payment_provider_url, settings_from, unknown_variables
from tests.deploy.tools import DEPLOY, run

JOBS = {"migrate": ["migrate"], "topics": ["topics", "create"]}
HEALTHCHECK = ["CMD", "python", "-m", "pizzeria.chassis.healthcheck", "/ready"]
DATABASE_SERVICES = [s for s in SERVICES if s.has_database]


def services_running(project: dict[str, Any], image: str) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in project["services"].items() if s["image"].split(":")[0] == image}


def pizzeria_image(project: dict[str, Any]) -> str:
    return str(project["services"]["gateway"]["image"])


def served(project: dict[str, Any], service: str) -> dict[str, Any]:
    """The container that runs `pizzeria serve SERVICE`."""
    found = [s for s in project["services"].values() if s.get("command") == ["serve", service]]
    assert len(found) == 1, f"{len(found)} containers serve {service}"
    return found[0]


@pytest.mark.parametrize("name", sorted(COMPOSE_FILES))
def test_files_match_the_compose_specification_schema(name: str) -> None:
    run("check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE_FILES[name])


def test_production_refuses_to_load_without_its_secrets() -> None:
    refused = run("compose-check", "-env-file", PROD_ENV_EXAMPLE, COMPOSE_FILES["prod"], check=False)
    assert refused.returncode != 0
    for secret in TEST_SECRETS:
        assert f"required variable {secret} is missing" in refused.stderr


def test_the_example_lists_every_variable_production_reads() -> None:
    read = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE_FILES["prod"].read_text()))
    assert read <= set(env_file_values(PROD_ENV_EXAMPLE)), read - set(env_file_values(PROD_ENV_EXAMPLE))


def test_the_real_prod_env_is_not_committed() -> None:
    ignored = (COMPOSE.parents[1] / ".gitignore").read_text().splitlines()
    assert "deploy/compose/prod.env" in ignored


def test_every_service_of_the_registry_is_served_with_a_health_check(project: dict[str, Any]) -> None:
    for entry in SERVICES:
        container = served(project, entry.name)
        assert container["image"] == pizzeria_image(project)
        assert container["healthcheck"]["test"] == HEALTHCHECK, entry.name
        assert not container["healthcheck"].get("disable"), entry.name
        assert container.get("init") is True, f"{entry.name}: signals reach the server through an init"


def test_every_service_reads_a_complete_production_configuration(project: dict[str, Any]) -> None:
    services = project["services"]
    postgres = services_running(project, "postgres")
    kafka = services_running(project, "apache/kafka")
    redis = services_running(project, "redis")
    for entry in SERVICES:
        env = served(project, entry.name)["environment"]
        assert not unknown_variables(env), f"{entry.name}: no code reads {unknown_variables(env)}"
        with settings_from(env) as settings:
            assert settings.mode == "production"
            assert settings.production_problems(entry.name, messaging=entry.has_database, shared_state=True) == []
            assert port_for(entry.name) == SERVICE_PORTS[entry.name]
            if entry.has_database:
                database = settings.database_url_for(entry.name)
                host, port = host_port(database)
                assert host in postgres, database
                assert port == 5432, database
                assert database.rsplit("/", 1)[1] == f"pizzeria_{entry.name}"
                for host, port in kafka_bootstrap(settings.broker_url):
                    assert host in kafka
                    assert port == 9092
                    assert services[host]["environment"]["KAFKA_ADVERTISED_LISTENERS"] == f"BROKER://{host}:9092"
            if settings.redis_url:
                assert host_port(settings.redis_url)[0] in redis


def test_each_service_logs_in_to_kafka_as_the_user_the_topics_job_made(project: dict[str, Any]) -> None:
    """The topics job gives each service's user the password that service logs in with, and
    in production no service knows another's (nor the administrator's)."""
    with settings_from(project["services"]["topics"]["environment"]) as job:
        made = {job.kafka_login(s.name).username: job.kafka_login(s.name).password for s in DATABASE_SERVICES}
        assert job.kafka_admin_login().password
    for entry in DATABASE_SERVICES:
        env = served(project, entry.name)["environment"]
        assert "KAFKA_ADMIN_PASSWORD" not in env, entry.name
        with settings_from(env) as settings:
            login = settings.kafka_login(entry.name)
            assert login.sasl
            assert login.username == entry.name
            assert made[login.username] == login.password, entry.name
    if project["name"] == "pizzeria-prod":
        assert len(set(made.values())) == len(made), "two services share a password"


def test_postgres_creates_the_database_of_every_service(project: dict[str, Any]) -> None:
    (postgres,) = services_running(project, "postgres").values()
    assert postgres["environment"]["PIZZERIA_DATABASES"].split() == [s.name for s in DATABASE_SERVICES]
    init = [v for v in postgres["volumes"] if v["target"].startswith("/docker-entrypoint-initdb.d/")]
    assert [Path(v["source"]) for v in init] == [COMPOSE / "postgres" / "init-databases.sh"]
    run("shellcheck", COMPOSE / "postgres" / "init-databases.sh")


def test_the_gateway_and_payments_reach_what_they_call(project: dict[str, Any]) -> None:
    def listening(service: str) -> str:
        with settings_from(served(project, service)["environment"]):
            return f"http://{service}:{port_for(service)}"

    with settings_from(served(project, "gateway")["environment"]) as gateway:
        for upstream in UPSTREAMS:
            assert url_for(gateway, upstream) == listening(upstream), upstream
    with settings_from(served(project, "payments")["environment"]) as payments:
        assert payment_provider_url(payments) == listening("provider")


def test_migrations_and_topics_run_once_before_the_services(project: dict[str, Any]) -> None:
    services = project["services"]
    for job, command in JOBS.items():
        assert services[job]["command"] == command
        assert services[job]["image"] == pizzeria_image(project)
        assert services[job]["restart"] == "no"
    stores = {"migrate": services_running(project, "postgres"), "topics": services_running(project, "apache/kafka")}
    for job, needed in stores.items():
        assert {n: d["condition"] for n, d in services[job]["depends_on"].items()} == dict.fromkeys(
            needed, "service_healthy"
        )
    for entry in DATABASE_SERVICES:
        after = {n: d["condition"] for n, d in served(project, entry.name)["depends_on"].items()}
        assert after["migrate"] == after["topics"] == "service_completed_successfully", entry.name
        for store in (*stores["migrate"], *stores["topics"], *services_running(project, "redis")):
            assert after[store] == "service_healthy", (entry.name, store)


def test_the_gateway_starts_once_every_upstream_is_ready(project: dict[str, Any]) -> None:
    after = served(project, "gateway")["depends_on"]
    for upstream in UPSTREAMS:
        assert after[upstream]["condition"] == "service_healthy"


def test_every_long_running_container_has_a_health_check(project: dict[str, Any]) -> None:
    for name, service in project["services"].items():
        if name in JOBS:
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test"), f"{name} has no health check"
        assert not check.get("disable"), f"{name}'s health check is off"


def published(service: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(p.get("host_ip", ""), str(p["published"]), int(p["target"])) for p in service.get("ports", [])]


def test_development_publishes_the_gateway_on_8000(compose_projects: dict[str, dict[str, Any]]) -> None:
    dev = compose_projects["dev"]
    assert {n for n, s in dev["services"].items() if s.get("ports")} == {"gateway"}
    assert published(dev["services"]["gateway"]) == [("", "8000", SERVICE_PORTS["gateway"])]


def test_production_exposes_the_edge_and_keeps_the_tools_on_loopback(
    compose_projects: dict[str, dict[str, Any]],
) -> None:
    prod = compose_projects["prod"]["services"]
    public = {n for n, s in prod.items() for host, _, _ in published(s) if host in ("", "0.0.0.0")}
    assert public == {"edge", "mosquitto"}  # people's entry, and the devices' MQTT broker
    assert published(prod["edge"]) == [("", "8000", 8000)]
    for tool in ("grafana", "prometheus", "kafka-ui"):
        assert [host for host, _, _ in published(prod[tool])] == ["127.0.0.1"], tool


def test_the_edge_spreads_requests_over_the_gateways(compose_projects: dict[str, dict[str, Any]]) -> None:
    edge = compose_projects["prod"]["services"]["edge"]
    (conf,) = [Path(v["source"]) for v in edge["volumes"] if v["target"] == "/etc/nginx/conf.d/default.conf"]
    text = conf.read_text()
    assert re.search(r"^\s*listen 8000;", text, re.M)
    target = re.search(r"set \$gateway (\S+);", text)
    assert target, "no upstream"
    assert target.group(1) == f"http://gateway:{SERVICE_PORTS['gateway']}"
    assert "proxy_pass $gateway;" in text  # a variable: resolved again as replicas come and go
    assert re.search(r"^\s*resolver 127\.0\.0\.11\b", text, re.M)  # Docker's DNS
    assert "proxy_buffering off;" in text  # server-sent events pass as they come
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text  # never what the client claims
    # The gateway believes the edge's X-Forwarded-For, identity the gateway's.
    for name in ("gateway", "identity"):
        assert compose_projects["prod"]["services"][name]["environment"]["TRUSTED_PROXIES"] == "0.0.0.0/0,::/0"


def test_production_scales_the_stateless_services_within_limits(compose_projects: dict[str, dict[str, Any]]) -> None:
    prod = compose_projects["prod"]
    for entry in SERVICES:
        deploy = served(prod, entry.name)["deploy"]
        limits = deploy["resources"]["limits"]
        assert limits.get("cpus"), entry.name
        assert limits.get("memory"), entry.name
        if entry.name == "provider":
            assert deploy["replicas"] == 1  # the simulated provider keeps its ledger in memory
        else:
            assert deploy["replicas"] >= 2, entry.name
        assert not served(prod, entry.name).get("container_name"), "a fixed name forbids replicas"
    for name, service in prod["services"].items():
        assert service.get("deploy", {}).get("resources", {}).get("limits"), f"{name} has no resource limits"


def test_production_containers_have_a_read_only_root(compose_projects: dict[str, dict[str, Any]]) -> None:
    prod = compose_projects["prod"]
    for entry in SERVICES:
        container = served(prod, entry.name)
        assert container["read_only"] is True
        assert container["tmpfs"] == ["/tmp"]
        assert container["environment"].get("PIZZERIA_VAR_DIR", "/tmp/pizzeria").startswith("/tmp/")


def test_production_monitoring_scrapes_every_replica(
    compose_projects: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    prometheus = compose_projects["prod"]["services"]["prometheus"]
    mounts = {v["target"]: Path(v["source"]) for v in prometheus["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/prometheus/alerts.yml"] == DEPLOY / "prometheus" / "alerts.yml"
    config_file = mounts["/etc/prometheus/prometheus.yml"]
    shutil.copy(config_file, tmp_path / "prometheus.yml")
    shutil.copy(mounts["/etc/prometheus/alerts.yml"], tmp_path / "alerts.yml")
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    checked = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(config_file.read_text())
    (job,) = config["scrape_configs"]
    scraped = {name: sd["port"] for sd in job["dns_sd_configs"] for name in sd["names"]}
    assert scraped == {s.name: SERVICE_PORTS[s.name] for s in SERVICES if s.name != "provider"}
    assert {"source_labels": ["__meta_dns_name"], "target_label": "service"} in job["relabel_configs"]


def test_grafana_is_provisioned_with_the_dashboards(compose_projects: dict[str, dict[str, Any]]) -> None:
    grafana = compose_projects["prod"]["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    provider_dir = mounts["/etc/grafana/provisioning/dashboards"]
    assert provider_dir == DEPLOY / "grafana" / "provisioning" / "dashboards"
    (provider,) = yaml.safe_load((provider_dir / "pizzeria.yml").read_text())["providers"]
    assert mounts[provider["options"]["path"]] == DEPLOY / "grafana" / "dashboards"
    compose_source = yaml.safe_load(mounts["/etc/grafana/provisioning/datasources/prometheus.yml"].read_text())
    shared_source = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert [d["uid"] for d in compose_source["datasources"]] == [d["uid"] for d in shared_source["datasources"]]
    assert compose_source["datasources"][0]["url"] == "http://prometheus:9090"


def test_the_database_script_creates_one_database_per_listed_service(tmp_path: Path) -> None:
    script = COMPOSE / "postgres" / "init-databases.sh"
    log = tmp_path / "psql.log"
    fake_psql = tmp_path / "psql"
    fake_psql.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n')
    fake_psql.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "POSTGRES_USER": "pizzeria"}
    done = subprocess.run(
        ["sh", str(script)],
        env={**env, "PIZZERIA_DATABASES": "orders audit"},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [
        f"--variable ON_ERROR_STOP=1 --username pizzeria --dbname postgres --command CREATE DATABASE "
        f'"pizzeria_{name}" OWNER "pizzeria"'
        for name in ("orders", "audit")
    ]
    unlisted = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, check=False, timeout=30)
    assert unlisted.returncode != 0
    assert "list the services" in unlisted.stderr
