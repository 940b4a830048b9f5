"""Gateway composition root: the one door of the public API (port 8000).

Every request is rate limited per client IP, its token checked, its role checked against the
route table, rate limited per user, then forwarded to the service that owns the path with a
deadline, retries for idempotent reads and a circuit breaker per replica of the upstream,
spread over the upstream's replicas.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NoReturn

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import Counter

from pizzeria.chassis.addresses import replica_label, url_for, urls_for
from pizzeria.chassis.service import refuse_unsafe_production
from pizzeria.kit import context
from pizzeria.kit.auth import DEVICE_KEY_HEADER, NO_DEVICE_KEY, InvalidDeviceKey, Principal, decode_access_token
from pizzeria.kit.clientaddr import client_address
from pizzeria.kit.errors import BadRequest, Forbidden, NotFound, ProblemError, TooManyRequests, Unauthorized
from pizzeria.kit.http import add_problem_responses, http_app
from pizzeria.kit.logging import configure_logging
from pizzeria.kit.resilience import CircuitBreaker
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.kit.tracing import TRACEPARENT
from pizzeria.services.gateway import faults, invariants, ops, status
from pizzeria.services.gateway.openapi import OpenApiDocument
from pizzeria.services.gateway.overview import Overview, overview
from pizzeria.services.gateway.ratelimit import Decision, RateLimiter, build_rate_limiter
from pizzeria.services.gateway.routes import SIGNED_IN, UPSTREAMS, match
from pizzeria.services.gateway.settings import GatewaySettings
from pizzeria.services.gateway.streams import StreamLimits, relay_stream
from pizzeria.services.gateway.upstream import OWN_HEADERS, Replica, Upstream
from pizzeria.web import pages
from pizzeria.web.site import Web

NAME = "gateway"
#: Vendored browser assets (no CDN): the web UI's styles and htmx, Swagger UI for `/docs`.
STATIC = Path(__file__).resolve().parents[2] / "web" / "static"

rate_limited = Counter("pizzeria_gateway_rate_limited_total", "Requests refused by a rate limit.", ["scope"])

#: Request headers passed on to the upstream (the rest describe the hop to the gateway).
FORWARDED_HEADERS = (
    "authorization",
    "content-type",
    "accept",
    "accept-language",
    "idempotency-key",
    "traceparent",
    "tracestate",
    DEVICE_KEY_HEADER.lower(),
)
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
#: Visible ASCII, with single spaces or tabs inside (RFC 9110 5.5 without obs-text).
_VISIBLE = re.compile(r"^[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*$")
VISIBLE_TEXT = "send visible ASCII characters only"
HEADER_RULES = {
    # The key of one order: stored, compared and shown back, so no spaces at all.
    "idempotency-key": re.compile(r"^[\x21-\x7e]{1,255}$"),
}
HEADER_RULE_TEXT = {"idempotency-key": "send 1 to 255 visible ASCII characters without spaces (a UUID is best)"}


class BadHeader(BadRequest):
    type_slug = "bad-header"
    title = "Bad header"


class MethodNotAllowed(ProblemError):
    status = 405
    type_slug = "method-not-allowed"
    title = "Method not allowed"


class Gate:
    """Who is calling, may they, and are they within their rate limits (and, for streams, their
    limit of open streams: `streams`)."""

    def __init__(self, settings: Settings, own: GatewaySettings, limiter: RateLimiter) -> None:
        self.settings = settings
        self.own = own
        self.limiter = limiter
        self.streams = StreamLimits(per_caller=own.streams_per_user, total=own.stream_connections)

    async def admit(
        self, request: Request, allowed: frozenset[str] | None, *, device: bool = False
    ) -> Principal | None:
        """The caller, once admitted. The address's limit is checked first (whatever else is
        wrong with the request), then who is calling and whether they may, then the caller's
        own limit: both limits are counted in one hit on the limiter (one round trip to Redis)."""
        principal: Principal | None = None
        refused: ProblemError | None = None
        try:
            if device and not request.headers.get(DEVICE_KEY_HEADER, "").strip():
                raise InvalidDeviceKey(NO_DEVICE_KEY)  # the upstream checks the key itself
            principal = self._principal(request)
            if allowed is not None:
                if principal is None:
                    raise Unauthorized("this needs an access token: send `Authorization: Bearer <token>`")
                if principal.role not in allowed:
                    raise Forbidden(
                        f"this needs the role {' or '.join(sorted(allowed))}; the caller is {principal.role}"
                    )
        except ProblemError as exc:  # said once the address's limit is known to allow the request
            refused, principal = exc, None
        checks = [(f"ip:{client_ip(request)}", self.own.rate_limit_per_ip, "ip")]
        if principal is not None:
            checks.append((f"user:{principal.user_id}", self.own.rate_limit_per_user, "user"))
        decisions = await self.limiter.hit_all([(key, limit) for key, limit, _ in checks])
        for (_, limit, scope), decision in zip(checks, decisions, strict=True):
            if not decision.allowed:
                self._refuse(decision, limit, scope)
            if refused is not None:  # (after the address's limit, before the caller's)
                raise refused
        return principal

    def _principal(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send the access token as `Authorization: Bearer <token>`")
        return decode_access_token(token.strip(), self.settings)

    def _refuse(self, decision: Decision, limit: int, scope: str) -> NoReturn:
        rate_limited.labels(scope).inc()
        raise TooManyRequests(
            f"too many requests for this {scope}: {limit} per {self.own.rate_limit_window_s} s; "
            f"try again in {decision.retry_after_s} s",
            headers={
                "Retry-After": str(decision.retry_after_s),
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": "0",
            },
        )


def client_ip(request: Request) -> str:
    """The caller's address: the peer's, or what a trusted proxy in front says (TRUSTED_PROXIES)."""
    trusted = request.app.state.settings.trusted_networks()
    return client_address(
        request.client.host if request.client else None, request.headers.getlist("x-forwarded-for"), trusted
    )


def forwarded_headers(request: Request) -> dict[str, str]:
    """The headers passed on, normalised (surrounding spaces dropped); a value the upstream
    could not be sent is refused here (400), before it costs anyone anything."""
    headers = {}
    for name in FORWARDED_HEADERS:
        values = request.headers.getlist(name)
        if not values:
            continue
        if len(values) > 1:
            raise BadHeader(f"send the {name} header once")
        value = values[0].strip(" \t")
        if name in TRACE_HEADERS:
            # W3C Trace Context: a header that is not valid is ignored, the trace starts here.
            if (name == "traceparent" and TRACEPARENT.match(value)) or (name == "tracestate" and _VISIBLE.match(value)):
                headers[name] = value
            continue
        rule = HEADER_RULES.get(name, _VISIBLE)
        if not rule.match(value):
            raise BadHeader(f"the {name} header {_described(value)}; {HEADER_RULE_TEXT.get(name, VISIBLE_TEXT)}")
        headers[name] = value
    request_id = context.request_id.get()
    if request_id:
        headers["x-request-id"] = request_id
    headers["x-forwarded-for"] = client_ip(request)
    return headers


def _described(value: str) -> str:
    if not value:
        return "is empty"
    if not value.isascii():
        return "holds characters that are not ASCII"
    return "holds characters it may not"


def build_upstream(
    name: str, urls: list[str], own: GatewaySettings, transport: httpx.AsyncBaseTransport | None
) -> Upstream:
    """A service behind the gateway, at each of its replicas' addresses, with the deadline,
    retries, breakers and connection pools the settings give (breaker `upstream-orders` for
    replica 1, `upstream-orders-2` for replica 2, as `pizzeria up` names them)."""
    replicas = [
        Replica(
            url,
            timeout=own.upstream_timeout_s,
            breaker=CircuitBreaker(
                f"upstream-{replica_label(name, n)}",
                failure_threshold=own.breaker_failures,
                reset_timeout=own.breaker_reset_s,
            ),
            transport=transport,
            connections=own.upstream_connections,
            stream_connections=own.stream_connections,
        )
        for n, url in enumerate(urls, start=1)
    ]
    return Upstream(name, replicas, retries=own.read_retries)


def upstream_health(upstream: Upstream) -> dict[str, object]:
    """An upstream in `/health`: its first address and the breaker state traffic sees, and
    each replica's address and breaker."""
    return {
        "url": upstream.urls[0],
        "breaker": upstream.state(),
        "replicas": [{"url": r.url, "breaker": r.state()} for r in upstream.replicas],
    }


def serve_browsers(app: FastAPI, settings: Settings, own: GatewaySettings) -> Web:
    """What a browser is served beside the API: the web UI, its static files, the API docs."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # The web UI: pages that call the public API above in-process, as the visitor.
    web = pages.install(app, settings, [o.strip() for o in own.cors_origins.split(",") if o.strip()])

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Pizzeria API",
            swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/swagger-ui/favicon-32x32.png",
        )

    return web


async def _forward(request: Request, upstreams: dict[str, Upstream], gate: Gate) -> Response:
    """Find the route, admit the caller, pass the request on and the answer back."""
    path = request.url.path
    if any(segment in (".", "..") for segment in path.split("/")):
        raise NotFound(f"{path} does not exist")
    found = match(request.method, path)
    if found.route is None:
        if found.methods:
            raise MethodNotAllowed(
                f"{request.method} is not allowed on {path}", headers={"Allow": ", ".join(sorted(found.methods))}
            )
        raise NotFound(f"{path} does not exist")
    principal = await gate.admit(request, found.route.allowed, device=found.route.device)
    headers = forwarded_headers(request)
    # Passed on as it came (still percent-encoded): the service decodes it once, as we did.
    raw_path = (request.scope.get("raw_path") or path.encode()).decode("ascii", errors="replace")
    upstream = upstreams[found.route.upstream]
    params = list(request.query_params.multi_items())
    if found.route.stream:
        caller = f"user:{principal.user_id}" if principal else f"ip:{client_ip(request)}"
        return await relay_stream(upstream, raw_path, params, headers, limits=gate.streams, caller=caller)
    answer = await upstream.send(request.method, raw_path, params=params, headers=headers, body=await request.body())
    response = Response(content=answer.body, status_code=answer.status)
    for name, value in answer.headers:  # names in lower case already, as ASGI has them
        if name not in OWN_HEADERS:
            response.raw_headers.append((name.encode("latin-1"), value.encode("latin-1")))
    return response


def _allow_cross_origin(app: FastAPI, own: GatewaySettings) -> None:
    """Browsers on the configured origins may call the API (and read what they need of it)."""
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[o.strip() for o in own.cors_origins.split(",") if o.strip()],
        allow_methods=["GET", "POST", "PUT", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID", "traceparent"],
        expose_headers=["X-Request-ID", "Retry-After", "Location", "Idempotent-Replayed"],
        max_age=600,
    )


def create_app(
    settings: Settings | None = None,
    own: GatewaySettings | None = None,
    *,
    transports: dict[str, httpx.AsyncBaseTransport] | None = None,
) -> FastAPI:
    """The gateway; `transports` replaces the network to some upstreams (tests)."""
    settings = settings or get_settings()
    own = own or GatewaySettings()
    refuse_unsafe_production(NAME, settings, messaging=False, shared_state=True)
    configure_logging(NAME, settings.log_level, settings.log_format)

    upstreams = {
        name: build_upstream(name, urls_for(settings, name), own, (transports or {}).get(name)) for name in UPSTREAMS
    }
    # The payment provider is no upstream of the API: the fault lab's switches reach it.
    provider = build_upstream(
        "provider",
        [own.provider_url or url_for(settings, "provider")],
        own,
        (transports or {}).get("provider"),
    )
    limiter = build_rate_limiter(settings.redis_url, own.rate_limit_window_s, settings.redis_key_prefix)
    gate = Gate(settings, own, limiter)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await web.checked.close()  # a checked load of the fault lab, if one is under way
            for upstream in (*upstreams.values(), provider):
                await upstream.close()
            await limiter.close()

    app = http_app(
        service=NAME,
        settings=settings,
        lifespan=lifespan,
        health_details=lambda: {"upstreams": {name: upstream_health(u) for name, u in upstreams.items()}},
        openapi_url=None,
        description="Gateway: the public API, with authentication, roles, rate limits and circuit breakers.",
    )
    app.state.settings = settings
    app.state.upstreams = upstreams
    _allow_cross_origin(app, own)

    @app.get(
        "/api/v1/me/overview",
        response_model=Overview,
        tags=["me"],
        summary="The caller's account, recent orders, payments and notifications (partial when a service is down)",
    )
    async def me_overview(request: Request) -> Overview:
        await gate.admit(request, SIGNED_IN)
        return await overview(upstreams, forwarded_headers(request))

    app.include_router(ops.build_router(upstreams, gate.admit, forwarded_headers))
    app.include_router(status.build_router(upstreams, gate.admit))
    app.include_router(faults.build_router(provider, upstreams, gate.admit, forwarded_headers))
    app.include_router(invariants.build_router(upstreams, provider, gate.admit, forwarded_headers))

    # Every other API path goes on to its service. Registered after the gateway's own API routes
    # (they win) and before the browsers' (none is under /api/v1/), which the router would
    # otherwise try one by one for every forwarded request.
    @app.api_route("/api/v1/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def forward(request: Request) -> Response:
        return await _forward(request, upstreams, gate)

    document = OpenApiDocument(upstreams, {})

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        if not document.own:
            own = get_openapi(title="gateway", version=app.version, routes=app.routes)
            document.own = add_problem_responses(own)
        return JSONResponse(await document.get())

    web = serve_browsers(app, settings, own)

    pages.serve_not_found(app, web)  # last: it answers every path nothing above took
    return app
