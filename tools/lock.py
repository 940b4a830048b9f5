"""requirements.lock: every Python package `make` installs, pinned with its hashes, resolved from
the ranges in pyproject.toml (which stay for those who use pizzeria as a library); and
requirements-runtime.lock, what the image installs: the package's own dependencies only, at the
versions of requirements.lock.

    python tools/lock.py [UV ARGS] re-resolve the lock after pyproject.toml's dependencies changed
                                   (`make lock`; keeps every pin that still fits; needs uv); e.g.
                                   --upgrade-package NAME moves one pin to its newest version
    python tools/lock.py --check   fail when the locks were not made from pyproject.toml as it is
                                   (`make install` runs it first; no network, standard library only)

Each lock records a digest of the requirements it was resolved from, so any change to them (a
package, a range, an extra, a marker, the Python versions) is caught without asking an index.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements.lock"
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"
#: The optional dependencies `make` installs besides the package's own.
EXTRAS = ("dev",)
DIGEST = re.compile(r"^# pyproject\.toml requirements: sha256:([0-9a-f]{64})$", re.M)


def requirements_digest(pyproject: Path) -> str:
    """A digest of what the lock is resolved from: the Python versions, the dependencies and the
    extras `make` installs, each list in order of name so that reordering changes nothing."""
    project = tomllib.loads(pyproject.read_text())["project"]
    source = {
        "requires-python": project.get("requires-python", ""),
        "dependencies": sorted(" ".join(r.split()) for r in project.get("dependencies", [])),
        **{
            f"extra:{extra}": sorted(" ".join(r.split()) for r in project["optional-dependencies"][extra])
            for extra in EXTRAS
        },
    }
    return hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()


def lock_digest(lock: Path) -> str | None:
    found = DIGEST.search(lock.read_text()) if lock.exists() else None
    return found.group(1) if found else None


def check(pyproject: Path, locks: list[Path]) -> int:
    stale = [lock.name for lock in locks if lock_digest(lock) != requirements_digest(pyproject)]
    if stale:
        print(
            f"{' and '.join(stale)} out of date with {pyproject.name} (its dependencies changed since the lock "
            "was made): run `make lock` and commit the new lock",
            file=sys.stderr,
        )
        return 1
    return 0


def minimum_python(pyproject: Path) -> str:
    found = re.search(r">=\s*(\d+\.\d+)", tomllib.loads(pyproject.read_text())["project"]["requires-python"])
    if not found:
        raise SystemExit("pyproject.toml: requires-python names no lowest version")
    return found.group(1)


def compile_lock(uv: str, pyproject: Path, lock: Path, options: list[str]) -> int:
    """Resolve `lock` from pyproject.toml with uv, then stamp it with the requirements' digest."""
    command = [uv, "pip", "compile", pyproject.name, "--quiet", "--universal", "--generate-hashes"]
    command += ["--python-version", minimum_python(pyproject), "--custom-compile-command", "make lock", *options]
    # uv keeps the pins of the existing output file that still fit.
    output = os.path.relpath(lock, pyproject.parent)
    done = subprocess.run([*command, "--output-file", output], cwd=pyproject.parent, check=False)
    if done.returncode != 0:
        return done.returncode
    lines = [line for line in lock.read_text().splitlines(keepends=True) if not DIGEST.match(line.rstrip("\n"))]
    header = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    stamp = f"# pyproject.toml requirements: sha256:{requirements_digest(pyproject)}\n"
    lock.write_text("".join([*lines[:header], stamp, *lines[header:]]))
    return 0


def relock(pyproject: Path, lock: Path, runtime_lock: Path, uv_args: list[str]) -> int:
    uv = shutil.which("uv", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if uv is None:
        print("uv is needed to resolve the lock: `make lock` installs it into .venv", file=sys.stderr)
        return 1
    extras = [arg for extra in EXTRAS for arg in ("--extra", extra)]
    return compile_lock(uv, pyproject, lock, [*extras, *uv_args]) or compile_lock(
        uv, pyproject, runtime_lock, ["--constraint", os.path.relpath(lock, pyproject.parent)]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the lock is current")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    parser.add_argument("--lock", type=Path, default=LOCK)
    parser.add_argument("--runtime-lock", type=Path, default=RUNTIME_LOCK)
    args, uv_args = parser.parse_known_args()
    if args.check:
        return check(args.pyproject, [args.lock, args.runtime_lock])
    return relock(args.pyproject, args.lock, args.runtime_lock, uv_args)


if __name__ == "__main__":
    raise SystemExit(main())
