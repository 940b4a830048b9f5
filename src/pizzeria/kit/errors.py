"""Errors that carry their HTTP meaning, rendered as RFC 9457 `application/problem+json`.

Handlers raise these; one exception handler per app turns them into responses, so routes never
build error responses by hand. `type` is a stable URI clients can branch on.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "https://pizzeria.example/problems/"
PROBLEM_JSON = "application/problem+json"


class ProblemError(Exception):
    """Base error: a status code, a stable problem type and a human detail."""

    status: int = 400
    type_slug: str = "bad-request"
    title: str = "Bad request"
    #: Headers every error of the class carries; the ones passed in win.
    default_headers: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = {**self.default_headers, **(headers or {})}
        self.extra = extra

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.type_slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


class BadRequest(ProblemError):
    """The request is malformed in a way validation did not catch."""


class ValidationFailed(ProblemError):
    """The request is well-formed but breaks a rule (unknown item, empty order...)."""

    status = 422
    type_slug = "validation-failed"
    title = "Validation failed"


class NotFound(ProblemError):
    """The resource does not exist (or the caller may not know that it does)."""

    status = 404
    type_slug = "not-found"
    title = "Not found"


class Conflict(ProblemError):
    """The request conflicts with the resource's current state."""

    status = 409
    type_slug = "conflict"
    title = "Conflict"


class Unauthorized(ProblemError):
    """No valid credentials were presented."""

    status = 401
    type_slug = "unauthorized"
    title = "Unauthorized"
    # RFC 9110 15.5.2: a 401 must say which authentication scheme would work.
    default_headers = {"WWW-Authenticate": 'Bearer realm="pizzeria"'}


class Forbidden(ProblemError):
    """The caller is known but not allowed."""

    status = 403
    type_slug = "forbidden"
    title = "Forbidden"


class TooManyRequests(ProblemError):
    """The caller must slow down; `Retry-After` says for how long."""

    status = 429
    type_slug = "too-many-requests"
    title = "Too many requests"


class ServiceUnavailable(ProblemError):
    """A dependency is down; retry later."""

    status = 503
    type_slug = "service-unavailable"
    title = "Service unavailable"


#: Marks a 503 that sheds load: the service is alive, at capacity, and refused at once rather
#: than answer late. A gateway neither counts it against the service's breaker nor sends the
#: request again; the value names what is full.
LOAD_SHED_HEADER = "X-Load-Shed"


class Overloaded(ServiceUnavailable):
    """This service is at capacity for the work asked of it (a bounded queue is full): try
    again after `Retry-After`."""

    type_slug = "overloaded"
    title = "Overloaded"

    def __init__(self, detail: str, *, capacity: str, retry_after_s: int = 1, **extra: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s), LOAD_SHED_HEADER: capacity}, **extra)
