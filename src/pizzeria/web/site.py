"""What every page module is handed: the in-process API, the sessions and the templates, plus the
steps most pages take (who is this, may they, what did the form say)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from pizzeria.web.api import Answer, Params, PublicApi
from pizzeria.web.checked import CheckedLab
from pizzeria.web.render import Renderer, redirect
from pizzeria.web.session import Sessions, Visit

MAX_FORM_BYTES = 64 * 1024


class Denied(Exception):
    """The visitor may not see this page: the answer to send instead."""

    def __init__(self, response: Response) -> None:
        super().__init__("denied")
        self.response = response


@dataclass
class Web:
    api: PublicApi
    sessions: Sessions
    render: Renderer
    checked: CheckedLab  # the fault lab's checked load, one per process

    async def visit(self, request: Request, *roles: str) -> Visit:
        """The visitor; with `roles`, one who is signed in with one of them (else `Denied`)."""
        visit = await self.sessions.visit(request)
        if not roles:
            return visit
        if not visit.signed_in:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if request.method != "GET" or request.headers.get("hx-request") == "true":
                # After a form or a poll, come back to the page it was on.
                target = urlsplit(request.headers.get("referer", "/")).path or "/"
            raise Denied(redirect(request, visit, f"/signin?next={quote(target, safe='/')}"))
        if visit.role not in roles:
            raise Denied(
                self.render.page(
                    request,
                    visit,
                    "error.html",
                    status=403,
                    title="Not for this account",
                    message=f"This page is for {' or '.join(roles)} accounts; you are signed in as {visit.role}.",
                )
            )
        return visit

    async def call(
        self,
        request: Request,
        visit: Visit,
        method: str,
        path: str,
        *,
        params: Params = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """The API, as the visitor (with their token when they are signed in)."""
        return await self.api.call(request, method, path, token=visit.access, params=params, json=json, headers=headers)

    def error_page(self, request: Request, visit: Visit, status: int, title: str, message: str) -> Response:
        return self.render.page(request, visit, "error.html", status=status, title=title, message=message)


async def form(request: Request) -> dict[str, str]:
    """The fields of a posted form (url-encoded; the first value of each)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, value)
    return fields


def as_uuid(value: str) -> str | None:
    """`value` as a canonical UUID, or None (so nothing else ever reaches an API path)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def as_int(value: str | None, default: int) -> int:
    try:
        return int(value or "")
    except ValueError:
        return default
