"""Who is visiting: the sign-in kept in cookies, refreshed when its access token expires, and the
check that a form was sent by one of our own pages.

The session is two HttpOnly, SameSite=Lax cookies holding the tokens identity issued (the
access token is a signed JWT, so it needs no signature of ours): scripts cannot read them, and
other sites' pages cannot make the browser send them along with a form they post. On top of
that every unsafe request must name one of our own origins in `Origin` (or, where a browser
sends none, `Referer`) — the standard-header defence against cross-site request forgery, which
needs no token in the forms.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from pizzeria.kit.auth import Principal, decode_access_token
from pizzeria.kit.errors import Forbidden, Unauthorized
from pizzeria.kit.settings import Settings
from pizzeria.web.api import PublicApi

ACCESS_COOKIE = "pz_access"
REFRESH_COOKIE = "pz_refresh"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: How long a refresh's outcome is kept for the other requests of the same page that present the
#: same (single-use) refresh token at the same moment.
REFRESH_SHARED_S = 30.0


class CrossSiteRequest(Forbidden):
    type_slug = "cross-site-request"
    title = "Cross-site request refused"


@dataclass
class Visit:
    """The visitor of one request, and the cookie changes its answer must carry."""

    principal: Principal | None = None
    access: str | None = None
    refresh: str | None = None
    cookies: list[tuple[str, str | None, int]] = field(default_factory=list)  # name, value (None: delete), max age

    @property
    def signed_in(self) -> bool:
        return self.principal is not None

    @property
    def role(self) -> str | None:
        return self.principal.role if self.principal else None

    def has_role(self, *roles: str) -> bool:
        return self.principal is not None and self.principal.role in roles

    def sign_in(self, tokens: dict[str, Any], principal: Principal, lifetime_s: int) -> None:
        self.principal, self.access, self.refresh = principal, tokens["access_token"], tokens["refresh_token"]
        self.cookies += [(ACCESS_COOKIE, self.access, lifetime_s), (REFRESH_COOKIE, self.refresh, lifetime_s)]

    def sign_out(self) -> None:
        self.principal = self.access = self.refresh = None
        self.cookies += [(ACCESS_COOKIE, None, 0), (REFRESH_COOKIE, None, 0)]

    def apply(self, request: Request, response: Response) -> Response:
        secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
        for name, value, max_age in self.cookies:
            if value is None:
                response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="lax")
            else:
                response.set_cookie(
                    name, value, max_age=max_age, path="/", secure=secure, httponly=True, samesite="lax"
                )
        return response


class Sessions:
    """Reads the visitor from the cookies, trading an expired access token for a new one."""

    def __init__(self, api: PublicApi, settings: Settings, trusted_origins: frozenset[str]) -> None:
        self.api = api
        self.settings = settings
        self.trusted_origins = trusted_origins
        self._refreshed: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def lifetime_s(self) -> int:
        return self.settings.refresh_token_ttl_s

    async def visit(self, request: Request) -> Visit:
        access, refresh = request.cookies.get(ACCESS_COOKIE), request.cookies.get(REFRESH_COOKIE)
        visit = Visit(access=access, refresh=refresh)
        if access:
            try:
                visit.principal = decode_access_token(access, self.settings)
                return visit
            except Unauthorized:
                visit.principal = None
        if not refresh:
            if access:
                visit.sign_out()
            return visit
        tokens = await self._refresh(request, refresh)
        if tokens is None:
            visit.sign_out()
            return visit
        if not tokens:  # identity could not answer: signed out for now, the cookies kept
            visit.principal = None
            return visit
        try:
            principal = decode_access_token(tokens["access_token"], self.settings)
        except Unauthorized:
            visit.sign_out()
            return visit
        visit.sign_in(tokens, principal, self.lifetime_s)
        return visit

    async def _refresh(self, request: Request, refresh: str) -> dict[str, Any] | None:
        """New tokens for a refresh token; None when it is refused, `{}` when identity cannot say.
        Refresh tokens are single use and a reused one revokes the whole sign-in, so requests that
        arrive together with the same one share one trade."""
        now = time.monotonic()
        for token, (at, _) in list(self._refreshed.items()):
            if now - at > REFRESH_SHARED_S:
                del self._refreshed[token]
                self._locks.pop(token, None)
        lock = self._locks.setdefault(refresh, asyncio.Lock())
        async with lock:
            if refresh in self._refreshed:
                return self._refreshed[refresh][1]
            answer = await self.api.call(request, "POST", "/api/v1/auth/refresh", json={"refresh_token": refresh})
            if answer.status >= 500 or answer.status == 429:
                return {}
            tokens: dict[str, Any] | None = answer.json() if answer.status == 200 else None
            self._refreshed[refresh] = (time.monotonic(), tokens)
            return tokens

    def check_origin(self, request: Request) -> None:
        """Refuse an unsafe request that does not come from one of our own pages."""
        if request.method in SAFE_METHODS:
            return
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            referer = request.headers.get("referer")
            if not referer:
                raise CrossSiteRequest("this form must be sent from a page of this site (no Origin or Referer)")
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
        if origin in self.trusted_origins:
            return
        # The host the browser asked for, port aside: a proxy may drop the port from Host, and
        # cookies are shared across the ports of a host anyway.
        own = urlsplit(f"//{request.headers.get('host', '')}").hostname
        if own and urlsplit(origin).hostname == own:
            return
        raise CrossSiteRequest(f"this form must be sent from a page of this site, not {origin}")


def local_path(target: str | None, default: str = "/") -> str:
    """`target` when it is a path on this site, else `default` (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target
