"""requirements.lock, what `make` installs, and requirements-runtime.lock, what the image installs:
made from pyproject.toml as it is (else `make install` stops and says `make lock`), every package
pyproject.toml asks for pinned inside its range, every pin with the hashes pip checks, and the
image at the versions `make` tests."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "lock.py"
LOCK = ROOT / "requirements.lock"
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"
PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)[^\\\n]*\\\n(?P<hashes>(?:\s+--hash=sha256:[0-9a-f]{64}.*\n)+)",
    re.M,
)


def pins(lock: Path = LOCK) -> dict[str, tuple[str, int]]:
    """package → (pinned version, number of hashes)."""
    found = PIN.finditer(lock.read_text())
    return {canonicalize_name(m["name"]): (m["version"], m["hashes"].count("--hash=")) for m in found}


def requested(*, dev: bool = True) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["dev"] if dev else []
    return [Requirement(r) for r in (*project["dependencies"], *extra)]


def check(pyproject: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(TOOL),
            "--check",
            *("--pyproject", str(pyproject)),
            *("--lock", str(LOCK), "--runtime-lock", str(RUNTIME_LOCK)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_lock_is_made_from_pyproject_as_it_is() -> None:
    done = check(ROOT / "pyproject.toml")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ('"redis>=5.0",', '"redis>=5.0",\n  "humanize>=4.0",'),  # a new package
        ('"redis>=5.0",', '"redis>=6.0",'),  # a narrower range
        ('"redis>=5.0",', '"redis[hiredis]>=5.0",'),  # an extra
        ('"pytest>=8",', '"pytest>=9",'),  # what `make` installs for development
        ('requires-python = ">=3.11"', 'requires-python = ">=3.12"'),
    ],
)
def test_a_change_to_the_dependencies_asks_for_a_new_lock(tmp_path: Path, before: str, after: str) -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert before in text
    changed = tmp_path / "pyproject.toml"
    changed.write_text(text.replace(before, after, 1))
    done = check(changed)
    assert done.returncode == 1
    assert "run `make lock`" in done.stderr


def test_the_order_of_the_dependencies_does_not_matter(tmp_path: Path) -> None:
    text = (ROOT / "pyproject.toml").read_text()
    changed = tmp_path / "pyproject.toml"
    changed.write_text(text.replace('  "redis>=5.0",\n  "httpx>=0.27",\n', '  "httpx>=0.27",\n  "redis>=5.0",\n', 1))
    assert changed.read_text() != text
    assert check(changed).returncode == 0


@pytest.mark.parametrize(("lock", "dev"), [(LOCK, True), (RUNTIME_LOCK, False)])
def test_every_requested_package_is_pinned_inside_its_range_with_hashes(lock: Path, dev: bool) -> None:
    locked = pins(lock)
    assert len(locked) > len(requested(dev=dev))
    for requirement in requested(dev=dev):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in the lock"
        version, hashes = locked[name]
        assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version} is outside {requirement}"
        assert hashes, name
    assert all(hashes for _, hashes in locked.values()), "a pin without hashes"


def test_the_image_runs_the_versions_make_tests_and_no_development_package() -> None:
    everything, runtime = pins(), pins(RUNTIME_LOCK)
    assert {name: version for name, (version, _) in runtime.items()} == {name: everything[name][0] for name in runtime}
    # The tools of development only (PyYAML, also asked for by uvicorn[standard], is not one).
    tools = {"pytest", "hypothesis", "schemathesis", "ruff", "mypy", "playwright", "uv", "py-spy"}
    assert tools <= {canonicalize_name(r.name) for r in requested()}
    assert not tools & set(runtime)
