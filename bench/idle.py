"""What the whole system costs while nobody orders: the CPU of every service process over a
quiet stretch (the polls, control reads, heartbeats and timers a running system pays for all
the time), and on PostgreSQL the transactions a second of each database.

    python -m bench.idle --stack embedded --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import tempfile
from pathlib import Path

import asyncpg
from tests.e2e.system import System
from tests.support.postgres import ADMIN_DSN

from bench.stacks import stack_env
from bench.system_bench import AUTOPILOTS, cpu_seconds

#: How long the system runs before the quiet stretch is measured (startup work settles).
SETTLE_S = 10.0


def _postgres_cpu() -> float:
    pids = subprocess.run(["pgrep", "-x", "postgres"], check=False, capture_output=True, text=True).stdout.split()
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):  # a backend that ended meanwhile
            total += cpu_seconds(int(pid))
    return total


async def _transactions() -> dict[str, int]:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        rows = await conn.fetch(
            "SELECT datname, xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname IS NOT NULL"
        )
    finally:
        await conn.close()
    return {r["datname"]: r["n"] for r in rows}


async def measure(stack: str, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="pzidle-") as tmp:
        async with stack_env(stack, Path(tmp)) as env:
            system = System(Path(tmp), {**env, **AUTOPILOTS})
            await system.start()
            try:
                await asyncio.sleep(SETTLE_S)  # the measured stretch begins once startup is over
                pids = {name: await system.pid(name) for name in system.ports if name != "provider"}
                before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                pg_before, xacts_before = _postgres_cpu(), await _transactions()
                await asyncio.sleep(seconds)  # the quiet stretch itself is what is measured
                after = {name: cpu_seconds(pid) for name, pid in pids.items()}
                pg_after, xacts_after = _postgres_cpu(), await _transactions()
            finally:
                system.stop()
    share = {name: 100 * (after[name] - before[name]) / seconds for name in pids}
    print(f"[idle {stack}] {seconds:.0f} s with no orders, % of a core per service process:")
    print("  " + ", ".join(f"{name} {value:.1f}" for name, value in share.items()))
    print(f"  services {sum(share.values()):.1f}% of a core; PostgreSQL {100 * (pg_after - pg_before) / seconds:.1f}%")
    busy = {
        name: (xacts_after[name] - xacts_before.get(name, 0)) / seconds
        for name in xacts_after
        if xacts_after[name] - xacts_before.get(name, 0) > 0
    }
    if busy:
        print("  transactions a second by database: " + ", ".join(f"{n} {v:.1f}" for n, v in sorted(busy.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="embedded", choices=["embedded", "postgres+kafka", "postgres+sqllog"])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(measure(args.stack, args.seconds))


if __name__ == "__main__":
    main()
