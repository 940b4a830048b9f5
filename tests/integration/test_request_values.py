"""Values a service cannot take are a 422 problem naming the field, never a 500: times in the
audit and analytics filters at the ends of the calendar (they overflow once turned into UTC), a
quantity sent as `"2"` or `true`, text with a NUL in it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta, timezone
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.services import embedded_settings, running
from tests.integration.test_service_api import assert_problem
from tests.support.tokens import bearer

#: Offsets up to a minute short of a day, the extremes ISO 8601 allows.
OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
TIMES = st.one_of(
    st.datetimes(timezones=st.one_of(OFFSETS, st.none())).map(lambda t: t.isoformat()),
    st.sampled_from(["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59", "1969-12-31"]),
)


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = embedded_settings(tmp_path)
    async with running("audit", settings, headers=bearer("admin-1", "admin", settings=settings)) as (_, client):
        yield client


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/api/v1/ops/audit", "/api/v1/ops/analytics"]), since=TIMES, until=TIMES)
async def test_any_time_in_a_filter_is_answered_or_refused_never_a_500(
    audit: httpx.AsyncClient, path: str, since: str, until: str
) -> None:
    response = await audit.get(path, params={"since": since, "until": until})
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code != 200:
        assert_problem(response, response.status_code)


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "1969-12-31T23:59:59Z"])
async def test_a_time_past_the_span_is_a_422_naming_the_filter(audit: httpx.AsyncClient, when: str) -> None:
    for path in ("/api/v1/ops/audit", "/api/v1/ops/analytics"):
        body = assert_problem(await audit.get(path, params={"until": when}), 422, "validation-failed")
        assert body["errors"][0]["field"] == "query.until"


@pytest.fixture
async def orders(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = embedded_settings(tmp_path)
    async with running("orders", settings, headers=bearer("cust-1", "customer", settings=settings)) as (_, client):
        yield client


def order(quantity: object = 2, address: str = "1 Main St") -> dict[str, object]:
    return {
        "items": [{"menu_item_id": str(uuid4()), "size": "medium", "quantity": quantity}],
        "delivery_address": address,
        "payment": {"token": "tok_visa"},
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (order(quantity="2"), "items.0.quantity"),
        (order(quantity=True), "items.0.quantity"),
        (order(quantity=2.0), "items.0.quantity"),
        (order(address="1 Main\x00St"), "delivery_address"),
    ],
)
async def test_an_order_with_a_coerced_number_or_a_nul_is_a_422(
    orders: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await orders.post("/api/v1/orders", json=body, headers={"Idempotency-Key": str(uuid4())})
    problem = assert_problem(response, 422, "validation-failed")
    assert field in [e["field"] for e in problem["errors"]], problem
