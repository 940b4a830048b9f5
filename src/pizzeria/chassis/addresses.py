"""Where each process of the system listens by default, and how the others reach it.

`<SERVICE>_PORT` moves a service; `<SERVICE>_URL` tells the others where it is when it is not
on this host (containers, Kubernetes: one address in front of all its replicas).

A service may run as several replicas on this host (`pizzeria up --replicas orders=2`, or
`<SERVICE>_REPLICAS`): replica 1 listens on the service's port, replica n on that port plus
100 for each replica before it (orders: 5002, 5102, 5202), and each knows its number from `PIZZERIA_REPLICA`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pizzeria.kit.settings import Settings

#: Every process of the system and its default port (5001-5004 and 8000 are the seeds' own).
SERVICE_PORTS: dict[str, int] = {
    "provider": 5090,
    "identity": 5005,
    "catalog": 5001,
    "orders": 5002,
    "payments": 5003,
    "notifications": 5004,
    "kitchen": 5006,
    "delivery": 5007,
    "audit": 5008,
    "devices": 5009,
    "telemetry": 5010,
    "gateway": 8000,
}

#: Processes that play the outside world's devices, started only when asked for (not services).
SIMULATOR_PORTS: dict[str, int] = {"devicesim": 5091}

#: Each replica of a service listens this many ports above the one before it.
REPLICA_PORT_STEP = 100
#: More replicas than this on one host add contention, not capacity.
MAX_REPLICAS = 8
#: Which replica of its service a process is (1 when unset).
REPLICA_VARIABLE = "PIZZERIA_REPLICA"


def replica_number(environ: Mapping[str, str] = os.environ) -> int:
    """This process's replica number (`PIZZERIA_REPLICA`, from 1)."""
    return _count(environ.get(REPLICA_VARIABLE, "1"), REPLICA_VARIABLE, "a replica's number")


def port_for(service: str, replica: int = 1) -> int:
    """The port replica `replica` of `service` listens on."""
    known = SERVICE_PORTS.get(service) or SIMULATOR_PORTS[service]
    base = int(os.environ.get(f"{service.upper()}_PORT", known))
    return base + REPLICA_PORT_STEP * (replica - 1)


def replica_label(service: str, replica: int) -> str:
    """How a replica is named in logs and output: `orders`, then `orders-2`, `orders-3`."""
    return service if replica == 1 else f"{service}-{replica}"


def url_for(settings: Settings, service: str, replica: int = 1) -> str:
    """How other processes reach a service (one replica of it) over HTTP; `<SERVICE>_URL`
    overrides: an address in front of every replica."""
    explicit = os.environ.get(f"{service.upper()}_URL")
    if explicit:
        return explicit.rstrip("/")
    return f"http://{settings.host}:{port_for(service, replica)}"


def urls_for(settings: Settings, service: str) -> list[str]:
    """Every address of a service: its replicas on this host, or the one `<SERVICE>_URL`
    names (which spreads requests over the replicas behind it itself)."""
    if os.environ.get(f"{service.upper()}_URL"):
        return [url_for(settings, service)]
    return [url_for(settings, service, n) for n in range(1, replicas_of(service) + 1)]


def replicas_of(service: str, environ: Mapping[str, str] = os.environ) -> int:
    """How many replicas of `service` run on this host (`<SERVICE>_REPLICAS`, 1 when unset)."""
    return _count(environ.get(f"{service.upper()}_REPLICAS", "1"), f"{service.upper()}_REPLICAS")


def replicas_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """The replica counts `<SERVICE>_REPLICAS` asks for, by service (those that are set)."""
    return {
        service: replicas_of(service, environ) for service in SERVICE_PORTS if f"{service.upper()}_REPLICAS" in environ
    }


def parse_replicas(text: str) -> dict[str, int]:
    """`orders=2,kitchen=2` as {"orders": 2, "kitchen": 2}; ValueError saying what is wrong."""
    counts: dict[str, int] = {}
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        service, equals, count = part.partition("=")
        service = service.strip()
        if not equals:
            raise ValueError(f"{part!r}: write SERVICE=COUNT, as in orders=2")
        if service not in SERVICE_PORTS:
            raise ValueError(f"{service!r} is no service; known: {', '.join(SERVICE_PORTS)}")
        if service in counts:
            raise ValueError(f"{service} is named twice")
        counts[service] = _count(count.strip(), service)
    if not counts:
        raise ValueError("name at least one service, as in orders=2")
    return counts


def _count(text: str, what: str, noun: str = "the number of replicas") -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 3 and 1 <= int(text) <= MAX_REPLICAS):
        raise ValueError(f"{what}: {noun} is a whole number from 1 to {MAX_REPLICAS}, not {text!r}")
    return int(text)
