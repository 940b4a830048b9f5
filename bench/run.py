"""`make bench`: every benchmark on both stacks; prints the figures (and writes them as JSON to
bench/results/latest.json). Figures depend on the machine: see docs/performance.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

import uvloop

from bench import courier_bench, gateway_bench, hop_bench, relay_bench, system_bench, telemetry_bench
from bench.stacks import STACKS
from pizzeria.chassis.addresses import MAX_REPLICAS

#: What `make bench` runs on (`--stacks postgres+sqllog` adds the sqllog on PostgreSQL).
DEFAULT_STACKS = ("embedded", "postgres+kafka")


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


async def main(args: argparse.Namespace) -> None:
    results: dict[str, Any] = {
        "machine": machine(),
        "hops": [],
        "system": [],
        "relay": [],
        "gateway": [],
        "telemetry": [],
        "courier": [],
    }
    print(f"machine: {results['machine']}")
    for stack in args.stacks:
        if "hops" in args.only:
            r = await hop_bench.run(stack, batches=args.hop_batches, messages=args.hop_messages)
            results["hops"].append(r)
            print_hops(r)
        if "relay" in args.only:
            r = await relay_bench.run(stack, events=args.relay_events, rates=args.relay_rates)
            results["relay"].append(r)
            print(f"[relay   {stack:<15}] backlog drains at {r['drain_per_s']:,.0f} events/s  ({r['broker']})")
            for rate, figures in r["latency"].items():
                print(f"[relay   {stack:<15}] commit → broker ack p50/p95/p99 at {rate:>5} events/s offered: {figures}")
        if "system" in args.only:
            by_replicas: list[dict[str, Any]] = []
            for replicas in args.replicas:
                tag = stack if replicas == 1 else f"{stack} x{replicas}"
                if stack == "embedded" and replicas > 1:
                    print(f"[system  {tag:<15}] not run: the embedded stack refuses replicas (SQLite, no Redis)")
                    continue
                r = await system_bench.run(
                    stack,
                    orders=args.orders,
                    concurrency=args.concurrency,
                    steady_rate=args.steady_rate,
                    steady_seconds=args.steady_seconds,
                    warmup_seconds=args.warmup_seconds,
                    replicas=replicas,
                )
                results["system"].append(r)
                by_replicas.append(r)
                print_system(tag, r)
            if len(by_replicas) > 1:
                figures = "; ".join(
                    f"{r['replicas']} → accepted {r['accepted_per_s']:,.0f}/s, completed {r['completed_per_s']:,.0f}/s"
                    for r in by_replicas
                )
                print(f"[system  {stack:<15}] flood throughput by replicas of each service: {figures}")
        if "gateway" in args.only:
            r = await gateway_bench.run(
                stack, clients=args.concurrency, menu_requests=args.menu_requests, orders=args.gateway_orders
            )
            results["gateway"].append(r)
            for phase in ("cold", "warm"):
                m = r[f"menu_{phase}"]
                print(
                    f"[gateway {stack:<15}] GET /api/v1/menu, cache {phase}: {m['per_s']:,.0f} requests/s from "
                    f"{m['clients']} clients, p50/p95/p99 {m['latency']}  (statuses {m['statuses']})"
                )
            o = r["orders"]
            print(
                f"[gateway {stack:<15}] POST /api/v1/orders from {o['clients']} clients: {o['per_s']:,.0f}/s, "
                f"p50/p95/p99 {o['latency']}  (statuses {o['statuses']})"
            )
        if "telemetry" in args.only:
            r = await telemetry_bench.run(
                stack,
                clients=args.telemetry_clients,
                devices=args.telemetry_devices,
                per_batch=args.telemetry_batch,
                batches=args.telemetry_batches,
                reads=args.telemetry_reads,
                saga_seconds=args.telemetry_saga_seconds,
            )
            results["telemetry"].append(r)
            print_telemetry(r)
        if "courier" in args.only:
            r = await courier_bench.run(stack, samples=args.courier_samples)
            results["courier"].append(r)
            print(
                f"[courier   {stack:<13}] a tracker's reading → the order page's map (its SSE event): "
                f"p50/p95/p99 {r['lag']} over {r['samples']} readings (aim: p99 ≤ 1 s)  ({r['broker']})"
            )
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))


def print_hops(r: dict[str, Any]) -> None:
    stack = r["stack"]
    print(f"[hops    {stack:<15}] µs of CPU per message at each hop, in runs of N messages ({r['broker']}):")
    print(f"[hops    {stack:<15}] {'N':>5}" + "".join(f"{hop:>9}" for hop in hop_bench.HOPS) + f"{'all':>9}")
    for batch, figures in r["per_message_us"].items():
        costs = [figures[hop] for hop in hop_bench.HOPS]
        print(f"[hops    {stack:<15}] {batch:>5}" + "".join(f"{c:>9.1f}" for c in costs) + f"{sum(costs):>9.1f}")


def print_telemetry(r: dict[str, Any]) -> None:
    stack, ingest, position, flood = r["stack"], r["ingest"], r["position"], r["position_flood"]
    print(
        f"[telemetry {stack:<13}] ingest over batch HTTP: {r['readings_per_s']:,.0f} readings/s "
        f"({r['batches']} batches of {r['per_batch']} from {ingest['clients']} clients, {r['devices']} trackers; "
        f"batch p50/p95/p99 {ingest['latency']}; statuses {ingest['statuses']})  ({r['broker']})"
    )
    print(
        f"[telemetry {stack:<13}] a courier's latest position, one reader: p50/p95/p99 {position['latency']}; "
        f"{flood['clients']} readers: {flood['per_s']:,.0f} reads/s, p50/p95/p99 {flood['latency']}  "
        f"(statuses {position['statuses']}, {flood['statuses']})"
    )
    saga = r["beside_saga"]
    for phase in ("alone", "together"):
        o = saga[phase]
        beside = (
            f"beside {saga['readings_per_s']:,.0f} readings/s (offered at the aim, {saga['aim_readings_per_s']:,}/s; "
            f"batches sent late p50/p95/p99 {saga['ingest']['late']}; batches p50/p95/p99 {saga['ingest']['latency']}; "
            f"statuses {saga['ingest']['statuses']})"
            if phase == "together"
            else "alone"
        )
        print(
            f"[telemetry {stack:<13}] orders at {saga['rate']}/s for {saga['seconds']} s {beside}: "
            f"POST p50/p95/p99 {o['steady_place_latency']}; place → delivered p50/p95/p99 {o['steady_to_delivered']} "
            f"({o['steady_delivered']} of {o['steady_orders']} delivered)"
        )


def print_system(tag: str, r: dict[str, Any]) -> None:
    print(
        f"[system  {tag:<15}] steady {r['steady_rate']} orders/s ({r['steady_orders']} orders, "
        f"{r['steady_delivered']} delivered): POST p50/p95/p99 {r['steady_place_latency']}; "
        f"place → delivered p50/p95/p99 {r['steady_to_delivered']}"
    )
    print(
        f"[system  {tag:<15}] flood {r['orders']} orders from {r['concurrency']} clients: "
        f"accepted {r['accepted_per_s']:,.0f}/s (POST p50/p95/p99 {r['place_latency']}), "
        f"completed {r['completed_per_s']:,.0f}/s, of which delivered {r['delivered_per_s']:,.0f}/s"
    )
    cpu = ", ".join(f"{name} {ms}" for name, ms in r["cpu_ms_per_order"].items())
    total = r["cpu_ms_per_order_total"]
    print(
        f"[system  {tag:<15}] CPU per order (ms, during the flood; traces sampled at "
        f"{r['trace_sample_ratio']}): {total} in all — {cpu}"
    )
    infra = r["infra_cpu_ms_per_order"]
    everything = total + sum(infra.values())
    print(
        f"[system  {tag:<15}] beside the services, per order (ms): "
        + ", ".join(f"{name} {ms}" for name, ms in infra.items())
        + f"; all these processes {everything:.1f} ms an order, so {r['cores']} cores finish at most "
        f"{r['cores'] * 1000 / everything:,.0f} orders/s (a ceiling: the database's background work is not counted)"
    )
    idle = r["idle"]
    idle_share = sum(idle.values()) * r["flood_seconds"] / r["orders"]
    print(
        f"[system  {tag:<15}] idle, nobody ordering (ms of CPU a second): "
        + ", ".join(f"{name} {ms}" for name, ms in idle.items())
        + f"; at that rate for the flood's {r['flood_seconds']:.0f} s, {idle_share:.1f} ms of each order's"
    )
    for name, counts in r["per_order"].items():
        figures = ", ".join(f"{label} {value:g}" for label, value in counts.items())
        print(f"[system  {tag:<15}]   per order, {name}: {figures}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stacks", nargs="+", default=list(DEFAULT_STACKS), choices=STACKS)
    parser.add_argument(
        "--only",
        nargs="+",
        default=["hops", "relay", "system", "gateway", "telemetry", "courier"],
        choices=["hops", "relay", "system", "gateway", "telemetry", "courier"],
    )
    parser.add_argument("--hop-batches", type=int, nargs="+", default=[1, 10, 100], metavar="N")
    parser.add_argument("--hop-messages", type=int, default=3000, help="messages through each hop per run size")
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--steady-rate", type=int, default=50, help="orders/s offered in the steady phase")
    parser.add_argument("--steady-seconds", type=int, default=60)
    parser.add_argument(
        "--warmup-seconds",
        type=int,
        default=20,
        help="orders offered at the steady rate before anything is measured, untimed (0: none)",
    )
    parser.add_argument("--relay-events", type=int, default=20000)
    parser.add_argument("--menu-requests", type=int, default=5000)
    parser.add_argument("--gateway-orders", type=int, default=1000)
    parser.add_argument("--telemetry-clients", type=int, default=8, help="connections sending batches")
    parser.add_argument("--telemetry-devices", type=int, default=20, help="trackers the batches come from")
    parser.add_argument("--telemetry-batch", type=int, default=500, help="readings in a batch")
    parser.add_argument("--telemetry-batches", type=int, default=400)
    parser.add_argument("--telemetry-reads", type=int, default=5000, help="reads of a courier's latest position")
    parser.add_argument(
        "--telemetry-saga-seconds", type=int, default=30, help="orders alone, then beside the readings, this long each"
    )
    parser.add_argument("--courier-samples", type=int, default=300, help="readings followed to the order page")
    parser.add_argument("--relay-rates", type=int, nargs="+", default=[200, 500, 1000])
    parser.add_argument(
        "--replicas",
        type=int,
        nargs="+",
        default=[1, 2],
        choices=range(1, MAX_REPLICAS + 1),
        metavar="N",
        help="run the system benchmark with N processes of every service that may run several "
        "(PostgreSQL + Kafka only); one run per N",
    )
    uvloop.run(main(parser.parse_args()))  # the services run on uvloop too


if __name__ == "__main__":
    cli()
