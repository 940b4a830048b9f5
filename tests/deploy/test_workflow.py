"""The GitHub Actions workflow (.github/workflows/ci.yaml): valid by the workflow schema
(check-jsonschema's vendored copy of SchemaStore's) and by actionlint (expressions, the inputs of
well-known actions, shellcheck on every `run:`); and it does what the project needs in order:
lint and test everywhere, the image and the Helm upgrade on main only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import ROOT, run, tool

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yaml"
ON_MAIN = "github.event_name == 'push' && github.ref == 'refs/heads/main'"


def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(WORKFLOW.read_text(), Loader=yaml.BaseLoader)  # `on` stays a string
    return loaded


def steps(job: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = workflow()["jobs"][job]["steps"]
    return found


def uses(job: str, action: str) -> list[dict[str, Any]]:
    return [s for s in steps(job) if s.get("uses", "").split("@")[0] == action]


def test_matches_the_github_workflow_schema() -> None:
    run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", WORKFLOW)


def test_actionlint_finds_nothing() -> None:
    run("actionlint", "-shellcheck", tool("shellcheck"), "-no-color", WORKFLOW)


def test_lints_and_tests_every_change() -> None:
    triggers = workflow()["on"]
    assert triggers["push"]["branches"] == ["main"]
    assert "pull_request" in triggers
    assert [s["run"] for s in steps("lint") if "run" in s] == ["make lint"]
    assert [s["run"] for s in steps("test") if "run" in s] == ["make test"]
    for job in ("lint", "test"):
        assert "if" not in workflow()["jobs"][job]


def test_pushes_the_image_from_main_only() -> None:
    job = workflow()["jobs"]["image"]
    assert job["if"] == ON_MAIN
    assert set(job["needs"]) == {"lint", "test"}
    assert job["permissions"]["packages"] == "write"
    (login,) = uses("image", "docker/login-action")
    assert login["with"]["registry"] == "ghcr.io"
    (meta,) = uses("image", "docker/metadata-action")
    assert "type=sha,format=long,prefix=" in meta["with"]["tags"].split()  # the tag deploy asks for
    (build,) = uses("image", "docker/build-push-action")
    assert build["with"]["push"] == "true"
    assert build["with"]["context"] == "."
    assert (ROOT / build["with"]["context"] / "Dockerfile").is_file()


def test_upgrades_the_release_from_main_only_when_a_cluster_is_configured() -> None:
    job = workflow()["jobs"]["deploy"]
    assert job["if"] == ON_MAIN
    assert job["needs"] == "image"
    assert job["env"]["KUBECONFIG_DATA"] == "${{ secrets.KUBECONFIG }}"
    (upgrade,) = [s for s in steps("deploy") if "helm upgrade --install" in s.get("run", "")]
    assert upgrade["if"] == "steps.cluster.outputs.configured == 'true'"
    chart = ROOT / upgrade["run"].split("helm upgrade --install pizzeria ")[1].split()[0]
    assert (chart / "Chart.yaml").is_file()
    assert '--set image.tag="$GITHUB_SHA"' in upgrade["run"]
    default_values = job["env"]["HELM_VALUES_FILE"].split("'")[1]
    assert Path(ROOT / default_values).is_file()
    for step in steps("deploy")[1:]:
        assert step["if"] == "steps.cluster.outputs.configured == 'true'", step


def test_the_deploy_tools_are_cached_by_what_builds_them() -> None:
    (cache,) = uses("test", "actions/cache")
    assert cache["with"]["path"] == "~/.cache/pizzeria/bin"
    assert "tools/ensure-deploy-tools.sh" in cache["with"]["key"]
