"""Orders' own settings: the order saga's deadlines, and how big and how many orders may be."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pizzeria.services.orders.domain import MAX_LINES, MAX_QUANTITY, OrderLimits


class OrdersSettings(BaseSettings):
    """Read from the environment; `.env.example` lists them."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    reserve_timeout_s: float = Field(30.0, alias="SAGA_RESERVE_TIMEOUT_S")
    payment_timeout_s: float = Field(20.0, alias="SAGA_PAYMENT_TIMEOUT_S")
    kitchen_queue_timeout_s: float = Field(1800.0, alias="SAGA_KITCHEN_QUEUE_TIMEOUT_S")
    delivery_resend_s: float = Field(300.0, alias="SAGA_DELIVERY_RESEND_S")
    compensation_timeout_s: float = Field(30.0, alias="SAGA_COMPENSATION_TIMEOUT_S")
    # Pizzas on one line and in one order (422 beyond), and orders of one customer waiting for
    # payment at once (409 beyond): no one customer can reserve the kitchen's stock.
    max_quantity_per_line: int = Field(20, alias="ORDER_MAX_QUANTITY_PER_LINE", ge=1, le=MAX_QUANTITY)
    max_pizzas: int = Field(30, alias="ORDER_MAX_PIZZAS", ge=1, le=MAX_LINES * MAX_QUANTITY)
    max_unpaid: int = Field(3, alias="ORDER_MAX_UNPAID", ge=1)

    def limits(self) -> OrderLimits:
        return OrderLimits(
            max_quantity=self.max_quantity_per_line, max_pizzas=self.max_pizzas, max_unpaid=self.max_unpaid
        )
