"""docs/saga.md shows the saga as the code defines it."""

from __future__ import annotations

from pathlib import Path

from pizzeria.services.orders.saga import place_order_saga
from pizzeria.services.orders.settings import OrdersSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "saga.md"


def test_the_documented_diagram_is_the_defined_saga() -> None:
    # Regenerate with `pizzeria saga diagram` after changing the saga or its default deadlines.
    assert place_order_saga(OrdersSettings()).mermaid() in DOC.read_text()
