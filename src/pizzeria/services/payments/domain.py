"""A payment and its rules. No I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from pizzeria.kit.errors import Conflict


class Status(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    REFUNDED = "refunded"


OPEN = frozenset({Status.PENDING, Status.PROCESSING})


@dataclass
class Payment:
    """The charge of one order. The payment id is the provider's idempotency key, so however
    often the charge is retried, the card is charged at most once."""

    id: UUID
    order_id: UUID
    customer_id: str
    amount: int
    currency: str
    token: str
    status: Status
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    updated_at: datetime
    provider_charge_id: str | None = None
    failure_reason: str | None = None
    #: The order saga asked for the money back while the charge was still open: void it, or
    #: refund it the moment it completes.
    cancel_requested: bool = False
    #: A completed charge waits to be refunded.
    refund_requested: bool = False
    provider_refund_id: str | None = None
    #: The trace the charge continues (the command's), so its outcome joins the order's trace.
    traceparent: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    @property
    def needs_refund(self) -> bool:
        return self.status is Status.COMPLETED and self.refund_requested

    def request_money_back(self, *, at: datetime) -> str:
        """Compensation: what to do about this payment. Returns `refund` (a completed charge:
        the worker refunds it), `void` (open: stop charging, and refund if it still
        completes), `voided` (failed already: nothing taken) or `refunded` (done before)."""
        self.updated_at = at
        if self.status is Status.REFUNDED:
            return "refunded"
        if self.status is Status.FAILED:
            return "voided"
        if self.status is Status.COMPLETED:
            self.refund_requested = True
            self.next_attempt_at = at
            return "refund"
        self.cancel_requested = True
        self.next_attempt_at = at
        return "void"

    def void(self, *, at: datetime) -> None:
        """Stopped before the provider took anything: it never will now."""
        self._require_open()
        self.status, self.failure_reason, self.updated_at = Status.FAILED, "cancelled", at

    def refunded(self, refund_id: str, *, at: datetime) -> None:
        if not self.needs_refund:
            raise Conflict(f"payment {self.id} has no refund waiting")
        self.status, self.provider_refund_id, self.refund_requested, self.updated_at = (
            Status.REFUNDED,
            refund_id,
            False,
            at,
        )

    def retry_refund_later(self, *, at: datetime, backoff: timedelta) -> None:
        self.next_attempt_at, self.updated_at = at + backoff, at

    def complete(self, charge_id: str, *, at: datetime) -> None:
        self._require_open()
        self.status, self.provider_charge_id, self.updated_at = Status.COMPLETED, charge_id, at
        if self.cancel_requested:  # the saga gave up on it meanwhile: give the money back
            self.refund_requested, self.next_attempt_at = True, at

    def fail(self, reason: str, *, at: datetime) -> None:
        self._require_open()
        self.status, self.failure_reason, self.updated_at = Status.FAILED, reason, at

    def retry_later(self, *, at: datetime, backoff: timedelta) -> None:
        self._require_open()
        self.status, self.next_attempt_at, self.updated_at = Status.PROCESSING, at + backoff, at

    def _require_open(self) -> None:
        if not self.is_open:
            raise Conflict(f"payment {self.id} is already {self.status}")


def backoff_for(attempt: int, *, initial: float = 0.5, maximum: float = 30.0) -> timedelta:
    """Wait before retrying the provider after `attempt` failed calls."""
    return timedelta(seconds=min(maximum, initial * 2 ** max(0, attempt - 1)))
