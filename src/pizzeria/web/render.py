"""Pages and fragments from the Jinja2 templates, with the filters they share and the headers
every page of the UI is sent with."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from pizzeria.web import cart, words
from pizzeria.web.session import Visit

TEMPLATES = Path(__file__).resolve().parent / "templates"
FLASH_COOKIE = "pz_flash"
#: How the flash cookie marks an alert (the rest of its value is the text).
_ALERT_MARK = "!"
CURRENCIES = {"EUR": "€", "USD": "$", "GBP": "£"}
#: What stands for a value nobody knows yet.
NONE = "\u2013"

#: Scripts and styles from this site only (htmx is vendored), no framing, no inline script.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def money(minor: int | None, currency: str = "EUR") -> str:
    if minor is None:
        return NONE
    sign = "-" if minor < 0 else ""
    amount = f"{abs(minor) // 100}.{abs(minor) % 100:02d}"
    symbol = CURRENCIES.get(currency)
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {currency}"


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def clock(value: Any) -> str:
    """A moment as the time of day (UTC), or date and time when it is not today."""
    moment = parse_time(value)
    if moment is None:
        return ""
    moment = moment.astimezone(UTC)
    if moment.date() == datetime.now(UTC).date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%d %b %Y, %H:%M")


def iso(value: Any) -> str:
    moment = parse_time(value)
    return moment.isoformat() if moment else ""


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def age(value: Any) -> str:
    moment = parse_time(value)
    if moment is None:
        return ""
    return duration(max(0.0, (datetime.now(UTC) - moment).total_seconds())) + " ago"


def percent(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.0f}%"


def label(value: str | None) -> str:
    return (value or "").replace("_", " ")


def short(value: Any, keep: int = 8) -> str:
    """An id as people can tell ids apart: the end of it. The ids here are UUIDv7, whose first
    characters are a timestamp shared by everything made in the same minute."""
    text = str(value or "")
    return text[-keep:]


class Alert(str):
    """A notice that something was not done (refused, failed, or not understood): shown as an
    alert, in the colour of trouble, not as a confirmation."""

    __slots__ = ()


def flash_of(request: Request) -> str:
    """The one-time notice the last redirect left (an `Alert` if it was one), or ""."""
    value = unquote(request.cookies.get(FLASH_COOKIE, ""))
    if value.startswith(_ALERT_MARK):
        return Alert(value.removeprefix(_ALERT_MARK)[:300])
    return value[:300]


class Renderer:
    """Renders templates into pages (with the visitor, the cart and a one-time notice) and
    fragments (for htmx swaps and server-sent events)."""

    def __init__(self) -> None:
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            money=money,
            clock=clock,
            iso=iso,
            duration=duration,
            age=age,
            percent=percent,
            label=label,
            short=short,
        )
        self.env.globals.update(words=words)
        self.env.tests["alert"] = lambda value: isinstance(value, Alert)

    def fragment(self, template: str, **context: Any) -> str:
        return self.env.get_template(template).render(**context)

    def page(self, request: Request, visit: Visit, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        flash = flash_of(request)
        html = self.fragment(
            template,
            request=request,
            visit=visit,
            path=request.url.path,
            cart_count=cart.count(cart.parse(request.cookies.get(cart.CART_COOKIE))),
            flash=flash,
            **context,
        )
        response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
        if flash:
            response.delete_cookie(FLASH_COOKIE, path="/")
        visit.apply(request, response)
        return response

    def partial(self, request: Request, visit: Visit, template: str, *, status: int = 200, **context: Any) -> Response:
        """A piece of a page, for htmx to swap in."""
        html = self.fragment(template, request=request, visit=visit, path=request.url.path, **context)
        response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
        visit.apply(request, response)
        return response


def redirect(request: Request, visit: Visit, to: str, *, flash: str | None = None) -> Response:
    """See other: where the browser goes after a form, with a notice to show there once. An htmx
    request is told to go there with `HX-Redirect` (it would otherwise swap the page in)."""
    if request.headers.get("hx-request") == "true":
        response: Response = Response(status_code=204, headers={"HX-Redirect": to})
    else:
        response = RedirectResponse(to, status_code=303)
    if flash:
        value = (_ALERT_MARK if isinstance(flash, Alert) else "") + flash[:300]
        response.set_cookie(FLASH_COOKIE, quote(value), max_age=60, path="/", httponly=True, samesite="lax")
    visit.apply(request, response)
    return response
