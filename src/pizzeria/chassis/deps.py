"""Route dependencies every service has: its runtime, and the parts its composition root built."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from pizzeria.chassis.runtime import ServiceRuntime

PartsT = TypeVar("PartsT")


async def _runtime(request: Request) -> ServiceRuntime:
    # async on purpose: FastAPI runs sync dependencies in a thread pool, a hop per request.
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


#: Route dependency: the service's runtime (units of work, database, dead letters, relay).
RuntimeDep = Annotated[ServiceRuntime, Depends(_runtime)]


def parts_dependency(kind: type[PartsT]) -> Any:
    """A route dependency that hands over the service's parts (what its composition root built),
    typed: `OrdersDep = Annotated[OrdersParts, parts_dependency(OrdersParts)]`."""

    async def parts(request: Request) -> PartsT:
        found = request.app.state.parts
        if not isinstance(found, kind):  # pragma: no cover - a wiring mistake, found at the first request
            raise TypeError(f"this app's parts are {type(found).__name__}, not {kind.__name__}")
        return found

    return Depends(parts)
