"""What catalog's routes are handed: the parts its composition root built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pizzeria.chassis.deps import parts_dependency
from pizzeria.kit.cache import Cache


@dataclass(frozen=True)
class CatalogParts:
    """Catalog besides its runtime: the menu cache (cache-aside, invalidated by writes)."""

    cache: Cache


CatalogDep = Annotated[CatalogParts, parts_dependency(CatalogParts)]
