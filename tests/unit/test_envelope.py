"""The CloudEvents envelope: wrapping contract messages, `ce_*` headers and their round trip."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pizzeria.contracts.orders import Contact, OrderLine, OrderPlaced, PaymentMethod
from pizzeria.contracts.payments import PaymentFailed
from pizzeria.kit import context
from pizzeria.messaging.broker import Record
from pizzeria.messaging.envelope import _LIMITS, CONTENT_TYPE, Envelope, MalformedMessage

ORDER_ID = UUID("0190a5c4-7e2b-7c3d-8f1e-2a3b4c5d6e7f")
AT = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
SOURCE = "/pizzeria/orders"


def order_placed() -> OrderPlaced:
    return OrderPlaced(
        order_id=ORDER_ID,
        customer_id="cust-1",
        items=[
            OrderLine(
                menu_item_id=UUID(int=1),
                name="Margherita",
                size="large",
                quantity=2,
                unit_price=1200,
            )
        ],
        total=2400,
        currency="EUR",
        payment_method=PaymentMethod(token="tok_visa"),
        delivery_address="1 Main St",
        contact=Contact(email="ann@example.com"),
        placed_at=AT,
    )


@contextmanager
def handling(correlation: str, causation: str, trace: str | None = None) -> Iterator[None]:
    """As if a message with these ids were being handled."""
    tokens = [
        context.correlation_id.set(correlation),
        context.causation_id.set(causation),
        context.traceparent.set(trace),
    ]
    try:
        yield
    finally:
        for var, token in zip((context.correlation_id, context.causation_id, context.traceparent), tokens, strict=True):
            var.reset(token)  # type: ignore[arg-type]


def valid_headers() -> dict[str, str]:
    return Envelope.wrap(order_placed(), source=SOURCE).headers()


def test_wrap_names_the_type_key_and_data_of_the_message() -> None:
    message = order_placed()
    env = Envelope.wrap(message, source=SOURCE)
    assert env.type == "pizzeria.orders.OrderPlaced.v1"
    assert env.source == SOURCE
    assert env.subject == str(ORDER_ID)
    assert env.specversion == "1.0"
    assert OrderPlaced.model_validate_json(env.data) == message
    assert UUID(env.id).version == 7
    assert env.time.tzinfo is not None
    assert abs(datetime.now(UTC) - env.time) < timedelta(seconds=5)


def test_a_new_conversation_is_correlated_by_its_own_id() -> None:
    env = Envelope.wrap(order_placed(), source=SOURCE)
    assert env.correlationid == env.id
    assert env.causationid is None
    assert env.traceparent is None


def test_wrap_inherits_correlation_and_causation_from_the_context() -> None:
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with handling("corr-1", "cause-1", trace):
        env = Envelope.wrap(order_placed(), source=SOURCE)
    assert (env.correlationid, env.causationid, env.traceparent) == ("corr-1", "cause-1", trace)
    assert env.id not in {"corr-1", "cause-1"}


def test_headers_are_cloudevents_binary_mode() -> None:
    with handling("corr-1", "cause-1"):
        env = Envelope.wrap(order_placed(), source=SOURCE)
    assert env.headers() == {
        "ce_id": env.id,
        "ce_source": SOURCE,
        "ce_type": "pizzeria.orders.OrderPlaced.v1",
        "ce_specversion": "1.0",
        "ce_time": env.time.isoformat(),
        "ce_subject": str(ORDER_ID),
        "ce_correlationid": "corr-1",
        "ce_causationid": "cause-1",
        "content-type": CONTENT_TYPE,
    }


def test_absent_optional_attributes_are_left_out_of_the_headers() -> None:
    headers = Envelope(id="1", source="s", type="t", data=b"{}").headers()
    assert set(headers) == {
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_specversion",
        "ce_time",
        "content-type",
    }
    assert all(isinstance(v, str) for v in headers.values())


def test_headers_round_trip_through_from_headers() -> None:
    with handling("corr-9", "cause-9", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"):
        env = Envelope.wrap(order_placed(), source=SOURCE)
    assert Envelope.from_headers(env.headers(), env.data) == env


def test_to_outgoing_keys_the_record_by_subject() -> None:
    env = Envelope.wrap(order_placed(), source=SOURCE)
    out = env.to_outgoing("orders.events")
    assert (out.topic, out.key, out.value) == ("orders.events", str(ORDER_ID), env.data)
    assert out.headers == env.headers()


def test_from_record_reads_headers_and_value() -> None:
    env = Envelope.wrap(
        PaymentFailed.model_validate(
            {
                "payment_id": UUID(int=5),
                "order_id": ORDER_ID,
                "amount": 100,
                "currency": "EUR",
                "reason": "card_declined",
                "at": AT,
            }
        ),
        source="/pizzeria/payments",
    )
    record = Record(
        topic="payments.events",
        partition=1,
        offset=7,
        value=env.data,
        key=env.subject,
        headers=env.headers(),
        timestamp_ms=0,
    )
    decoded = Envelope.from_record(record)
    assert decoded == env
    assert json.loads(decoded.data)["reason"] == "card_declined"


@pytest.mark.parametrize("attribute", ["id", "source", "type", "specversion"])
@pytest.mark.parametrize("blank", [True, False])
def test_missing_required_attribute_is_malformed(attribute: str, blank: bool) -> None:
    headers = valid_headers()
    if blank:
        headers[f"ce_{attribute}"] = ""
    else:
        del headers[f"ce_{attribute}"]
    with pytest.raises(MalformedMessage, match=f"ce_{attribute}"):
        Envelope.from_headers(headers, b"{}")


def test_plain_records_are_not_cloudevents() -> None:
    with pytest.raises(MalformedMessage, match="not a CloudEvent"):
        Envelope.from_headers({"content-type": "application/json"}, b'{"hello": 1}')


def test_other_specversions_are_malformed() -> None:
    headers = {**valid_headers(), "ce_specversion": "0.3"}
    with pytest.raises(MalformedMessage, match="specversion"):
        Envelope.from_headers(headers, b"{}")


def test_an_unreadable_time_is_malformed() -> None:
    headers = {**valid_headers(), "ce_time": "yesterday-ish"}
    with pytest.raises(MalformedMessage, match="ce_time"):
        Envelope.from_headers(headers, b"{}")


def test_a_missing_time_means_now() -> None:
    headers = valid_headers()
    del headers["ce_time"]
    env = Envelope.from_headers(headers, b"{}")
    assert abs(datetime.now(UTC) - env.time) < timedelta(seconds=5)


def test_malformed_message_is_a_value_error() -> None:
    assert issubclass(MalformedMessage, ValueError)


_HEADER_VALUES = st.one_of(
    st.none(),
    st.just(""),
    st.sampled_from(["1.0", "0.3", "x" * 64, "x" * 65, "é", "a\x7fb", "a\nb", "\u2028", " "]),
    st.text(max_size=80),
    st.integers(),
    st.binary(max_size=8),
)
_TIMES = st.one_of(st.none(), st.just(AT.isoformat()), st.text(max_size=40))


@settings(max_examples=400, deadline=None)
@given(
    values=st.fixed_dictionaries(
        {f"ce_{name}": _HEADER_VALUES for name in _LIMITS},
        optional={"ce_traceparent": st.one_of(st.just("00-" + "a" * 32 + "-" + "b" * 16 + "-01"), st.text())},
    ),
    time=_TIMES,
    usual=st.booleans(),
)
def test_the_quick_reading_of_headers_agrees_with_the_careful_one(
    values: dict[str, object], time: str | None, usual: bool
) -> None:
    """`from_headers` takes a short path for the usual record and `_from_headers_checked` reads
    every other: whatever the headers, both give the same envelope or the same refusal."""
    headers = dict(values, ce_time=time or AT.isoformat())
    if usual:  # most drawn headers are refused at once; these mostly are not
        headers.update(ce_id="id-1", ce_source=SOURCE, ce_type="orders.OrderPlaced.v1", ce_specversion="1.0")
    outcomes = []
    for read in (Envelope.from_headers, Envelope._from_headers_checked):
        try:
            outcomes.append(read(headers, b"{}"))
        except MalformedMessage as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
