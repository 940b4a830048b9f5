"""The layout is the architecture: kit → messaging → contracts → chassis → services → the
process level (registry, supervisor, cli). No module imports a layer above its own, a service
imports no other service, and no import cycle exists (local imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "pizzeria"

#: Each top-level part of the package and its layer; a module may import its own layer or lower.
LAYERS = {
    "kit": 0,
    "messaging": 1,
    "contracts": 2,
    "chassis": 3,
    "simulators": 3,
    "services": 4,
    # The web UI: the gateway serves it (so it sits beside the services), and it is a client of
    # the public API only: it imports no service (a test below checks).
    "web": 4,
    # The history checker, its load and its read-back (`pizzeria check`, the fault lab's checked
    # load): a client of a running system's public API, beside the web UI that uses it; it
    # imports no service (a test below checks).
    "chaos": 4,
    "registry": 5,
    "supervisor": 5,
    # forks the supervisor's processes (the `pizzeria` command runs it, and in each child)
    "zygote": 5,
    "cli": 6,
    # `pizzeria demo`: a client of a running system, run by the command line.
    "demo": 6,
    "__main__": 7,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every `pizzeria...` module a file imports, wherever the import statement stands."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("pizzeria"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            if not base.startswith("pizzeria"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {name for name in found if name in MODULES}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # the package itself
    return LAYERS[parts[1]]


def test_every_part_of_the_package_has_a_layer() -> None:
    unplaced = {m.split(".")[1] for m in MODULES if "." in m} - set(LAYERS)
    assert not unplaced, f"give these a layer in LAYERS: {sorted(unplaced)}"


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"{m} → {dep}" for m, deps in GRAPH.items() for dep in deps if layer_of(dep) > layer_of(m) and layer_of(m) >= 0
    ]
    assert not upward, "imports that run upward:\n" + "\n".join(sorted(upward))


def test_a_service_imports_no_other_service() -> None:
    crossing = []
    for module, deps in GRAPH.items():
        parts = module.split(".")
        if len(parts) < 3 or parts[1] != "services":
            continue
        for dep in deps:
            other = dep.split(".")
            if len(other) >= 3 and other[1] == "services" and other[2] != parts[2]:
                crossing.append(f"{module} → {dep}")
    assert not crossing, "services must talk through contracts only:\n" + "\n".join(crossing)


@pytest.mark.parametrize("client", ["pizzeria.web", "pizzeria.chaos"])
def test_the_clients_of_the_public_api_import_no_service(client: str) -> None:
    reaching = [
        f"{module} → {dep}"
        for module, deps in GRAPH.items()
        if module.startswith(client)
        for dep in deps
        if dep.startswith("pizzeria.services")
    ]
    assert not reaching, f"{client} talks to services through the public API only:\n" + "\n".join(reaching)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert cycles(GRAPH) == []


@pytest.mark.parametrize(
    "graph",
    [
        {"a": {"b"}, "b": {"c"}, "c": {"a"}},
        {"a": {"a"}},
    ],
)
def test_the_cycle_check_finds_a_cycle(graph: dict[str, set[str]]) -> None:
    assert cycles(graph)
