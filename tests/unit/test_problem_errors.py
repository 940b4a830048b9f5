"""Errors render as RFC 9457 problem documents with a stable type per error class."""

from __future__ import annotations

import pytest

from pizzeria.kit.errors import (
    PROBLEM_BASE,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ProblemError,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
)


def test_minimal_problem_has_type_title_status_and_detail() -> None:
    assert NotFound("no order 42").to_problem() == {
        "type": "https://pizzeria.example/problems/not-found",
        "title": "Not found",
        "status": 404,
        "detail": "no order 42",
    }


def test_instance_errors_and_extra_members_are_included() -> None:
    errors = [{"field": "items.0.size", "message": "no such size"}]
    problem = ValidationFailed("bad order", errors=errors, order_id="o-1").to_problem("/api/v1/orders")
    assert problem == {
        "type": PROBLEM_BASE + "validation-failed",
        "title": "Validation failed",
        "status": 422,
        "detail": "bad order",
        "instance": "/api/v1/orders",
        "errors": errors,
        "order_id": "o-1",
    }


def test_empty_errors_are_left_out() -> None:
    assert "errors" not in Conflict("busy", errors=[]).to_problem()


def test_headers_travel_with_the_error_but_not_in_the_body() -> None:
    exc = ServiceUnavailable("down", headers={"Retry-After": "5"})
    assert exc.headers == {"Retry-After": "5"}
    assert "Retry-After" not in exc.to_problem()
    assert str(exc) == "down"


def test_a_401_always_names_the_scheme_that_would_work() -> None:
    assert Unauthorized("who are you?").headers["WWW-Authenticate"].startswith("Bearer")
    overridden = Unauthorized("x", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    assert overridden.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert Conflict("x").headers == {}, "other errors carry no headers of their own"


@pytest.mark.parametrize(
    ("cls", "status", "slug"),
    [
        (BadRequest, 400, "bad-request"),
        (Unauthorized, 401, "unauthorized"),
        (Forbidden, 403, "forbidden"),
        (NotFound, 404, "not-found"),
        (Conflict, 409, "conflict"),
        (ValidationFailed, 422, "validation-failed"),
        (TooManyRequests, 429, "too-many-requests"),
        (ServiceUnavailable, 503, "service-unavailable"),
    ],
)
def test_each_error_class_has_its_status_and_stable_type(cls: type[ProblemError], status: int, slug: str) -> None:
    problem = cls("x").to_problem()
    assert (problem["status"], problem["type"]) == (status, PROBLEM_BASE + slug)
    assert issubclass(cls, ProblemError)
