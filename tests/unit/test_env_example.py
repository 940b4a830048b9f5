"""`.env.example` lists every setting with its real default."""

from __future__ import annotations

from pathlib import Path

from pizzeria.kit.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def documented() -> dict[str, str]:
    pairs = {}
    for line in EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            pairs[name] = value
    return pairs


def test_every_setting_is_documented_with_its_default() -> None:
    listed = documented()
    for field in Settings.model_fields.values():
        assert field.alias in listed, f"{field.alias} missing from .env.example"
        assert listed[field.alias] == str(field.default), f"{field.alias}: default differs"


def test_nothing_documented_that_does_not_exist() -> None:
    known = {f.alias for f in Settings.model_fields.values()}
    assert set(documented()) <= known
