"""The image (Dockerfile, .dockerignore): hadolint finds nothing; a build stage and a slim
runtime stage; an unprivileged user; a health check the image can run; every service's port
exposed; and everything it copies from the build context is in the context."""

from __future__ import annotations

import fnmatch
import re

import dockerfile

from pizzeria.chassis.addresses import SERVICE_PORTS
from tests.deploy.tools import ROOT, run

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def stages() -> list[list[dockerfile.Command]]:
    found: list[list[dockerfile.Command]] = []
    for command in instructions():
        if command.cmd == "FROM":
            found.append([])
        if found:
            found[-1].append(command)
    return found


def test_hadolint_finds_nothing() -> None:
    run("hadolint", "--failure-threshold", "info", DOCKERFILE)


def test_builds_in_one_stage_and_runs_from_a_slim_one() -> None:
    build, runtime = stages()
    assert build[0].value[-2:] == ("AS", "build")
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim(-\w+)?", runtime[0].value[0])
    assert any(c.cmd == "COPY" and "--from=build" in c.flags for c in runtime)
    assert not any(c.cmd == "RUN" and "pip install" in " ".join(c.value) for c in runtime), "build in the build stage"
    (version,) = [c.value[0] for c in instructions() if c.cmd == "ARG" and c.value[0].startswith("PYTHON_VERSION=")]
    assert version.split("=")[1] in ("3.11", "3.12", "3.13")


def test_installs_the_locked_dependencies_with_their_hashes() -> None:
    build = stages()[0]
    installs = [" ".join(c.value) for c in build if c.cmd == "RUN" and "pip install" in " ".join(c.value)]
    assert any("--require-hashes --requirement requirements-runtime.lock" in i for i in installs), installs
    assert all("--no-deps" in i for i in installs if "requirements-runtime.lock" not in i), "resolving again"


def test_runs_as_an_unprivileged_user() -> None:
    runtime = stages()[-1]
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric user lets Kubernetes check runAsNonRoot"


def test_checks_its_health_with_the_image_own_python() -> None:
    (check,) = [c for c in stages()[-1] if c.cmd == "HEALTHCHECK"]
    assert check.value[:1] == ("CMD",)
    assert list(check.value[1:]) == ["python", "-m", "pizzeria.chassis.healthcheck", "/ready"]
    assert any(flag.startswith("--start-period=") for flag in check.flags)


def test_runs_any_service_by_its_command() -> None:
    runtime = stages()[-1]
    (entrypoint,) = [c for c in runtime if c.cmd == "ENTRYPOINT"]
    assert entrypoint.json
    assert entrypoint.value == ("pizzeria",)
    settings = {c.value[i]: c.value[i + 1] for c in runtime if c.cmd == "ENV" for i in range(0, len(c.value), 2)}
    assert settings["PIZZERIA_HOST"] == "0.0.0.0"
    assert settings["PIZZERIA_MODE"] == "production"
    assert settings["PIZZERIA_VAR_DIR"].startswith("/tmp/")  # writable with a read-only root


def exposed() -> set[int]:
    ports: set[int] = set()
    for command in stages()[-1]:
        if command.cmd == "EXPOSE":
            for value in command.value:
                low, _, high = value.partition("-")
                ports |= set(range(int(low), int(high or low) + 1))
    return ports


def test_exposes_every_service_port() -> None:
    assert set(SERVICE_PORTS.values()) <= exposed()


def ignored(path: str) -> bool:
    """.dockerignore's verdict on a path (last matching pattern wins; `!` includes again)."""
    verdict = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        include = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatchcase(p, pattern)
            or fnmatch.fnmatchcase(p, pattern.removeprefix("**/"))
            or fnmatch.fnmatchcase(p.split("/")[-1], pattern.removeprefix("**/"))
            for p in prefixes
        ):
            verdict = not include
    return verdict


def test_copies_only_what_the_context_has() -> None:
    copies = [c for c in instructions() if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)]
    assert copies
    for source in (s for c in copies for s in c.value[:-1]):
        assert (ROOT / source).exists(), source
        assert not ignored(source), f"{source} is left out by .dockerignore"
    assert not ignored("src/pizzeria/chassis/healthcheck.py")
    assert ignored(".venv/bin/python")
    assert ignored("var/orders.db")
    assert ignored("src/pizzeria/__pycache__/cli.cpython-312.pyc")
    assert ignored("deploy/compose/prod.env")
