"""The payment provider's HTTP API, behind a timeout and a circuit breaker.

Every call is made for one customer, and says so to the breaker: failures of one customer's
calls alone (a card that never gets an answer) do not open it for everyone (`min_sources`).
Takes an httpx transport so tests can answer, fail or hang in the provider's place.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import orjson

from pizzeria.kit.http_client import HttpAnswer, HttpError, HttpTimeout, http_client
from pizzeria.kit.resilience import CircuitBreaker


class CardDeclined(Exception):
    """The provider declined the card: final."""


class ProviderRejected(Exception):
    """The provider refused the request itself (a 4xx other than a decline): final."""


class ProviderUnavailable(Exception):
    """No answer, a timeout or a 5xx: worth retrying later."""


@dataclass(frozen=True)
class ChargeResult:
    charge_id: str


class ProviderClient:
    """Client of the provider's `/v1/charges` and `/v1/refunds`."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        breaker: CircuitBreaker,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 64,
    ) -> None:
        self.breaker = breaker
        self.client = http_client(base_url, timeout=timeout, max_connections=max_connections, transport=transport)

    async def charge(
        self, *, idempotency_key: str, amount: int, currency: str, source: str, order_id: str, customer: str
    ) -> ChargeResult:
        body = {"amount": amount, "currency": currency, "source": source, "metadata": {"order_id": order_id}}
        data = await self._post("/v1/charges", body, idempotency_key, customer)
        return ChargeResult(charge_id=str(data["id"]))

    async def find_charge(self, idempotency_key: str, *, customer: str) -> ChargeResult | None:
        """The captured charge made with this key, if any (a timed-out call may have gone
        through): asked before voiding a payment that was attempted."""

        async def call() -> HttpAnswer:
            try:
                response = await self.client.request("GET", "/v1/charges", params={"idempotency_key": idempotency_key})
            except HttpError as exc:
                raise ProviderUnavailable(f"cannot reach provider: {exc}") from exc
            if response.status >= 500:
                raise ProviderUnavailable(f"provider answered {response.status}")
            return response

        response = await self.breaker.call(call, is_failure=_unavailable, source=customer)
        for charge in response.json().get("items", []):
            if charge.get("status") == "succeeded":
                return ChargeResult(charge_id=str(charge["id"]))
        return None

    async def refund(self, *, idempotency_key: str, charge_id: str, amount: int, customer: str) -> str:
        data = await self._post("/v1/refunds", {"charge": charge_id, "amount": amount}, idempotency_key, customer)
        return str(data["id"])

    async def _post(self, path: str, body: dict[str, object], idempotency_key: str, customer: str) -> dict[str, object]:
        payload = orjson.dumps(body)
        headers = {"Idempotency-Key": idempotency_key, "Content-Type": "application/json"}

        async def call() -> HttpAnswer:
            try:
                response = await self.client.request("POST", path, headers=headers, body=payload)
            except HttpTimeout as exc:
                raise ProviderUnavailable(f"timeout calling {path}") from exc
            except HttpError as exc:
                raise ProviderUnavailable(f"cannot reach provider: {exc}") from exc
            if response.status >= 500 or response.status in (408, 409, 429):
                raise ProviderUnavailable(f"provider answered {response.status}")
            return response

        response = await self.breaker.call(call, is_failure=_unavailable, source=customer)
        if response.status == 402:
            raise CardDeclined(_message(response))
        if response.status >= 400:
            raise ProviderRejected(f"{response.status}: {_message(response)}")
        data: dict[str, object] = response.json()
        return data

    async def close(self) -> None:
        await self.client.close()


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderUnavailable)


def _message(response: HttpAnswer) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
