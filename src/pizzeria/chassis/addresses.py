"""Where each process of the system listens by default, and how the others reach it.

`<SERVICE>_PORT` moves a service; `<SERVICE>_URL` tells the others where it is when it is not
on this host (containers, Kubernetes).
"""

from __future__ import annotations

import os

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
    "gateway": 8000,
}


def port_for(service: str) -> int:
    return int(os.environ.get(f"{service.upper()}_PORT", SERVICE_PORTS[service]))


def url_for(settings: Settings, service: str) -> str:
    """How other processes reach a service over HTTP (`<SERVICE>_URL` overrides)."""
    explicit = os.environ.get(f"{service.upper()}_URL")
    if explicit:
        return explicit.rstrip("/")
    return f"http://{settings.host}:{port_for(service)}"
