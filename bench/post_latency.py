"""Where a POST /orders spends its time under a steady load, read from the traces: the system
bench's steady phase on the embedded stack with every trace kept, then, for each order placed,
the gateway's server span, its client span to orders and orders' server span, cut into

- gateway, before: from the gateway's server span to its call to orders (auth, limits, routing);
- to orders: from the call to orders' server span (the request sent, orders' event loop and
  HTTP server taking it up, the middleware before the span);
- in orders: orders' server span (validation, pricing, the placement's group commit);
- back: from orders' span's end to the call's end, and the gateway's after it.

Beside the parts, what the steady phase cost the machine: how busy its cores were (/proc/stat),
each service's statements, transactions and runs an order (their /metrics), and for every
process on the machine, grouped by what it is (a service's main thread apart from its other
threads; PostgreSQL's and Kafka's by their threads' names), the seconds a second its threads
ran, waited for a core with work to do, and the times they were given one (schedstat): how much
of a part is a wait for a core, and who keeps the cores busy.

    python -m bench.post_latency [--rate 50] [--seconds 20]

Prints p50 / p95 / p99 of each part, in ms. Spans' clocks are the same host's."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from tests.e2e.system import Shop, System

from bench.stacks import STACKS, stack_env
from bench.stats import percentile
from bench.system_bench import AUTOPILOTS, NO_RATE_LIMITS, REPLICABLE, Bench, counters, per_order, ready_to_order

PARTS = ("whole", "gateway, before", "to orders", "in orders", "back to the gateway", "gateway, after")


async def steady(workdir: Path, stack: str, rate: int, seconds: int) -> dict[str, Any]:
    async with stack_env(stack, workdir) as stack_vars:
        env = {**stack_vars, "TRACE_SAMPLE_RATIO": "1.0", **AUTOPILOTS, **NO_RATE_LIMITS, "LOG_LEVEL": "WARNING"}
        system = System(workdir, {**env, "PAYMENT_LATENCY_MS": "20"}, replicas=dict.fromkeys(REPLICABLE, 1))
        await system.start()
        shop = Shop(system)
        try:
            menu = await ready_to_order(shop)
            services = {await system.pid(name): name for name in system.ports}
            counted, cores, threads = await counters(system), busy_ticks(), runqueue(services)
            began = time.monotonic()
            result = await Bench(system.ports["gateway"], menu, system.env).steady(rate, seconds)
            took = time.monotonic() - began
            result["per_order"] = per_order(counted, await counters(system), result["steady_orders"])
            idle_after, all_after = busy_ticks()
            result["busy"] = 1 - (idle_after - cores[0]) / (all_after - cores[1])
            result["threads"] = {
                what: tuple((now - was) / took for now, was in zip(values, threads.get(what, (0, 0, 0)), strict=True))
                for what, values in runqueue(services).items()
            }
            return result
        finally:
            await shop.close()
            system.stop()


def busy_ticks() -> tuple[int, int]:
    """The machine's idle ticks (idle and waiting for the disk) and all its ticks so far."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)


def runqueue(services: dict[int, str]) -> dict[str, tuple[float, float, float]]:
    """Seconds every thread on the machine has run and waited for a core so far, and the times
    it was given one, summed by what it is: a service's main thread, its other threads, and
    other processes by their name (PostgreSQL's and Java's by their threads' names). A thread
    that ends between two readings takes its figures with it: the difference is a floor."""
    totals: dict[str, tuple[float, float, float]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "comm").read_text().strip()
            tasks = list((proc / "task").iterdir())
        except OSError:
            continue  # the process is gone
        for task in tasks:
            with contextlib.suppress(OSError, ValueError):  # the thread is gone
                run, wait, slices = (int(x) for x in (task / "schedstat").read_text().split()[:3])
                if int(proc.name) in services:
                    what = f"{services[int(proc.name)]} ({'main' if task.name == proc.name else 'threads'})"
                elif command in ("java", "postgres"):
                    what = f"{command}: {(task / 'comm').read_text().strip()}"
                else:
                    what = command
                was = totals.get(what, (0.0, 0.0, 0.0))
                totals[what] = (was[0] + run / 1e9, was[1] + wait / 1e9, was[2] + slices)
    return totals


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
    print(f"the cores were {result['busy']:.0%} busy; an order, per service:")
    for name, figures in result["per_order"].items():
        print(f"  {name:14s} " + ", ".join(f"{label} {value}" for label, value in figures.items()))
    threads = result["threads"]
    ran, waited = sum(t[0] for t in threads.values()), sum(t[1] for t in threads.values())
    print(f"every second, threads ran {ran:.2f} s and waited for a core {waited:.2f} s; the largest:")
    for what, (run, wait, slices) in sorted(threads.items(), key=lambda kv: -kv[1][0] - kv[1][1])[:20]:
        each = run / slices * 1e6 if slices else 0.0
        print(f"  {what:40.40s} ran {run:5.3f}  waited {wait:5.3f}  {slices:6.0f} times, {each:4.0f} µs each")


if __name__ == "__main__":
    main()
