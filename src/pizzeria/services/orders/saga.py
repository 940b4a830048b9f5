"""The order saga, orchestrated by orders: reserve → charge → kitchen queue (the point of no
return once cooking starts) → cook → deliver. Any failure before cooking compensates what was
done, in reverse order; after it, the order only moves forward."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from pydantic import BaseModel

from pizzeria.contracts.delivery import DeliveryCompleted, ScheduleDelivery
from pizzeria.contracts.kitchen import (
    CancelTicket,
    IngredientsReleased,
    IngredientsReserved,
    IngredientsUnavailable,
    KitchenLine,
    QueueTicket,
    ReleaseIngredients,
    ReserveIngredients,
    TicketCancelled,
    TicketCancelRefused,
    TicketReady,
    TicketStarted,
)
from pizzeria.contracts.orders import OrderStatus
from pizzeria.contracts.payments import (
    ChargePayment,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    PaymentVoided,
    RefundPayment,
)
from pizzeria.messaging.saga import SagaDefinition, Step
from pizzeria.services.orders.settings import OrdersSettings


class OrderSagaData(BaseModel):
    """What the order saga's commands are built from (stored with the saga)."""

    order_id: UUID
    customer_id: str
    amount: int
    currency: str
    token: str
    address: str
    lines: list[KitchenLine]


def place_order_saga(settings: OrdersSettings) -> SagaDefinition[OrderSagaData]:
    """The saga every order runs, with the deadlines the settings give."""
    return SagaDefinition(
        name="place_order",
        data_type=OrderSagaData,
        steps=(
            Step(
                "reserve",
                command=lambda d: ReserveIngredients(order_id=d.order_id, lines=d.lines),
                success=(IngredientsReserved,),
                failure=(IngredientsUnavailable,),
                compensation=lambda d: ReleaseIngredients(order_id=d.order_id),
                compensated_by=(IngredientsReleased,),
                timeout=timedelta(seconds=settings.reserve_timeout_s),
            ),
            Step(
                "charge",
                command=lambda d: ChargePayment(
                    order_id=d.order_id, customer_id=d.customer_id, amount=d.amount, currency=d.currency, token=d.token
                ),
                success=(PaymentCompleted,),
                failure=(PaymentFailed,),
                compensation=lambda d: RefundPayment(order_id=d.order_id, reason="order cancelled"),
                compensated_by=(PaymentRefunded, PaymentVoided),
                timeout=timedelta(seconds=settings.payment_timeout_s),
            ),
            Step(
                "queue",
                command=lambda d: QueueTicket(order_id=d.order_id, lines=d.lines),
                success=(TicketStarted,),
                compensation=lambda d: CancelTicket(order_id=d.order_id),
                compensated_by=(TicketCancelled,),
                refused_by=(TicketCancelRefused,),
                timeout=timedelta(seconds=settings.kitchen_queue_timeout_s),
                pivot=True,
            ),
            Step("cook", success=(TicketReady,)),
            Step(
                "deliver",
                command=lambda d: ScheduleDelivery(order_id=d.order_id, customer_id=d.customer_id, address=d.address),
                success=(DeliveryCompleted,),
                resend_after=timedelta(seconds=settings.delivery_resend_s),
            ),
        ),
        reasons={IngredientsUnavailable: "out_of_stock", PaymentFailed: "payment_failed"},
        compensation_timeout=timedelta(seconds=settings.compensation_timeout_s),
    )


#: Order status reached when a step succeeds.
STATUS_AFTER_STEP = {
    "charge": OrderStatus.PAID,
    "queue": OrderStatus.PREPARING,
    "cook": OrderStatus.READY,
    "deliver": OrderStatus.DELIVERED,
}
