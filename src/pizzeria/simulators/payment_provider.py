"""A simulated card payment provider, run as its own process like the real one would be.

It behaves the way a real provider does where it matters to us: it answers after a latency
(`PAYMENT_LATENCY_MS`, `PUT /v1/admin/latency`), declines a share of ordinary cards at random
(`PAYMENT_FAILURE_RATE`, `PUT /v1/admin/failure-rate`), can be switched off
(`PUT /v1/admin/outage`; `GET /v1/admin/state` tells how it is set, and how many charges it is
answering), and honours idempotency keys: the same key gives the same answer and never a second
charge. Test cards: `tok_visa` always succeeds, `tok_declined` always declines, `tok_timeout`
never answers. Its ledger lives in memory.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pizzeria.kit.clock import utcnow
from pizzeria.kit.http import http_app
from pizzeria.kit.ids import new_id
from pizzeria.kit.logging import configure_logging
from pizzeria.kit.opsaccess import require_ops_caller
from pizzeria.kit.schemas import RequestBody
from pizzeria.kit.settings import Settings, get_settings

DETERMINISTIC = {"tok_visa", "tok_declined", "tok_timeout"}


class ChargeBody(RequestBody):
    model_config = ConfigDict(extra="ignore")  # as a real provider's API: unknown fields pass

    amount: int = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    source: str = Field(min_length=1, max_length=64)
    metadata: dict[str, str] = Field(default_factory=dict)


class RefundBody(RequestBody):
    model_config = ConfigDict(extra="ignore")  # as a real provider's API: unknown fields pass

    charge: str
    amount: int = Field(gt=0)


class ProviderSettings(BaseSettings):
    """How the simulated provider behaves (read from the environment)."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    latency_ms: int = Field(20, alias="PAYMENT_LATENCY_MS")
    failure_rate: float = Field(0.0, alias="PAYMENT_FAILURE_RATE", ge=0, le=1)


class OutageBody(RequestBody):
    model_config = ConfigDict(extra="ignore")  # as a real provider's API: unknown fields pass

    down: bool


class FailureRateBody(RequestBody):
    model_config = ConfigDict(extra="ignore")  # as a real provider's API: unknown fields pass

    rate: float = Field(ge=0, le=1)


class LatencyBody(RequestBody):
    ms: int = Field(ge=0, le=60_000, description="typical answer time; each answer takes 0.5 to 1.5 times it")


@dataclass
class Charge:
    id: str
    idempotency_key: str
    amount: int
    currency: str
    source: str
    status: str  # succeeded | declined
    order_id: str | None
    created_at: str
    refunded: int = 0


class Ledger:
    """Charges and refunds by idempotency key."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.latency = settings.latency_ms / 1000
        self.failure_rate = settings.failure_rate
        self.down = False
        self.in_flight = 0  # charges taken and not answered yet
        self.charges: dict[str, Charge] = {}
        self.by_key: dict[str, Charge] = {}  # idempotency key → the charge it made
        self.requests: dict[str, str] = {}  # idempotency key → body fingerprint
        self.refunds: dict[str, dict[str, Any]] = {}
        self.rng = random.Random()

    async def wait(self) -> None:
        if self.latency > 0:
            await asyncio.sleep(self.latency * (0.5 + self.rng.random()))


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _charge(ledger: Ledger, body: ChargeBody, key: str, fingerprint: str) -> Any:
    """A charge taken: answered after the provider's latency, made once per idempotency key."""
    if body.source == "tok_timeout":
        await asyncio.sleep(3600)  # never answers in any useful time
    await ledger.wait()
    existing = ledger.by_key.get(key)
    if existing is None:
        declined = body.source == "tok_declined" or (
            body.source not in DETERMINISTIC and ledger.rng.random() < ledger.failure_rate
        )
        existing = Charge(
            id=f"ch_{new_id().replace('-', '')}",
            idempotency_key=key,
            amount=body.amount,
            currency=body.currency,
            source=body.source,
            status="declined" if declined else "succeeded",
            order_id=body.metadata.get("order_id"),
            created_at=utcnow().isoformat(),
        )
        ledger.charges[existing.id] = existing
        ledger.by_key[key] = existing
        ledger.requests[key] = fingerprint
    if existing.status == "declined":
        return _error(402, "card_declined", "the card was declined")
    return JSONResponse(asdict(existing), status_code=201)


def build_router(ledger: Ledger) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["provider"])

    @router.post("/charges")
    async def charge(body: ChargeBody, key: Annotated[str, Header(alias="Idempotency-Key", min_length=1)]) -> Any:
        if ledger.down:
            return _error(503, "unavailable", "provider outage")
        fingerprint = body.model_dump_json()
        if key in ledger.requests and ledger.requests[key] != fingerprint:
            return _error(409, "idempotency_mismatch", "key reused with different parameters")
        ledger.in_flight += 1
        try:
            return await _charge(ledger, body, key, fingerprint)
        finally:
            ledger.in_flight -= 1

    @router.post("/refunds")
    async def refund(body: RefundBody, key: Annotated[str, Header(alias="Idempotency-Key", min_length=1)]) -> Any:
        if ledger.down:
            return _error(503, "unavailable", "provider outage")
        await ledger.wait()
        if key in ledger.refunds:
            return JSONResponse(ledger.refunds[key], status_code=201)
        charge = ledger.charges.get(body.charge)
        if charge is None or charge.status != "succeeded":
            return _error(404, "no_such_charge", "no captured charge with that id")
        if charge.refunded + body.amount > charge.amount:
            return _error(422, "amount_too_large", "refund exceeds the captured amount")
        charge.refunded += body.amount
        ledger.refunds[key] = {
            "id": f"re_{new_id().replace('-', '')}",
            "charge": charge.id,
            "amount": body.amount,
            "status": "succeeded",
        }
        return JSONResponse(ledger.refunds[key], status_code=201)

    @router.get("/charges")
    async def list_charges(
        order_id: Annotated[str | None, Query()] = None,
        idempotency_key: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        if idempotency_key is not None:  # by its key: no scan of every charge so far
            candidates = [c] if (c := ledger.by_key.get(idempotency_key)) is not None else []
        else:
            candidates = list(ledger.charges.values())
        found = [asdict(c) for c in candidates if order_id is None or c.order_id == order_id]
        return {"items": found}

    @router.get("/refunds")
    async def list_refunds() -> dict[str, Any]:
        return {"items": list(ledger.refunds.values())}

    @router.put("/admin/outage", dependencies=[Depends(require_ops_caller)])
    async def outage(body: OutageBody) -> dict[str, bool]:
        ledger.down = body.down
        return {"down": ledger.down}

    @router.put("/admin/failure-rate", dependencies=[Depends(require_ops_caller)])
    async def failure_rate(body: FailureRateBody) -> dict[str, float]:
        ledger.failure_rate = body.rate
        return {"rate": ledger.failure_rate}

    @router.put("/admin/latency")
    async def latency(body: LatencyBody) -> dict[str, int]:
        ledger.latency = body.ms / 1000
        return {"ms": body.ms}

    @router.get("/admin/state")
    async def state() -> dict[str, Any]:
        """How the provider behaves now (what the switches above have set)."""
        return {
            "down": ledger.down,
            "failure_rate": ledger.failure_rate,
            "latency_ms": round(ledger.latency * 1000),
            "charges_in_flight": ledger.in_flight,
        }

    return router


def create_app(settings: Settings | None = None, own: ProviderSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    exposed = settings.exposure_problems()  # its admin API trusts administrators' tokens
    if exposed:
        raise SystemExit("refusing to start provider: " + "; ".join(exposed))
    configure_logging("provider", settings.log_level, settings.log_format)
    ledger = Ledger(own or ProviderSettings())
    app = http_app(
        service="provider",
        routers=[build_router(ledger)],
        settings=settings,
        description="Simulated card payment provider (test double of an external API).",
    )
    app.state.ledger = ledger
    return app
