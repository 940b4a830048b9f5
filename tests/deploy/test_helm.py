"""The Helm chart (deploy/helm/pizzeria): `helm lint --strict`, rendered with the default values
and with a production-like file, every manifest valid against the Kubernetes JSON schemas
(kubernetes-validate, strict: unknown fields fail) of the oldest and newest Kubernetes the chart
supports; and every service configured the way the code reads its configuration."""

from __future__ import annotations

import base64
import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pizzeria.chassis.addresses import SERVICE_PORTS, port_for, url_for
from pizzeria.contracts.topology import BUS_SERVICES
from pizzeria.registry import SERVICES
from pizzeria.services.gateway.routes import UPSTREAMS
from tests.deploy.environment import kafka_bootstrap, payment_provider_url, settings_from, unknown_variables
from tests.deploy.tools import DEPLOY, ROOT, run

CHART = DEPLOY / "helm" / "pizzeria"
VALUES = {"default": None, "production": DEPLOY / "helm" / "values-production.yaml"}
#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest with schemas.
KUBERNETES = ("1.29.0", kubernetes_validate.utils.latest_version())
#: Secrets the operator creates before installing, by (name, key): what the tests put in them.
EXTERNAL_SECRETS = {
    ("postgresql", "password"): "test-postgres-password",
    ("pizzeria-postgresql", "password"): "test-postgres-password",
    ("pizzeria-redis", "url"): "redis://:test-redis-password@redis-master.data.svc:6379/0",
    ("pizzeria-auth", "jwt-secret"): "test-jwt-secret-of-forty-eight-characters-000000",
    **{
        (secret, key): f"test-kafka-{key}-password"
        for secret in ("pizzeria-kafka", "pizzeria-kafka-users")
        for key in ("admin", *BUS_SERVICES)
    },
}
#: Set only so that DATABASE_URL can name it as $(PIZZERIA_DATABASE_PASSWORD).
HELPER_VARIABLES = frozenset({"PIZZERIA_DATABASE_PASSWORD"})
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def helm_template(values: Path | None, kubernetes: str = KUBERNETES[0], chart: Path = CHART, *extra: str) -> str:
    args: list[str | Path] = [
        "template",
        "pizzeria",
        chart,
        "--namespace",
        "pizzeria",
        "--kube-version",
        kubernetes,
        *extra,
    ]
    if values:
        args += ["--values", values]
    return run("helm", *args).stdout


class Rendered:
    """The manifests of one rendering, by kind and name."""

    def __init__(self, text: str) -> None:
        self.docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(text) if d]

    def of(self, kind: str) -> dict[str, dict[str, Any]]:
        return {d["metadata"]["name"]: d for d in self.docs if d["kind"] == kind}

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = self.of(kind)
        assert name in found, f"no {kind} {name}; there are {sorted(found)}"
        return found[name]

    def secret_value(self, name: str, key: str) -> str:
        made = self.of("Secret").get(name)
        if made is not None:
            return base64.b64decode(made["data"][key]).decode()
        assert (name, key) in EXTERNAL_SECRETS, f"the chart needs Secret {name} key {key}: documented?"
        return EXTERNAL_SECRETS[(name, key)]

    def environment(self, container: dict[str, Any]) -> dict[str, str]:
        """A container's environment as the kubelet builds it (envFrom, then env with $(NAME))."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env |= self.one("ConfigMap", source["configMapRef"]["name"])["data"]
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = re.sub(
                    r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"]
                )
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = self.secret_value(ref["name"], ref["key"])
        return env


@pytest.fixture(scope="module", params=sorted(VALUES))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(helm_template(VALUES[request.param]))


def values_of(rendered_with: Path | None) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    if rendered_with:
        override = yaml.safe_load(rendered_with.read_text())
        for key, value in override.items():
            values[key] = value if not isinstance(value, dict) else {**values.get(key, {}), **value}
    return values


def enabled(rendered: Rendered) -> list[str]:
    return [s.name for s in SERVICES if f"pizzeria-{s.name}" in rendered.of("Deployment")]


def main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("values", sorted(VALUES))
def test_helm_lint_strict(values: str) -> None:
    extra: list[str | Path] = ["--values", VALUES[values]] if VALUES[values] else []
    run("helm", "lint", "--strict", "--kube-version", KUBERNETES[0], CHART, *extra)


@pytest.mark.parametrize("kubernetes", KUBERNETES)
@pytest.mark.parametrize("values", sorted(VALUES))
def test_manifests_are_valid_kubernetes_objects(values: str, kubernetes: str) -> None:
    docs = Rendered(helm_template(VALUES[values], kubernetes)).docs
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, kubernetes, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{doc['kind']} {doc['metadata']['name']} (Kubernetes {kubernetes}): "
                f"{'.'.join(map(str, exc.path))}: {exc.message}"
            )


def test_names_and_port_names_fit_kubernetes_limits(rendered: Rendered) -> None:
    for doc in rendered.docs:
        assert DNS_LABEL.match(doc["metadata"]["name"]), doc["metadata"]["name"]
        assert all(len(str(v)) <= 63 for v in doc["metadata"].get("labels", {}).values())
    for deployment in rendered.of("Deployment").values():
        for port in main_container(deployment)["ports"]:
            assert len(port["name"]) <= 15


def test_default_values_run_every_service() -> None:
    assert enabled(Rendered(helm_template(None))) == [s.name for s in SERVICES]


def test_every_service_runs_as_the_code_expects(rendered: Rendered) -> None:
    for name in enabled(rendered):
        deployment = rendered.one("Deployment", f"pizzeria-{name}")
        pod = deployment["spec"]["template"]["spec"]
        container = main_container(deployment)
        assert container["args"] == ["serve", name]
        assert container["ports"] == [{"name": "http", "containerPort": SERVICE_PORTS[name], "protocol": "TCP"}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        assert container["resources"]["limits"]["memory"]
        assert container["resources"]["requests"]["cpu"]
        assert pod["serviceAccountName"] == "pizzeria"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_pods_run_unprivileged_on_a_read_only_root(rendered: Rendered) -> None:
    workloads = [*rendered.of("Deployment").values(), *rendered.of("Job").values()]
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert "emptyDir" in volumes[tmp["name"]]


def test_every_service_reads_a_complete_production_configuration(rendered: Rendered) -> None:
    for name in enabled(rendered):
        container = main_container(rendered.one("Deployment", f"pizzeria-{name}"))
        env = rendered.environment(container)
        assert unknown_variables(env) <= HELPER_VARIABLES, f"{name}: no code reads {unknown_variables(env)}"
        entry = next(s for s in SERVICES if s.name == name)
        with settings_from(env) as settings:
            assert settings.mode == "production"
            assert settings.production_problems(name, messaging=entry.has_database, shared_state=True) == []
            assert port_for(name) == container["ports"][0]["containerPort"]
            assert str(settings.var_dir).startswith("/tmp/")
            if entry.has_database:
                database = settings.database_url_for(name)
                assert database.startswith("postgresql+asyncpg://")
                assert database.endswith(f"/pizzeria_{name}")
                assert "$(" not in database, "a variable the kubelet cannot expand"
                assert kafka_bootstrap(settings.broker_url)
            if settings.trace_sample_ratio > 0:
                assert settings.otel_exporter_otlp_endpoint, "spans would pile up in /tmp"


def service_url(rendered: Rendered, name: str) -> str:
    """Where a Service sends traffic: http://<service>:<port> of the pods it selects."""
    service = rendered.one("Service", f"pizzeria-{name}")
    (port,) = service["spec"]["ports"]
    deployment = rendered.one("Deployment", f"pizzeria-{name}")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    for other_name, other in rendered.of("Deployment").items():
        if other_name != deployment["metadata"]["name"]:
            assert not service["spec"]["selector"].items() <= other["spec"]["template"]["metadata"]["labels"].items()
    (container_port,) = main_container(deployment)["ports"]
    assert port["targetPort"] == container_port["name"]
    return f"http://{service['metadata']['name']}:{port['port']}"


def test_the_gateway_and_payments_reach_what_they_call(rendered: Rendered) -> None:
    gateway = rendered.environment(main_container(rendered.one("Deployment", "pizzeria-gateway")))
    with settings_from(gateway) as settings:
        for upstream in UPSTREAMS:
            assert url_for(settings, upstream) == service_url(rendered, upstream)
    payments = rendered.environment(main_container(rendered.one("Deployment", "pizzeria-payments")))
    with settings_from(payments) as settings:
        if "provider" in enabled(rendered):
            assert payment_provider_url(settings) == service_url(rendered, "provider")
        else:
            assert payment_provider_url(settings) == "https://payments.example.com"


def test_stateless_services_scale_and_the_provider_stays_one(rendered: Rendered) -> None:
    autoscalers = rendered.of("HorizontalPodAutoscaler")
    for name in enabled(rendered):
        deployment = rendered.one("Deployment", f"pizzeria-{name}")
        if name == "provider":
            assert deployment["spec"]["replicas"] == 1
            assert deployment["spec"]["strategy"]["type"] == "Recreate"
            assert f"pizzeria-{name}" not in autoscalers
            continue
        hpa = autoscalers[f"pizzeria-{name}"]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
        assert f"pizzeria-{name}" in rendered.of("PodDisruptionBudget")


def test_a_hook_job_migrates_and_creates_topics_before_install_and_upgrade(rendered: Rendered) -> None:
    (job,) = rendered.of("Job").values()
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (migrate,) = pod["initContainers"]
    (topics,) = pod["containers"]
    assert migrate["args"] == ["migrate"]
    assert topics["args"] == ["topics", "create"]
    made_by_chart = set(rendered.of("Secret")) | set(rendered.of("ConfigMap"))
    for container in (migrate, topics):
        assert not container.get("envFrom"), "hooks run before the chart's ConfigMap exists"
        refs = {i["valueFrom"]["secretKeyRef"]["name"] for i in container["env"] if "valueFrom" in i}
        assert not refs & made_by_chart, "hooks run before the chart's Secrets exist"
        env = rendered.environment(container)
        with settings_from(env) as settings:
            for entry in (s for s in SERVICES if s.has_database):
                assert settings.database_url_for(entry.name).endswith(f"/pizzeria_{entry.name}")
            assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (3, 2)
            assert kafka_bootstrap(settings.broker_url)


def test_each_service_logs_in_to_kafka_as_the_user_the_job_made(rendered: Rendered) -> None:
    (job,) = rendered.of("Job").values()
    (topics,) = job["spec"]["template"]["spec"]["containers"]
    with settings_from(rendered.environment(topics)) as settings:
        made = {settings.kafka_login(s).username: settings.kafka_login(s).password for s in BUS_SERVICES}
        admin = settings.kafka_admin_login()
        assert admin.sasl
        assert admin.password
    logging_in = []
    for name in enabled(rendered):
        env = rendered.environment(main_container(rendered.one("Deployment", f"pizzeria-{name}")))
        assert "KAFKA_ADMIN_PASSWORD" not in env, name
        if "KAFKA_SASL_PASSWORD" in env:
            logging_in.append(name)
            with settings_from(env) as settings:
                login = settings.kafka_login(name)
                assert (login.username, login.sasl) == (name, True)
                assert made[name] == login.password, name
    assert sorted(logging_in) == sorted(BUS_SERVICES)
    assert len(set(made.values())) == len(made), "two services share a password"


def test_the_brokers_ca_is_mounted_where_the_clients_look_for_it(rendered: Rendered) -> None:
    pods = [d["spec"]["template"]["spec"] for d in (*rendered.of("Deployment").values(), *rendered.of("Job").values())]
    for pod in pods:
        for container in pod["containers"]:
            env = rendered.environment(container)
            with settings_from(env) as settings:
                location = settings.kafka_ssl_ca_location
                if settings.kafka_security_protocol != "SASL_SSL":
                    assert not location
                    continue
            if not location:
                continue  # the system's CAs
            (mount,) = [m for m in container["volumeMounts"] if location.startswith(m["mountPath"] + "/")]
            (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            key = location.removeprefix(mount["mountPath"] + "/")
            assert volume["secret"]["items"] == [{"key": key, "path": key}]


def test_the_token_key_is_made_once_or_taken_from_a_secret(rendered: Rendered) -> None:
    made = rendered.of("Secret")
    gateway = main_container(rendered.one("Deployment", "pizzeria-gateway"))
    (ref,) = [i["valueFrom"]["secretKeyRef"] for i in gateway["env"] if i["name"] == "JWT_SECRET"]
    if made:
        assert set(made) == {ref["name"]}
        assert made[ref["name"]]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert len(rendered.secret_value(ref["name"], ref["key"])) == 48
    else:
        assert (ref["name"], ref["key"]) in EXTERNAL_SECRETS


def test_the_ingress_leads_to_the_gateway() -> None:
    production = Rendered(helm_template(VALUES["production"]))
    (ingress,) = production.of("Ingress").values()
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    gateway = production.one("Service", backend["name"])
    assert backend["name"] == "pizzeria-gateway"
    assert backend["port"]["name"] in {p["name"] for p in gateway["spec"]["ports"]}
    assert ingress["spec"]["tls"] == [{"hosts": [rule["host"]], "secretName": "pizzeria-tls"}]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert not Rendered(helm_template(None)).of("Ingress")


def test_values_know_every_service_at_its_port() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert {name: s["port"] for name, s in values["services"].items()} == SERVICE_PORTS
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema["properties"]["services"]["propertyNames"]["enum"]) == set(SERVICE_PORTS)


def test_values_are_checked_against_the_schema() -> None:
    for mistake in (
        "imagee.tag=1",
        "services.order.port=5002",
        "services.orders.port=http",
        "kafka.topics.replicationFactor=0",
        "postgresql.database=pizzeria",
    ):
        refused = run(
            "helm", "template", "pizzeria", CHART, "--kube-version", KUBERNETES[0], "--set", mistake, check=False
        )
        assert refused.returncode != 0, mistake
        assert "schema" in refused.stderr or "not allowed" in refused.stderr or "invalid" in refused.stderr, (
            refused.stderr
        )


def test_a_disabled_provider_needs_a_real_one() -> None:
    refused = run(
        "helm",
        "template",
        "pizzeria",
        CHART,
        "--kube-version",
        KUBERNETES[0],
        "--set",
        "services.provider.enabled=false",
        check=False,
    )
    assert refused.returncode != 0
    assert "PAYMENT_PROVIDER_URL" in refused.stderr


def test_the_chart_runs_the_project_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert chart["kubeVersion"] == f">={KUBERNETES[0]}-0"


@pytest.fixture
def notes_chart(tmp_path: Path) -> Path:
    """The chart with its NOTES.txt rendered as a manifest (`helm template` skips NOTES.txt)."""
    chart = tmp_path / "pizzeria"
    shutil.copytree(CHART, chart)
    shutil.copy(CHART / "templates" / "NOTES.txt", chart / "notes-source.txt")
    (chart / "templates" / "notes-check.yaml").write_text(
        'notes: {{ tpl (.Files.Get "notes-source.txt") . | toJson }}\n'
    )
    return chart


@pytest.mark.parametrize("values", sorted(VALUES))
def test_notes_say_how_to_reach_the_gateway(values: str, notes_chart: Path) -> None:
    extra = ["--show-only", "templates/notes-check.yaml"]
    notes = yaml.safe_load(helm_template(VALUES[values], KUBERNETES[0], notes_chart, *extra))["notes"]
    if values == "production":
        assert "https://pizzeria.example.com/api/v1/menu" in notes
    else:
        assert "port-forward service/pizzeria-gateway 8000:8000" in notes
        assert "SIMULATED card provider" in notes
