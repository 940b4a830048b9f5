"""`.env.example` lists every setting with its real default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

from pizzeria.kit.settings import Settings
from pizzeria.services.delivery.settings import DeliverySettings
from pizzeria.services.devices.settings import DevicesSettings
from pizzeria.services.gateway.settings import GatewaySettings
from pizzeria.services.identity.settings import IdentitySettings
from pizzeria.services.kitchen.settings import KitchenSettings
from pizzeria.services.orders.settings import OrdersSettings
from pizzeria.services.payments.settings import PaymentsSettings
from pizzeria.services.telemetry.settings import TelemetrySettings
from pizzeria.simulators.fleet import FleetSettings
from pizzeria.simulators.payment_provider import ProviderSettings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def documented() -> dict[str, str]:
    """Every variable listed, with its default: `NAME=default`, or a setting without one (whose
    default depends on others) commented out, `# NAME=`, with `None`."""
    pairs: dict[str, str] = {}
    for line in EXAMPLE.read_text().splitlines():
        if line.startswith("# ") and line.endswith("=") and line[2:-1].isidentifier() and line[2:-1].isupper():
            pairs[line[2:-1]] = "None"
        elif line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            pairs[name] = value
    return pairs


#: Every settings class: what every process reads, and each service's own.
SETTINGS: tuple[type[BaseSettings], ...] = (
    Settings,
    PaymentsSettings,
    KitchenSettings,
    DeliverySettings,
    DevicesSettings,
    TelemetrySettings,
    OrdersSettings,
    GatewaySettings,
    IdentitySettings,
    ProviderSettings,
    FleetSettings,
)


def every_field() -> list[Any]:
    return [field for kind in SETTINGS for field in kind.model_fields.values()]


def test_every_settings_module_is_checked() -> None:
    found = {p.parent.name for p in (EXAMPLE.parent / "src" / "pizzeria" / "services").glob("*/settings.py")}
    checked = {kind.__module__.split(".")[2] for kind in SETTINGS if kind.__module__.startswith("pizzeria.services")}
    assert found == checked


def test_every_setting_is_documented_with_its_default() -> None:
    listed = documented()
    for field in every_field():
        assert field.alias in listed, f"{field.alias} missing from .env.example"
        assert listed[field.alias] == str(field.default), f"{field.alias}: default differs"


def test_nothing_documented_that_does_not_exist() -> None:
    known = {f.alias for f in every_field()}
    assert set(documented()) <= known
