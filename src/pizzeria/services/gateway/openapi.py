"""One OpenAPI document for the whole public API: each upstream's own document, cut down to the
routes the gateway exposes, merged with the gateway's own routes. Schema names two services
both use for different shapes are prefixed with the service name."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson

from pizzeria.kit.auth import DEVICE_KEY_HEADER
from pizzeria.kit.errors import ProblemError
from pizzeria.services.gateway.routes import match
from pizzeria.services.gateway.upstream import Upstream

REF = "#/components/schemas/"
BEARER = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": "An access token from `POST /api/v1/auth/login`.",
}
DEVICE_KEY = {
    "type": "apiKey",
    "in": "header",
    "name": DEVICE_KEY_HEADER,
    "description": "A device's own key, issued when it was registered (`POST /api/v1/devices`).",
}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _sample(template: str) -> str:
    """A concrete path the template stands for (to look it up in the route table)."""
    return re.sub(r"\{[^/]+\}", "x", template)


def _renamed(doc: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    if not renames:
        return doc
    text = orjson.dumps(doc).decode()
    for old, new in renames.items():
        text = text.replace(f'"{REF}{old}"', f'"{REF}{new}"')
    renamed: dict[str, Any] = orjson.loads(text)
    schemas = renamed.get("components", {}).get("schemas", {})
    for old, new in renames.items():
        schemas[new] = schemas.pop(old)
    return renamed


def merge(own: dict[str, Any], upstream_docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The gateway's document: its own paths plus every exposed upstream operation."""
    schemas: dict[str, Any] = dict(own.get("components", {}).get("schemas", {}))
    paths: dict[str, Any] = {}
    for path, operations in own.get("paths", {}).items():
        if path.startswith("/api/"):  # the gateway's own API: the overview and operations, all signed in
            paths[path] = {m: {**op, "security": [{"bearer": []}]} for m, op in operations.items() if m in METHODS}
    for service, original in sorted(upstream_docs.items()):
        theirs = original.get("components", {}).get("schemas", {})
        renames = {
            name: f"{service.title()}{name}"
            for name, schema in theirs.items()
            if name in schemas and schemas[name] != schema
        }
        doc = _renamed(original, renames)
        for path, operations in doc.get("paths", {}).items():
            for method, declared in operations.items():
                if method not in METHODS:
                    continue
                found = match(method.upper(), _sample(path)).route
                if found is None or found.upstream != service:
                    continue  # not part of the public API (or another service's path)
                operation = dict(declared)
                operation.pop("security", None)  # the schemes are the gateway's, named as it names them
                if found.device:
                    operation["security"] = [{"deviceKey": []}]
                    called_by = "\n\nCalled by devices, with their key."
                    operation["description"] = (operation.get("description", "") + called_by).strip()
                elif found.allowed is not None:
                    operation["security"] = [{"bearer": []}]
                    roles = ", ".join(sorted(found.allowed))
                    operation["description"] = (operation.get("description", "") + f"\n\nRoles: {roles}.").strip()
                paths.setdefault(path, {})[method] = operation
        schemas.update(doc.get("components", {}).get("schemas", {}))
    return {
        "openapi": own.get("openapi", "3.1.0"),
        "info": {
            "title": "Pizzeria API",
            "version": own.get("info", {}).get("version", "1.0.0"),
            "description": "The public API of Pizzeria, served by the gateway.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": BEARER, "deviceKey": DEVICE_KEY},
        },
    }


class OpenApiDocument:
    """Builds the merged document from the upstreams, and keeps it once every one answered."""

    def __init__(self, upstreams: dict[str, Upstream], own: dict[str, Any]) -> None:
        self.upstreams = upstreams
        self.own = own
        self._complete: dict[str, Any] | None = None

    async def get(self) -> dict[str, Any]:
        if self._complete is not None:
            return self._complete

        async def fetch(upstream: Upstream) -> dict[str, Any] | None:
            try:
                answer = await upstream.send("GET", "/openapi.json")
            except ProblemError:
                return None
            return orjson.loads(answer.body) if answer.status == 200 else None

        names = list(self.upstreams)
        docs = await asyncio.gather(*(fetch(self.upstreams[n]) for n in names))
        found = {n: d for n, d in zip(names, docs, strict=True) if d is not None}
        merged = merge(self.own, found)
        missing = sorted(set(names) - set(found))
        if missing:
            merged["info"]["x-missing-upstreams"] = missing  # served as is, built again next time
        else:
            self._complete = merged
        return merged
