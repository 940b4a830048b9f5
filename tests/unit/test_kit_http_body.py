"""`kit.http.JsonBody`: a body read straight from its bytes; a client gone before its body came
is a 400, not an error of the service."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request

from pizzeria.kit.http import JsonBody


class Body(BaseModel):
    n: int


def request(*messages: dict[str, Any]) -> Request:
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-type", b"application/json")]}
    return Request(scope, receive)


async def test_a_body_is_validated_from_its_bytes() -> None:
    found = await JsonBody(Body)(request({"type": "http.request", "body": b'{"n": 3}', "more_body": False}))
    assert found == Body(n=3)


async def test_a_client_gone_before_its_body_came_is_a_400() -> None:
    with pytest.raises(HTTPException) as refused:
        await JsonBody(Body)(request({"type": "http.disconnect"}))
    assert refused.value.status_code == 400
