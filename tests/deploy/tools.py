"""Where the deploy tests find their tools, and how they run them.

The Go tools (helm, actionlint, compose-check) are built by `tools/ensure-deploy-tools.sh`
(`make test` runs it); the others come with the dev dependencies, beside this interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GO_TOOLS = Path(
    os.environ.get("PIZZERIA_TOOLS_BIN")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pizzeria" / "bin"
)


def tool(name: str) -> Path:
    """The path of a tool; fails (never skips) when it is missing, saying how to get it."""
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent, GO_TOOLS):
        if (folder / name).is_file():
            return folder / name
    raise AssertionError(
        f"{name} is missing: `make deploy-tools` builds helm, actionlint and compose-check, "
        "`make install` installs the others"
    )


def run(
    name: str, *args: str | Path, cwd: Path = ROOT, check: bool = True, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(tool(name)), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert done.returncode == 0, f"{name} {' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"
    return done


def compose_project(*files: Path, env_file: Path | None = None) -> dict[str, Any]:
    """The Compose project as `docker compose` resolves it: merged, interpolated, validated."""
    args: list[str | Path] = ["-env-file", env_file] if env_file else []
    project: dict[str, Any] = json.loads(run("compose-check", *args, *files).stdout)
    return project
