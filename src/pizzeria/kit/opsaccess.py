"""Who may look inside a process: `/metrics`, the details of `/health` and `/ready`, a
simulator's admin API. Callers from OPS_NETWORKS (loopback by default: the supervisor, a
container's health check, a Prometheus beside the service), or anyone with an administrator's
access token; for everyone else there is nothing to see."""

from __future__ import annotations

import ipaddress

from fastapi import Request

from pizzeria.kit.auth import decode_access_token
from pizzeria.kit.clientaddr import client_address
from pizzeria.kit.errors import Forbidden, ProblemError
from pizzeria.kit.settings import Settings, get_settings


def _settings(request: Request) -> Settings:
    settings: Settings | None = getattr(request.app.state, "ops_settings", None)
    return settings or get_settings()


def is_ops_caller(request: Request) -> bool:
    settings = _settings(request)
    peer = request.client.host if request.client else None
    address = client_address(peer, request.headers.getlist("x-forwarded-for"), settings.trusted_networks())
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        ip = None
    if ip is not None and any(ip.version == n.version and ip in n for n in settings.ops_callers()):
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    try:
        return decode_access_token(token.strip(), settings).role == "admin"
    except ProblemError:
        return False


async def require_ops_caller(request: Request) -> None:
    """A route dependency: 403 for anyone but an operations caller (see above)."""
    if not is_ops_caller(request):
        raise Forbidden("this is for operators: call from OPS_NETWORKS or send an administrator's access token")
