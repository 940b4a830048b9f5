"""Where a POST /orders spends its time under a steady load, read from the traces: the system
bench's steady phase on the embedded stack with every trace kept, then, for each order placed,
the gateway's server span, its client span to orders and orders' server span, cut into

- gateway, before: from the gateway's server span to its call to orders (auth, limits, routing);
- to orders: from the call to orders' server span (the request sent, orders' event loop and
  HTTP server taking it up, the middleware before the span);
- in orders: orders' server span (validation, pricing, the placement's group commit);
- back: from orders' span's end to the call's end, and the gateway's after it.

    python -m bench.post_latency [--rate 50] [--seconds 20]

Prints p50 / p95 / p99 of each part, in ms. Spans' clocks are the same host's."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

import orjson
from tests.e2e.system import Shop, System

from bench.stacks import STACKS, stack_env
from bench.stats import percentile
from bench.system_bench import AUTOPILOTS, NO_RATE_LIMITS, REPLICABLE, Bench, ready_to_order

PARTS = ("whole", "gateway, before", "to orders", "in orders", "back to the gateway", "gateway, after")


async def steady(workdir: Path, stack: str, rate: int, seconds: int) -> dict[str, Any]:
    async with stack_env(stack, workdir) as stack_vars:
        env = {**stack_vars, "TRACE_SAMPLE_RATIO": "1.0", **AUTOPILOTS, **NO_RATE_LIMITS, "LOG_LEVEL": "WARNING"}
        system = System(workdir, {**env, "PAYMENT_LATENCY_MS": "20"}, replicas=dict.fromkeys(REPLICABLE, 1))
        await system.start()
        shop = Shop(system)
        try:
            menu = await ready_to_order(shop)
            return await Bench(system.ports["gateway"], menu, system.env).steady(rate, seconds)
        finally:
            await shop.close()
            system.stop()


def spans(traces: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name in ("gateway", "orders"):
        for line in (traces / f"{name}.jsonl").read_bytes().splitlines():
            span = orjson.loads(line)
            found[span["span_id"]] = span
    return found


def parts(found: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    """Each placement's parts, in seconds."""
    children: dict[str, list[dict[str, Any]]] = {}
    for span in found.values():
        if span["parent_id"]:
            children.setdefault(span["parent_id"], []).append(span)
    out: dict[str, list[float]] = {part: [] for part in PARTS}
    for server in found.values():
        if server["service"] != "gateway" or server["kind"] != "server" or not server["name"].startswith("POST"):
            continue
        call = next((s for s in children.get(server["span_id"], []) if s["name"] == "POST orders"), None)
        inner = next((s for s in children.get(call["span_id"], []) if s["kind"] == "server"), None) if call else None
        if call is None or inner is None:
            continue
        marks = [server["start_ns"], call["start_ns"], inner["start_ns"], inner["end_ns"], call["end_ns"]]
        marks.append(server["end_ns"])
        out["whole"].append((marks[-1] - marks[0]) / 1e9)
        for part, start, end in zip(PARTS[1:], marks, marks[1:], strict=False):
            out[part].append((end - start) / 1e9)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=50, help="orders/s offered")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--stack", choices=STACKS, default="embedded")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pz-post-latency-") as tmp:
        result = asyncio.run(steady(Path(tmp), args.stack, args.rate, args.seconds))
        measured = parts(spans(Path(tmp) / "var" / "traces"))
    seen = result["steady_place_latency"]
    print(f"steady {args.rate} orders/s, {args.stack}, traces 1.0: POST p50 / p95 / p99 as the client saw it {seen}")
    print(f"placements traced: {len(measured['whole'])}")
    for part, values in measured.items():
        if values:
            p50, p95, p99 = (percentile(values, p) * 1000 for p in (50, 95, 99))
            print(f"  {part:20s} p50 {p50:6.1f}  p95 {p95:6.1f}  p99 {p99:6.1f} ms")


if __name__ == "__main__":
    main()
