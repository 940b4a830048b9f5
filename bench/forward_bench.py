"""CPU per request the gateway forwards, the gateway alone: its app in this process, driven
in-process (no HTTP client or server in front of it), forwarding over loopback to an upstream in
another process that answers at once, so only the gateway's CPU is counted.

Two requests, each `--requests` times from `--clients` callers at once, after a warm-up:
`GET /api/v1/menu` (public, a read that may be retried) and `POST /api/v1/orders` (a customer's
token checked, a write). Each is run `--repeats` times; the least CPU per request is printed.

    python -m bench.forward_bench [--requests 3000] [--clients 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator

from aiohttp import web
from starlette.types import ASGIApp
from tests.support.asgi import raw_request
from tests.support.tcpproxy import free_port
from tests.support.tokens import bearer

from pizzeria.kit.settings import Settings
from pizzeria.services.gateway.app import create_app
from pizzeria.services.gateway.settings import GatewaySettings

ORDER = b'{"items": [{"menu_item_id": "m-1", "quantity": 1}], "payment_token": "tok_visa"}'


async def answer(request: web.Request) -> web.Response:
    await request.read()
    if request.method == "POST":
        return web.json_response({"id": "o-1", "status": "pending"}, status=201, headers={"Location": "/o-1"})
    return web.json_response({"items": [{"id": "m-1", "name": "Margherita", "price": 900}]})


def serve(port: int) -> None:
    """The upstream: every path answered at once (a read with a small menu, a write with 201)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


@contextlib.asynccontextmanager
async def upstream() -> AsyncIterator[str]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.forward_bench", "--serve", str(port))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the upstream did not start") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            break
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await process.wait()


Case = tuple[str, str, list[tuple[bytes, bytes]], bytes]


async def drive(app: ASGIApp, case: Case, requests: int, clients: int) -> None:
    """`requests` requests through the app, `clients` at a time; any but a 200 or 201 stops it."""
    method, path, headers, body = case
    left = iter(range(requests))

    async def caller() -> None:
        for _ in left:
            reply = await raw_request(app, method, path, headers, body)
            if reply.status not in (200, 201):
                raise RuntimeError(f"{method} {path}: {reply.status} {reply.body[:200]!r}")

    await asyncio.gather(*(caller() for _ in range(clients)))


async def measure(args: argparse.Namespace) -> dict[str, float]:
    async with upstream() as url:
        os.environ["CATALOG_URL"] = os.environ["ORDERS_URL"] = url
        env = {"RATE_LIMIT_PER_IP": "100000000", "RATE_LIMIT_PER_USER": "100000000", "LOG_LEVEL": "WARNING"}
        settings = Settings(REDIS_URL="", **env)
        app = create_app(settings, GatewaySettings(**env))
        token = bearer("bench-customer", settings=settings)["Authorization"].encode()
        cases: dict[str, Case] = {
            "GET /api/v1/menu": ("GET", "/api/v1/menu", [], b""),
            "POST /api/v1/orders": (
                "POST",
                "/api/v1/orders",
                [(b"authorization", token), (b"content-type", b"application/json"), (b"idempotency-key", b"k-1")],
                ORDER,
            ),
        }
        found: dict[str, float] = {}
        async with app.router.lifespan_context(app):
            for name, case in cases.items():
                await drive(app, case, 500, args.clients)  # connections open, code paths warm
                costs = []
                for _ in range(args.repeats):
                    began = time.process_time()
                    await drive(app, case, args.requests, args.clients)
                    costs.append((time.process_time() - began) / args.requests)
                found[name] = min(costs) * 1e6
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the upstream's own process
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    for name, cost in asyncio.run(measure(args)).items():
        print(f"{name:22} {cost:7.0f} µs CPU per forwarded request (gateway process)")


if __name__ == "__main__":
    main()
