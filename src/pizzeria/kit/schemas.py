"""What every request body and filter accepts: exactly the types it declares and text a database
can store.

JSON has numbers, booleans and strings; a body that sends `"2"` or `true` for a quantity is
wrong, not a quantity of 2 or 1, so numbers and booleans are never coerced. PostgreSQL cannot
store NUL in text, so no text holds one. Times in filters are UTC and within the years the
stores and the arithmetic on them handle.
"""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, field_validator

#: The span of time a filter may name.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


def _plain_type(annotation: Any) -> Any:
    """`int` of `int`, `int | None` and `Annotated[int, ...]`; anything else as it is."""
    if typing.get_origin(annotation) is Annotated:
        return _plain_type(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _plain_type(kinds[0]) if len(kinds) == 1 else annotation
    return annotation


class RequestBody(BaseModel):
    """The base of every request body: unknown fields refused, numbers and booleans exactly
    what they claim to be, no NUL in any text (422 naming the field otherwise).

    Not pydantic's strict mode: that also refuses a UUID or a time given as a JSON string."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        # After validation a nested body is a model (it checked its own text): only plain
        # text, and lists and mappings of it, are looked into here.
        if _has_nul(value):
            raise ValueError("text may not contain the NUL character (\\u0000)")
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _exactly(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        kind = _plain_type(field.annotation) if field is not None else None
        if value is None:
            return value
        if kind is bool and not isinstance(value, bool):
            raise ValueError("must be true or false")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("must be a whole number, not a string or a boolean")
        if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError("must be a number, not a string or a boolean")
        return value


def _within_range(value: datetime) -> datetime:
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"must lie between {EARLIEST.date()} and {LATEST.date()} (UTC)") from None
    if not EARLIEST <= utc <= LATEST:
        raise ValueError(f"must lie between {EARLIEST.date()} and {LATEST.date()} (UTC)")
    return utc


#: A time in a filter: read as UTC (naive means UTC), refused (422) outside the span above.
FilterTime = Annotated[datetime, AfterValidator(_within_range)]
