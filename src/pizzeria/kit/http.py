"""The HTTP app every process uses: `/health`, `/ready`, `/metrics`, request ids,
`application/problem+json` errors, access metrics and structured logs, the same everywhere."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pizzeria.kit import context, tracing
from pizzeria.kit.db import is_transient_error
from pizzeria.kit.edge import REQUEST_ID, EdgeLimits, EdgeMiddleware
from pizzeria.kit.errors import PROBLEM_BASE, PROBLEM_JSON, ProblemError
from pizzeria.kit.ids import new_id
from pizzeria.kit.logging import get_logger
from pizzeria.kit.metrics import http_request_duration
from pizzeria.kit.opsaccess import is_ops_caller, require_ops_caller
from pizzeria.kit.settings import Settings

log = get_logger(__name__)

ReadyCheck = Callable[[], Awaitable[Any]]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


def problem(status: int, slug: str, title: str, detail: str, **extra: Any) -> ProblemResponse:
    body = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail, **extra}
    return ProblemResponse(body, status_code=status)


#: Probes and scrapes: answered, measured, but not traced.
UNTRACED = frozenset({"/health", "/ready", "/metrics"})


#: The request-duration series by method, route template and status, looked up once each (a
#: lookup by labels costs more than the observation); as many as the histogram's own.
_request_series: dict[tuple[str, str, int], Any] = {}


class RequestContextMiddleware:
    """Request id in and out (`X-Request-ID`), correlation id and traceparent bound for logs and
    outgoing messages, and the request-duration histogram by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Latin-1 never fails; what is not valid text is refused inside (EdgeMiddleware), and
        # ids that are not acceptable are replaced here so the refusal can still be named.
        headers = {k.decode("latin-1").lower(): v.decode("latin-1").strip(" \t") for k, v in scope["headers"]}
        request_id = _acceptable_id(headers.get("x-request-id")) or new_id()
        traceparent = headers.get("traceparent")
        traceparent = traceparent if traceparent and tracing.TRACEPARENT.match(traceparent) else None
        tokens = (
            context.correlation_id.set(_acceptable_id(headers.get("x-correlation-id")) or request_id),
            context.causation_id.set(None),
            context.traceparent.set(traceparent),
            context.request_id.set(request_id),
        )
        status = 500
        started = time.perf_counter()
        path = scope.get("path", "")
        # A server span per request (not for probes and scrapes), the child of the caller's.
        traced = (
            tracing.span(
                f"{scope['method']} {path}",
                kind=SpanKind.SERVER,
                parent=traceparent or "",
                attributes={"http.request.method": scope["method"], "url.path": path}
                if tracing.may_record(traceparent)
                else None,
            )
            if path not in UNTRACED
            else contextlib.nullcontext(None)
        )

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            with traced as current:
                try:
                    await self.app(scope, receive, send_with_id)
                finally:
                    if current is not None and current.is_recording():
                        route = getattr(scope.get("route"), "path", None)
                        current.update_name(f"{scope['method']} {route or path}")
                        current.set_attribute("http.route", route or "unmatched")
                        current.set_attribute("http.response.status_code", status)
                        if status >= 500:
                            current.set_status(StatusCode.ERROR)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            key = (scope["method"], template, status)
            series = _request_series.get(key)
            if series is None:
                series = _request_series[key] = http_request_duration.labels(scope["method"], template, str(status))
            series.observe(time.perf_counter() - started)
            context.correlation_id.reset(tokens[0])
            context.causation_id.reset(tokens[1])
            context.traceparent.reset(tokens[2])
            context.request_id.reset(tokens[3])


def _acceptable_id(value: str | None) -> str | None:
    return value if value and REQUEST_ID.match(value) else None


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        errors.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid"), "type": err.get("type")})
    return errors


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as `application/problem+json`; unexpected ones as a logged 500."""

    @app.exception_handler(ProblemError)
    async def on_problem(request: Request, exc: ProblemError) -> Response:
        return ProblemResponse(exc.to_problem(str(request.url.path)), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        errors = _field_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem(
            422,
            "validation-failed",
            "Validation failed",
            detail or "invalid request",
            errors=errors,
            instance=str(request.url.path),
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        slug = {
            404: "not-found",
            405: "method-not-allowed",
            401: "unauthorized",
            403: "forbidden",
            413: "payload-too-large",
        }.get(exc.status_code, "http-error")
        return problem(
            exc.status_code,
            slug,
            {404: "Not found", 413: "Payload too large"}.get(exc.status_code, str(exc.detail)),
            str(exc.detail),
            instance=str(request.url.path),
        )

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        if is_transient_error(exc):
            log.warning("dependency unavailable", path=str(request.url.path), error=str(exc))
            return problem(
                503,
                "service-unavailable",
                "Service unavailable",
                "a dependency is briefly unavailable; retry shortly",
                instance=str(request.url.path),
            )
        log.exception("unhandled error", path=str(request.url.path))
        return problem(
            500,
            "internal-error",
            "Internal error",
            "an unexpected error occurred; it was logged",
            instance=str(request.url.path),
        )


#: RFC 9457 problem details, as every error of every service is answered.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "a stable URI naming the kind of problem"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what went wrong, for a human"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}, "description": "field errors"},
    },
}
_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


Body = TypeVar("Body", bound=BaseModel)
SCHEMAS = "#/components/schemas/"


class JsonBody(Generic[Body]):
    """A dependency: the request's JSON body validated by pydantic straight from its bytes (one
    pass of its compiled parser, instead of FastAPI's `json.loads` and a second pass over the
    Python objects it built). For bodies of hundreds of items on a hot path (a device's batch
    of readings); elsewhere FastAPI's own body parameters read better. A bad body is the same
    422 as FastAPI's own; the route documents the body with `openapi_extra=body.openapi`, and
    `http_app` adds the model's schemas to the document."""

    #: Each body by the reference the documents make to its schema.
    documented: dict[str, JsonBody[Any]] = {}

    def __init__(self, model: type[Body]) -> None:
        self.model = model
        self.ref = f"{SCHEMAS}{model.__name__}"
        JsonBody.documented[self.ref] = self

    async def __call__(self, request: Request) -> Body:
        media = request.headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
        if not (media == "application/json" or (media.startswith("application/") and media.endswith("+json"))):
            raise RequestValidationError(
                [{"loc": ("body",), "msg": "must be JSON (Content-Type: application/json)", "type": "content_type"}]
            )
        try:
            body = await request.body()
        except ClientDisconnect:  # gone before its body came: nobody to answer
            raise StarletteHTTPException(400, "the client went away before its body came") from None
        try:
            return self.model.model_validate_json(body)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None

    @property
    def openapi(self) -> dict[str, Any]:
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": self.ref}}}}}


def add_json_body_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """The schemas of the bodies `JsonBody` reads (FastAPI does not see them as bodies): those
    the document's operations refer to."""
    wanted = {
        body.model
        for path_item in schema.get("paths", {}).values()
        for operation in path_item.values()
        for media in operation.get("requestBody", {}).get("content", {}).values()
        if (body := JsonBody.documented.get(media.get("schema", {}).get("$ref", ""))) is not None
    }
    if wanted:
        _, found = models_json_schema(
            [(model, "validation") for model in sorted(wanted, key=lambda m: m.__name__)],
            ref_template=f"{SCHEMAS}{{model}}",
        )
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in found.get("$defs", {}).items():
            schemas.setdefault(name, definition)
    return schema


def add_problem_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Document errors as they are answered: every 4xx/5xx is `application/problem+json`, and
    every operation may answer one (FastAPI's own 422 shape is never sent)."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for code, response in responses.items():
                if code[:1] in ("4", "5"):
                    response["content"] = dict(_PROBLEM_CONTENT)
            responses.setdefault(
                "default", {"description": "An error, as RFC 9457 problem details", "content": dict(_PROBLEM_CONTENT)}
            )
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return schema


def edge_limits(settings: Settings | None) -> EdgeLimits:
    """The request size limits of the settings (the defaults without them)."""
    if settings is None:
        return EdgeLimits()
    return EdgeLimits(
        max_body_bytes=settings.max_request_body_bytes, max_header_bytes=settings.max_request_header_bytes
    )


def http_app(
    *,
    service: str,
    routers: Sequence[APIRouter] = (),
    lifespan: Lifespan | None = None,
    ready_checks: dict[str, ReadyCheck] | None = None,
    version: str = "1.0.0",
    description: str = "",
    health_details: Callable[[], dict[str, Any]] | None = None,
    openapi_url: str | None = "/openapi.json",
    settings: Settings | None = None,
) -> FastAPI:
    """A service app with the common endpoints, middleware and error handling (and traces,
    when given the settings that say where they go)."""
    started_at = time.time()
    checks = dict(ready_checks or {})
    if settings is not None:
        tracing.configure_tracing(service, settings)

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        try:
            if lifespan is None:
                yield
                return
            async with lifespan(app):
                yield
        finally:
            tracing.shutdown_tracing()

    app = FastAPI(
        title=f"pizzeria {service}",
        version=version,
        description=description,
        lifespan=run,
        openapi_url=openapi_url,
        # The spans and metrics are this system's own (RequestContextMiddleware, /metrics):
        # FastAPI's native OpenTelemetry stays off, which also spares each request its check of
        # the global providers (6 µs).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.ready_checks = checks
    app.state.ops_settings = settings
    # Added first, so it runs inside the request context: a refused request is still measured and
    # answered with its request id.
    app.add_middleware(EdgeMiddleware, limits=edge_limits(settings))
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app)

    @app.get("/health", tags=["ops"], summary="Liveness (details for operators only)")
    async def health(request: Request) -> dict[str, Any]:
        if not is_ops_caller(request):
            return {"status": "ok", "service": service}
        return {
            "status": "ok",
            "service": service,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - started_at, 1),
            **(health_details() if health_details else {}),
        }

    @app.get("/ready", tags=["ops"], summary="Readiness: dependencies reachable, workers running")
    async def ready(request: Request) -> Response:
        results: dict[str, str] = {}
        ok = True
        for name, check in app.state.ready_checks.items():
            try:
                outcome = await check()
                if outcome is False:
                    raise RuntimeError("not ready")
                results[name] = "ok"
            except Exception as exc:
                ok = False
                results[name] = f"failing: {exc}"
        operator = is_ops_caller(request)
        if not operator:  # what failed and why is for operators
            results = {name: "ok" if outcome == "ok" else "failing" for name, outcome in results.items()}
        if ok:
            # The pid tells the supervisor that the process it started answered, not whatever
            # else listens on the port.
            who = {"pid": os.getpid()} if operator else {}
            return JSONResponse({"status": "ready", "service": service, **who, "checks": results})
        return problem(503, "not-ready", "Not ready", "a dependency is not ready", service=service, checks=results)

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        include_in_schema=False,
        dependencies=[Depends(require_ops_caller)],
    )
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_problem_responses(add_json_body_schemas(generate()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
