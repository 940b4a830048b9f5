"""docs/openapi/ holds the OpenAPI document of every service exactly as the code generates it.

Regenerate with `pizzeria openapi -o docs/openapi` after changing a route or a schema (or after
upgrading FastAPI or Pydantic, whose output may change with them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from pizzeria.cli import openapi_documents, render_json

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"
REGENERATE = "regenerate with `pizzeria openapi -o docs/openapi`"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return openapi_documents(tmp_path_factory.mktemp("var"))


def test_every_process_has_its_document_and_no_other(generated: dict[str, dict[str, Any]]) -> None:
    committed = {p.stem for p in DOCS.glob("*.json")}
    assert committed == set(generated), f"documents missing or left over in {DOCS}: {REGENERATE}"


def test_the_committed_documents_are_current(generated: dict[str, dict[str, Any]]) -> None:
    stale = [
        name
        for name, document in sorted(generated.items())
        if not (DOCS / f"{name}.json").exists() or (DOCS / f"{name}.json").read_text() != render_json(document)
    ]
    assert not stale, f"out of date: {', '.join(stale)}; {REGENERATE}"


def test_rendering_is_deterministic() -> None:
    one = {"b": {"z": 1, "a": [3, 1]}, "a": None}
    other = {"a": None, "b": {"a": [3, 1], "z": 1}}
    assert render_json(one) == render_json(other)
    assert orjson.loads(render_json(one)) == one
