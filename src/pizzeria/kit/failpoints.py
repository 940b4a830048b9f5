"""Named failpoints for chaos tests: `PIZZERIA_FAILPOINTS="orders:relay.before_publish=crash@3"`.

A failpoint is inert unless the environment names it. `crash@N` kills the process (no cleanup,
like `kill -9`) the N-th time the point is reached; `error@N` raises `FailpointError` instead.
A `service:` prefix arms the point in that service only. A point fires once per system run:
firing leaves a marker file in the state directory, so a restarted process does not crash again.

`hold(name, on=True)` makes a point raise `FailpointError` on every hit until it is released
(the fault lab's switches, chassis/faults.py); a held point leaves no marker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class FailpointError(RuntimeError):
    """Raised by an `error` failpoint."""


@dataclass
class _Failpoint:
    action: str
    at: int
    hits: int = 0


_points: dict[str, _Failpoint] = {}
_held: set[str] = set()
_state: dict[str, Path | None] = {"dir": None}


def configure(spec: str, *, service: str = "", state_dir: Path | None = None) -> None:
    """Parse `[service:]name=action@n,...` (n defaults to 1)."""
    _points.clear()
    _state["dir"] = state_dir
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, rule = part.partition("=")
        name = name.strip()
        action, _, at = rule.strip().partition("@")
        if action not in {"crash", "error"}:
            raise ValueError(f"unknown failpoint action {action!r} in {part!r}")
        if ":" in name:
            owner, _, name = name.partition(":")
            if owner != service:
                continue
        if state_dir is not None and _marker(name).exists():
            continue  # already fired in this run
        _points[name] = _Failpoint(action=action, at=int(at or 1))


def _marker(name: str) -> Path:
    directory = _state["dir"]
    assert directory is not None
    return directory / f"{name}.fired"


def hold(name: str, *, on: bool) -> None:
    """Make `name` fail on every hit from now on (`on`), or no longer."""
    if on:
        _held.add(name)
    else:
        _held.discard(name)


def held() -> frozenset[str]:
    """The points held failing now."""
    return frozenset(_held)


def hit(name: str) -> None:
    """Mark that execution reached `name`; act if the failpoint is armed and due."""
    if name in _held:
        raise FailpointError(f"failpoint {name} is held failing")
    point = _points.get(name)
    if point is None:
        return
    point.hits += 1
    if point.hits != point.at:
        return
    if _state["dir"] is not None:
        _state["dir"].mkdir(parents=True, exist_ok=True)
        _marker(name).touch()
    if point.action == "crash":
        os._exit(137)
    raise FailpointError(f"failpoint {name} fired")
