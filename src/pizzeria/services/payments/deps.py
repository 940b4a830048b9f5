"""What payments' routes are handed: the parts its composition root built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from pizzeria.chassis.deps import parts_dependency


@dataclass(frozen=True)
class PaymentsParts:
    """Payments besides its runtime: a way to wake the charger (a refund was asked for)."""

    wake_charger: Callable[[], None]


PaymentsDep = Annotated[PaymentsParts, parts_dependency(PaymentsParts)]
