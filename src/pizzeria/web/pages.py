"""The web UI as one router the gateway includes: storefront, orders, staff and courier boards,
operations console. Its pages are clients of the public API, called in-process through the app
they are part of (`web/api.py`), so this package imports no service."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import Response

from pizzeria.kit.errors import NotFound
from pizzeria.kit.settings import Settings
from pizzeria.web import boards, console, faults, orders, patterns
from pizzeria.web.account import Accounts
from pizzeria.web.api import PublicApi
from pizzeria.web.checked import CheckedLab
from pizzeria.web.render import Renderer
from pizzeria.web.session import Sessions
from pizzeria.web.site import Denied, Web
from pizzeria.web.store import Storefront


def install(app: FastAPI, settings: Settings, trusted_origins: Iterable[str]) -> Web:
    """Serve the UI from `app`: its pages, and the answer to a visitor who may not see one."""
    web = Web(
        api=PublicApi(app),
        sessions=Sessions(PublicApi(app), settings, frozenset(o.rstrip("/") for o in trusted_origins)),
        render=Renderer(),
        checked=CheckedLab(app),
    )

    async def same_origin(request: Request) -> None:
        web.sessions.check_origin(request)

    router = APIRouter(include_in_schema=False, dependencies=[Depends(same_origin)])
    router.include_router(Storefront(web).router())
    router.include_router(Accounts(web).router())
    for part in (orders, boards, console, faults, patterns):
        router.include_router(part.router(web))
    app.include_router(router)

    async def denied(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, Denied)
        return exc.response

    app.add_exception_handler(Denied, denied)
    return web


def serve_not_found(app: FastAPI, web: Web) -> None:
    """A page a browser can read for any other path (register it last: it matches every GET).
    API paths keep their problem+json answer."""

    async def not_found(request: Request) -> Response:
        if request.url.path.startswith("/api/"):
            raise NotFound(f"{request.url.path} does not exist")
        visit = await web.visit(request)
        return web.error_page(
            request,
            visit,
            404,
            "Page not found",
            "There is no page at this address. The menu is a good place to start.",
        )

    app.add_api_route("/{path:path}", not_found, methods=["GET"], include_in_schema=False)
