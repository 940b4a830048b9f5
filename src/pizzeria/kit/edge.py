"""What every request must be before any route sees it: header bytes that are text, headers and
a body within their size limits, no NUL in the path or query.

A request that is not is answered here (400, 413, 431 as `application/problem+json`), before its
body is buffered: a declared `Content-Length` over the limit is refused at once, and a body sent
without one is counted as it streams in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pizzeria.kit.errors import PROBLEM_BASE, PROBLEM_JSON

#: RFC 9110 5.6.2: a field name is a token.
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: Control characters other than horizontal tab (RFC 9110 5.5: never part of a field value).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: An identifier a client may choose for its request (`X-Request-ID`, `X-Correlation-ID`): it
#: travels in every message the request causes and is stored in columns of 64 characters.
REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,63}$")
#: Headers whose value names the request: checked here because every log line and message carries them.
ID_HEADERS = (b"x-request-id", b"x-correlation-id")


@dataclass(frozen=True)
class EdgeLimits:
    """How big a request may be (bytes): its body, and all its header lines together."""

    max_body_bytes: int = 1_048_576
    max_header_bytes: int = 16_384


class PayloadTooLarge(HTTPException):
    """The body grew past the limit while it was read (no `Content-Length`, or a wrong one).

    An HTTPException so that FastAPI's body parsing passes it on as it is, instead of as a
    generic 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


def problem_body(status: int, slug: str, title: str, detail: str, **extra: Any) -> bytes:
    return orjson.dumps({"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail, **extra})


def _refusal(scope: Scope, limits: EdgeLimits) -> tuple[int, str, str, str] | None:
    """Why the request line and headers cannot be accepted (status, slug, title, detail), if they cannot."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    size = sum(len(name) + len(value) + 4 for name, value in headers)
    if size > limits.max_header_bytes:
        return (
            431,
            "request-header-fields-too-large",
            "Request header fields too large",
            f"the request's headers take {size} bytes; at most {limits.max_header_bytes} are accepted",
        )
    for name, value in headers:
        shown = name.decode("latin-1")[:64]
        if not _TOKEN.match(name):
            return 400, "bad-header", "Bad header", f"the header name {shown!r} is not a valid field name"
        if _CONTROL.search(value):
            return 400, "bad-header", "Bad header", f"the header {shown} holds control characters"
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return 400, "bad-header", "Bad header", f"the header {shown} is not UTF-8 text"
        if name.lower() in ID_HEADERS and not REQUEST_ID.match(text.strip(" \t")):
            return (
                400,
                "bad-header",
                "Bad header",
                f"{shown} must be 1 to 64 letters, digits or ._:/+=@- (starting with a letter or digit)",
            )
    if "\x00" in scope.get("path", "") or b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
        return 400, "bad-request", "Bad request", "the path or query holds a NUL character"
    return None


def _declared_length(scope: Scope) -> int | str | None:
    """The declared body length; None when not declared; a reason when it is not a number."""
    values = [v for k, v in scope["headers"] if k.lower() == b"content-length"]
    if not values:
        return None
    if len(set(values)) > 1 or not values[0].strip().isdigit():
        return "the Content-Length header is not one whole number"
    return int(values[0].strip())


class EdgeMiddleware:
    """Refuses, before any route, a request whose headers or body break the rules above."""

    def __init__(self, app: ASGIApp, limits: EdgeLimits | None = None) -> None:
        self.app = app
        self.limits = limits or EdgeLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = _refusal(scope, self.limits)
        declared = _declared_length(scope)
        if refusal is None and isinstance(declared, str):
            refusal = 400, "bad-request", "Bad request", declared
        if refusal is None and isinstance(declared, int) and declared > self.limits.max_body_bytes:
            refusal = (
                413,
                "payload-too-large",
                "Payload too large",
                f"the request body is {declared} bytes; at most {self.limits.max_body_bytes} are accepted",
            )
        if refusal is not None:
            await _answer(send, *refusal)
            return
        limit = self.limits.max_body_bytes
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except PayloadTooLarge as exc:
            # Read outside a route (nothing turned it into an answer yet).
            if started:
                raise
            await _answer(send, 413, "payload-too-large", "Payload too large", str(exc.detail))


async def _answer(send: Send, status: int, slug: str, title: str, detail: str) -> None:
    body = problem_body(status, slug, title, detail)
    headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    if status in (413, 431):
        # The rest of the request is not read: the connection cannot carry another one.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
