"""What the whole system costs while nobody orders: the CPU of every service process over a
quiet stretch (the polls, control reads, heartbeats and timers a running system pays for all
the time), on PostgreSQL the transactions a second of each service's database and the CPU
of its backends, and the CPU of the Kafka node and of Redis beside them.

    python -m bench.idle --stack embedded --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from tests.e2e.system import System

from bench.stacks import STACKS, InfraWatch, PgWatch, stack_env
from bench.system_bench import AUTOPILOTS, cpu_of

#: How long the system runs before the quiet stretch is measured (startup work settles).
SETTLE_S = 10.0


async def measure(stack: str, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="pzidle-") as tmp:
        async with stack_env(stack, Path(tmp)) as env:
            system = System(Path(tmp), {**env, **AUTOPILOTS})
            postgres = PgWatch(env) if stack != "embedded" else None
            infra = InfraWatch(stack, Path(tmp), env)
            await system.start()
            try:
                await asyncio.sleep(SETTLE_S)  # the measured stretch begins once startup is over
                pids = {name: await system.pid(name) for name in system.ports if name != "provider"}
                before = cpu_of(pids)
                pg_before = await postgres.snapshot() if postgres else None
                infra_before = await infra.snapshot()
                await asyncio.sleep(seconds)  # the quiet stretch itself is what is measured
                after = cpu_of(pids)
                pg_after = await postgres.snapshot() if postgres else None
                infra_after = await infra.snapshot()
            finally:
                system.stop()
    share = {name: 100 * (after[name] - before[name]) / seconds for name in pids}
    print(f"[idle {stack}] {seconds:.0f} s with no orders, % of a core per service process:")
    print("  " + ", ".join(f"{name} {value:.1f}" for name, value in share.items()))
    print(f"  services {sum(share.values()):.1f}% of a core")
    if postgres and pg_before and pg_after:
        per_db = postgres.delta(pg_before, pg_after)
        backends = sum(d["backend_cpu_s"] for d in per_db.values())
        print(f"  PostgreSQL backends {100 * backends / seconds:.1f}% of a core; transactions a second by database:")
        rates = {svc: (d["xact_commit"] + d["xact_rollback"]) / seconds for svc, d in per_db.items()}
        print("  " + ", ".join(f"{svc} {rate:.1f}" for svc, rate in rates.items()))
    beside = {n: s for n, s in infra.used_s(infra_before, infra_after).items() if n in ("Kafka", "Redis")}
    if beside:
        print("  beside them: " + ", ".join(f"{n} {100 * s / seconds:.1f}%" for n, s in beside.items()) + " of a core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="embedded", choices=STACKS)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(measure(args.stack, args.seconds))


if __name__ == "__main__":
    main()
