"""The simulated payment provider tells how many charges it is answering (`GET /v1/admin/state`),
which the chaos campaign waits for before it stops payments with charges under way."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from pizzeria.simulators.payment_provider import Ledger, ProviderSettings, build_router
from tests.support.polling import eventually


async def test_a_charge_is_in_flight_from_when_it_is_taken_until_it_is_answered() -> None:
    app = FastAPI()
    app.include_router(build_router(Ledger(ProviderSettings(PAYMENT_LATENCY_MS=400))))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://provider") as client:

        async def in_flight() -> int:
            return int((await client.get("/v1/admin/state")).json()["charges_in_flight"])

        assert await in_flight() == 0
        charge = asyncio.create_task(
            client.post(
                "/v1/charges",
                json={"amount": 1000, "currency": "EUR", "source": "tok_visa"},
                headers={"Idempotency-Key": "k1"},
            )
        )

        async def one_in_flight() -> bool:
            return await in_flight() == 1

        await eventually(one_in_flight, "the charge was never in flight", 10, every=0.01)
        assert (await charge).status_code == 201
        assert await in_flight() == 0
        refused = await client.post(  # the same key with another body: refused, never in flight
            "/v1/charges",
            json={"amount": 2000, "currency": "EUR", "source": "tok_visa"},
            headers={"Idempotency-Key": "k1"},
        )
        assert refused.status_code == 409
        assert await in_flight() == 0
