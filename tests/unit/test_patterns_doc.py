"""docs/patterns.md stays true: every pattern the product uses has its section, every
`path::name` it cites (code and tests) exists, each section cites the code and a test, and the
links into it (the README, the fault lab, `pizzeria demo`) land on a section that exists."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

from pizzeria.demo import SCENARIOS
from pizzeria.web import faults
from pizzeria.web.patterns import DOCUMENT, slug, to_html

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"`((?:src|tests)/[\w/.-]+\.py)::([\w.]+)`")
HEADING = re.compile(r"^## (.+)$", re.MULTILINE)

#: Every pattern the product uses (issue 12 names them), by its section's id.
PATTERNS = (
    "outbox",
    "inbox",
    "saga-and-compensation",
    "cqrs-read-model",
    "circuit-breaker",
    "cache-aside",
    "aggregation",
    "rate-limiting",
    "retry-and-dead-letters",
    "idempotency-keys",
    "gateway",
    "health-checks",
    "12-factor-configuration",
    "event-notifications",
    "audit",
)


@functools.cache
def text() -> str:
    return DOCUMENT.read_text(encoding="utf-8")


def sections() -> dict[str, str]:
    """Each `##` section's id and its text."""
    parts = HEADING.split(text())
    return {slug(title): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def defined(path: Path) -> set[str]:
    """Every top-level function and class of a module, and `Class.member` for their members."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    names.add(f"{node.name}.{member.name}")
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def test_every_pattern_has_its_section() -> None:
    missing = [p for p in PATTERNS if p not in sections()]
    assert not missing, f"docs/patterns.md has no section for: {missing}"


def test_every_cited_function_and_test_exists() -> None:
    wrong = []
    for path, name in REFERENCE.findall(text()):
        file = ROOT / path
        if not file.exists():
            wrong.append(f"{path} does not exist")
        elif name not in defined(file):
            wrong.append(f"{path} has no {name}")
    assert not wrong, "docs/patterns.md cites what is not there:\n" + "\n".join(wrong)


def test_each_pattern_cites_its_code_and_a_test_that_proves_it() -> None:
    for pattern in PATTERNS:
        cited = REFERENCE.findall(sections()[pattern])
        assert any(path.startswith("src/") for path, _ in cited), f"#{pattern} cites no code"
        tests = [name for path, name in cited if path.startswith("tests/")]
        assert any(name.rpartition(".")[2].startswith("test_") for name in tests), f"#{pattern} cites no test"


def test_the_links_into_it_land_on_sections() -> None:
    anchors = {link.partition("#")[2] for link in faults.PATTERNS.values()}
    anchors |= {scenario.section for scenario in SCENARIOS.values()}
    assert anchors <= set(sections()), anchors - set(sections())
    assert "](docs/patterns.md)" in (ROOT / "README.md").read_text()
    assert 'href="/patterns"' in (ROOT / "src/pizzeria/web/templates/faults.html").read_text()


def test_the_page_gives_each_section_the_id_the_links_use() -> None:
    html = str(to_html(text()))
    for pattern in PATTERNS:
        assert f'id="{pattern}"' in html, pattern


def test_the_page_escapes_what_it_does_not_understand() -> None:
    html = str(
        to_html("## A <b>title</b>\n\nSome `<code>` and **bold** and [a link](/x?a=1&b=2).\n\n- one\n  more\n- two")
    )
    assert '<h2 id="a-btitleb">A &lt;b&gt;title&lt;/b&gt;</h2>' in html
    assert "<code>&lt;code&gt;</code>" in html
    assert "<strong>bold</strong>" in html
    assert '<a href="/x?a=1&amp;b=2">a link</a>' in html
    assert "<ul><li>one more</li><li>two</li></ul>" in html
