"""Where an order's CPU goes, per service process. Starts the system as the system bench does and:

1. idle: CPU per second of every process with no orders (polling loops), and a short profile;
2. flood A, not profiled: CPU per order of every process (/proc), SQL per order (SQLite statements
   counted by a sitecustomize on the services' path; transactions and rows from PostgreSQL);
3. flood B, profiled: `py-spy record` (raw collapsed stacks, idle threads included, classified
   here) attached to every service; the shares it finds are applied to flood A's CPU.

The saga's step deadlines are raised so that a backlog delays orders instead of cancelling them
(`--bench-timeouts` keeps them): the mix of work per order stays that of the bench's design.

    python -m bench.profile --stack embedded --orders 2000 --out bench/results/profile/
    python -m bench.profile --report bench/results/profile/    # analyse a finished run again

py-spy's idle detection cannot see uvloop waiting in epoll (without pausing the process it only
guesses from the innermost Python frame), so every sample is kept and sorted here. Idle: a thread
waiting in threading, queue or the executor. Not attributed: the main thread inside the loop's C
code (`Runner.run`: waiting in epoll, or libuv/httptools work), stacks whose innermost line is an
`await` (a suspended coroutine read stale, or one running in C) and stacks py-spy read empty (seen
around SQLAlchemy's greenlets, mostly while idle). Each thread's CPU time (schedstat) is spread
over its active samples: the main thread's over the rest of its samples, other Python threads'
over theirs; threads of C libraries (librdkafka) are groups of their own. A `--gil` cross-check
found the loop's own C code under 3% of the samples holding the GIL, so spreading the main
thread's CPU over its Python samples loses little; time in the kernel is printed apart. Stacks
run inside a SQLAlchemy greenlet start at the greenlet (no caller). With the machine's cores
oversubscribed py-spy samples late and in bursts: shares stay meaningful, absolute rates do not.
The raw files (<phase>-<service>.txt) open as they are in https://www.speedscope.app.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import linecache
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import uvloop
from tests.e2e.system import Shop, System

from bench.stacks import PgWatch, stack_env
from bench.stats import process_cpu_s as cpu_seconds
from bench.system_bench import AUTOPILOTS, NO_RATE_LIMITS, Bench, ready_to_order

SQLCOUNT = Path(__file__).parent / "sqlcount"  # a sitecustomize that counts SQLite statements
ROOTS = [
    Path(__file__).parents[1] / "src",
    Path(sysconfig.get_paths()["purelib"]),
    Path(sysconfig.get_paths()["stdlib"]),
    SQLCOUNT,
]


# ---------------------------------------------------------------- running and recording


async def record(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {"stack": args.stack, "rate": args.rate, "phases": {}}
    with tempfile.TemporaryDirectory(prefix="pzprofile-") as tmp:
        workdir = Path(tmp)
        sql_dir = workdir / "sql"
        sql_dir.mkdir()
        pause = sql_dir / "pause"
        async with stack_env(args.stack, workdir) as env:
            extra = {
                "PYTHONPATH": os.pathsep.join(filter(None, [str(SQLCOUNT), os.environ.get("PYTHONPATH")])),
                "PZPROFILE_SQL_DIR": str(sql_dir),
            }
            if not args.bench_timeouts:  # a backlog then delays orders instead of cancelling them
                extra.update({f"SAGA_{step}_TIMEOUT_S": "1800" for step in ("RESERVE", "PAYMENT", "COMPENSATION")})
            system = System(
                workdir,
                {**env, **AUTOPILOTS, **NO_RATE_LIMITS, "LOG_LEVEL": "WARNING", "PAYMENT_LATENCY_MS": "20", **extra},
            )
            await system.start()
            shop = Shop(system)
            try:
                menu = await ready_to_order(shop)
                bench = PatientBench(system.ports["gateway"], menu, system.env)
                pids = meta["pids"] = {name: await system.pid(name) for name in system.ports}
                assert system.process is not None
                watch = Watch(
                    pids,
                    {"supervisor": system.process.pid},
                    sql_dir,
                    PgWatch(env) if args.stack != "embedded" else None,
                )
                say(f"warming up with {args.warmup} orders")
                await bench.flood(args.warmup, args.concurrency)
                await asyncio.sleep(3)  # the warm-up's tail drains
                say(f"idle for {args.idle_seconds:.0f} s, not profiled")
                meta["phases"]["idle"] = await watch.phase(asyncio.sleep(args.idle_seconds))
                say(f"idle for {args.idle_profile_seconds:.0f} s, profiled")
                pause.touch()  # statements are counted in the phases that are not profiled
                await asyncio.sleep(1)
                with Spies(pids, out, "idle", args.rate) as spies:
                    meta["phases"]["idle-profiled"] = await watch.phase(asyncio.sleep(args.idle_profile_seconds), spies)
                say(f"flood A: {args.orders} orders from {args.concurrency} clients, not profiled")
                pause.unlink()
                await asyncio.sleep(1)
                meta["phases"]["flood"] = await watch.phase(bench.flood(args.orders, args.concurrency), bench=bench)
                say(f"flood B: {args.orders} orders from {args.concurrency} clients, profiled")
                pause.touch()
                await asyncio.sleep(1)
                with Spies(pids, out, "flood", args.rate) as spies:
                    meta["phases"]["flood-profiled"] = await watch.phase(
                        bench.flood(args.orders, args.concurrency), spies, bench=bench
                    )
                now = {n: await system.pid(n) for n in pids}
                restarted = sorted(n for n, p in pids.items() if p != now[n])
                if restarted:
                    meta["restarted"] = restarted
                    say(f"WARNING: restarted during the run: {restarted}")
            finally:
                await shop.close()
                system.stop()
    return meta


def say(text: str) -> None:
    print(text, flush=True)


class PatientBench(Bench):
    """Also waits for orders the read model does not list yet (right after a short flood). Each
    look reads every order back, page by page (on the Kafka stack, looking every second while
    the read model caught up was 8% of the orders service's CPU in a profile), so the looks
    grow apart: 1, 2, 4, then 8 s."""

    async def settled(self, ids: list[str], timeout: float = 900) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        pause = 1.0
        while True:
            try:
                return await super().settled(ids, timeout)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 8.0)


class Spies:
    """One `py-spy record` per service process; stopped (and its file written) on exit."""

    def __init__(self, pids: dict[str, int], out: Path, phase: str, rate: int) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.paths = {svc: out / f"{phase}-{svc}.txt" for svc in pids}
        self.procs = {
            svc: subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(rate),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--idle",
                    "--full-filenames",
                    "-o",
                    str(self.paths[svc]),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for svc, pid in pids.items()
        }
        for p in self.procs.values():
            # Ahead of the system in the queue for a core, so that it samples on time (a starved
            # py-spy samples in bursts); allowed as root only.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, p.pid, -10)
        time.sleep(1.5)  # they attach
        self.stopped = False

    def stop(self) -> None:
        """Stop sampling now (again: nothing); the files are written, and waited for, on exit.
        Only a signal: this runs on the bench's event loop, between its reads."""
        if self.stopped:
            return
        self.stopped = True
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs.values() if p.poll() is None)

    def __enter__(self) -> Spies:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        for svc, p in self.procs.items():
            try:
                _, err = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                err = b"timed out writing its file"
            if not self.paths[svc].exists():
                say(f"py-spy wrote nothing for {svc}: {err.decode(errors='replace')[-300:]}")


class Watch:
    """CPU (and per thread: on-CPU and runnable time), SQL and PostgreSQL counters around a phase."""

    def __init__(self, pids: dict[str, int], others: dict[str, int], sql_dir: Path, pg: PgWatch | None) -> None:
        self.pids, self.others, self.sql_dir, self.pg = pids, others, sql_dir, pg

    async def phase(
        self, work: Awaitable[Any], spies: Spies | None = None, bench: Bench | None = None
    ) -> dict[str, Any]:
        """What the processes spent while `work` ran. With `bench` (whose flood `work` is), the
        phase ends once every order has finished, before the bench reads them all back (a
        page of views after another: the bench's work, not the orders'), as the system bench
        measures; the profilers stop there too."""
        procs = {**self.pids, **self.others}
        cpu0, sched0 = {n: cpu_seconds(p) for n, p in procs.items()}, {n: schedstat(p) for n, p in self.pids.items()}
        kernel0 = {n: system_seconds(p) for n, p in procs.items()}
        sql0, pg0 = self.sql(), await self.pg.snapshot() if self.pg else None
        spy0 = spies.cpu() if spies else 0.0
        began, self0 = time.monotonic(), rusage_self()
        end: dict[str, Any] = {}

        async def settled() -> None:
            if end:
                return  # the first time every order had finished
            end["seconds"], end["loadgen"] = time.monotonic() - began, rusage_self() - self0
            end["cpu"] = {n: cpu_seconds(p) - cpu0[n] for n, p in procs.items()}
            end["kernel"] = {n: system_seconds(p) - kernel0[n] for n, p in procs.items()}
            end["sched"] = {n: schedstat(p, sched0[n]) for n, p in self.pids.items()}
            end["spy_cpu"] = spies.cpu() - spy0 if spies else 0.0
            end["pg"] = await self.pg.snapshot() if self.pg else None
            if spies is not None:
                spies.stop()

        if bench is not None:
            bench.on_settled = settled
        try:
            result = await work
        finally:
            if bench is not None:
                bench.on_settled = None
        await settled()  # (no bench, or it never said: the phase ends with the work)
        seconds, cpu = end["seconds"], end["cpu"]
        cpu["load generator"] = end["loadgen"]
        kernel, sched, spy_cpu = end["kernel"], end["sched"], end["spy_cpu"]
        await asyncio.sleep(1.2)  # the SQL counts are written every 0.5 s, PostgreSQL's statistics every 1 s
        # (statements and rows as counted by then: a few reads of the bench's among thousands)
        sql = {s: dict(Counter(v) - Counter(sql0.get(s, {}))) for s, v in self.sql().items()}
        pg = None
        if self.pg and pg0 and end["pg"]:  # the backends' CPU when it ended, their counts since
            pg = self.pg.delta(pg0, {**end["pg"], "stats": (await self.pg.snapshot())["stats"]})
        return {
            "seconds": seconds,
            "cpu_s": cpu,
            "system_s": kernel,
            "sched": sched,
            "sql": sql,
            "pg": pg,
            "py_spy_cpu_s": spy_cpu,
            "result": result if isinstance(result, dict) else None,
        }

    def sql(self) -> dict[str, dict[str, int]]:
        counts = {}
        for svc, pid in self.pids.items():
            path = self.sql_dir / f"{pid}.json"
            if path.exists():
                counts[svc] = json.loads(path.read_text())
        return counts


def schedstat(pid: int, since: dict[str, Any] | None = None) -> dict[str, Any]:
    """Seconds on a CPU and waiting for one: the main thread, the other Python threads together,
    and threads of C libraries by name (librdkafka's `rdk:*`, libuv's workers), which py-spy
    cannot see. Python threads carry the process's own name; C libraries name theirs."""
    main, rest, native = [0.0, 0.0], [0.0, 0.0], defaultdict[str, float](float)
    tasks = Path(f"/proc/{pid}/task")
    own = (tasks / str(pid) / "comm").read_text().strip()
    for task in tasks.iterdir():
        try:
            run, wait = (int(x) / 1e9 for x in (task / "schedstat").read_text().split()[:2])
            name = (task / "comm").read_text().strip()
        except (OSError, ValueError):
            continue  # a thread that just ended
        if task.name == str(pid) or name == own:
            into = main if task.name == str(pid) else rest
            into[0] += run
            into[1] += wait
        else:
            native[re.split(r"[:\-]", name, maxsplit=1)[0]] += run
    if since:
        main = [a - b for a, b in zip(main, since["main"], strict=True)]
        rest = [a - b for a, b in zip(rest, since["rest"], strict=True)]
        native = defaultdict(float, {k: v - since.get("native", {}).get(k, 0.0) for k, v in native.items()})
    return {"main": main, "rest": rest, "native": dict(native)}


def system_seconds(pid: int) -> float:
    """CPU a process has spent in the kernel so far (Linux)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[12]) / os.sysconf("SC_CLK_TCK")


def rusage_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------- reading the stacks

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
LOOP = "event loop's C code (no Python frame sampled)"
AWAIT = re.compile(r"\bawait\b")
GREEN = "sqlalchemy async+greenlet"
SQLITE = "sqlite3 (kit/sqlite_driver.py + SQLite C)"
GROUPS = [  # (file prefix, group); the first that matches wins
    ("sqlalchemy/sql/", "sqlalchemy compile/constructs"),
    ("sqlalchemy/engine/", "sqlalchemy execute/result"),
    ("sqlalchemy/dialects/", "sqlalchemy dialect (type processors)"),
    ("sqlalchemy/pool/", "sqlalchemy pool"),
    ("sqlalchemy/ext/asyncio/", GREEN),
    ("sqlalchemy/connectors/asyncio", GREEN),
    ("sqlalchemy/util/concurrency", GREEN),
    ("sqlalchemy/util/_concurrency", GREEN),
    ("greenlet/", GREEN),
    ("sqlalchemy/orm/", "sqlalchemy orm"),
    ("sqlalchemy/", "sqlalchemy other"),
    ("pizzeria/kit/sqlite_driver.py", SQLITE),
    ("sqlite3/", SQLITE),
    ("asyncpg/", "asyncpg"),
    ("confluent_kafka/", "confluent-kafka"),
    ("pydantic", "pydantic"),
    ("orjson", "orjson"),
    ("json/", "json (stdlib)"),
    ("opentelemetry/", "opentelemetry"),
    ("structlog/", "structlog/logging"),
    ("logging/", "structlog/logging"),
    ("prometheus_client/", "prometheus_client"),
    *((p, "httpx/httpcore") for p in ("httpx/", "httpcore/", "h11/", "anyio/", "sniffio/", "ssl.py")),
    *(
        (p, "uvicorn/starlette/fastapi")
        for p in ("uvicorn/", "starlette/", "fastapi/", "httptools/", "multipart/", "python_multipart/")
    ),
    ("redis/", "redis"),
    ("jwt/", "jwt/crypto"),
    ("cryptography/", "jwt/crypto"),
    *((p, "asyncio (Python part)") for p in ("asyncio/", "uvloop/", "selectors.py")),
    *((p, "threads") for p in ("threading.py", "concurrent/", "queue.py")),
    ("sitecustomize.py", "SQL counter (bench)"),
]
LOOP_LEAVES = ("asyncio/runners.py", "uvloop/__init__.py", "uvicorn/_compat.py")
IDLE_LEAVES = (
    ("threading.py", "wait"),
    ("threading.py", "_wait_for_tstate_lock"),
    ("selectors.py", "select"),
    ("queue.py", "get"),
    ("concurrent/futures/thread.py", "_worker"),
)
ROOT_FILES = (
    "<frozen runpy>",
    "pizzeria/__main__.py",
    "pizzeria/cli.py",
    "uvicorn/server.py",
    "uvicorn/main.py",
    "uvicorn/_compat.py",
    "threading.py",
    "asyncio/runners.py",
    "uvloop/__init__.py",
)


def short(file: str) -> str:
    for marker in ("site-packages/", "/src/", "/bench/sqlcount/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return re.sub(r"^.*/lib/python3\.\d+/", "", file)


def group(file: str) -> str:
    for prefix, name in GROUPS:
        if file.startswith(prefix):
            return name
    if file.startswith("pizzeria/"):
        return file
    top = file.split("/", 1)[0].removesuffix(".py")
    return "stdlib (other)" if top in sys.stdlib_module_names or top.startswith("<frozen") else f"other: {top}"


class Profile:
    """One collapsed-stack file, sorted into idle, loop and active samples. Active samples are
    counted by function (self and inclusive), group and line, for the main thread and for the
    other threads apart, so that each can be weighted by that thread's own CPU time."""

    KINDS = ("self_fn", "incl_fn", "group", "incl_group", "line", "matched")

    def __init__(self, path: Path, patterns: Sequence[str] = ()) -> None:
        self.ticks = self.loop = self.idle = self.unreadable = self.awaiting = 0
        self.active = {"main": 0, "green": 0, "rest": 0}
        self.counts: dict[str, dict[str, Counter[Any]]] = {t: {k: Counter() for k in self.KINDS} for t in self.active}
        if not path.exists():
            return
        for row in path.read_text().splitlines():
            stack, _, n = row.rpartition(" ")
            if not n.isdigit():
                continue
            if not stack:  # the main thread, no frame readable (seen mostly while the process idles)
                self.ticks += int(n)
                self.unreadable += int(n)
                continue
            count, frames = int(n), []
            for text in stack.split(";"):
                m = FRAME.match(text)
                frames.append((m["func"], short(m["file"]), int(m["line"] or 0)) if m else (text, "?", 0))
            func, file, line = frames[-1]
            root = frames[0][1]
            thread = "rest" if root == "threading.py" else "main" if root == "<frozen runpy>" else "green"
            if thread != "rest":
                self.ticks += count  # every sample has the main thread (its stack may start in a greenlet)
            if any(file == f and (func == name or func.endswith("." + name)) for f, name in IDLE_LEAVES) or any(
                fl == "sitecustomize.py" for _, fl, _ in frames
            ):  # the SQL counter's thread
                self.idle += count
                continue
            if thread != "rest" and file in LOOP_LEAVES:
                self.loop += count
                continue
            if thread != "rest" and AWAIT.search(source(file, line)):
                self.awaiting += count  # a suspended coroutine (a stale stack) or one running in C
                continue
            self.active[thread] += count
            c = self.counts[thread]
            c["self_fn"][f"{func} ({file})"] += count
            c["group"][group(file)] += count
            c["line"][(file, line, func)] += count
            for key in {f"{fn} ({fl})" for fn, fl, _ in frames if fn != "<module>" and fl not in ROOT_FILES}:
                c["incl_fn"][key] += count
            for g in {group(fl) for fn, fl, _ in frames if fl not in ROOT_FILES}:
                c["incl_group"][g] += count
            for pattern in patterns:
                if any(re.search(pattern, f"{fn} ({fl})") for fn, fl, _ in frames if fl not in ROOT_FILES):
                    c["matched"][pattern] += count

    def weigh(self, phase: dict[str, Any], svc: str) -> Weighed:
        """CPU seconds over the phase by function, group and line: the main thread's CPU time
        (schedstat) spread over its active samples, the other Python threads' over theirs, and
        the threads of C libraries as groups of their own."""
        run = phase["sched"][svc]["main"][0]
        rest_run = phase["sched"][svc]["rest"][0]
        main = self.active["main"] + self.active["green"]
        weights = {
            "main": run / max(main, 1),
            "green": run / max(main, 1),
            "rest": rest_run / max(self.active["rest"], 1),
        }
        w = Weighed({k: Counter() for k in self.KINDS})
        for thread, weight in weights.items():
            for kind, counter in self.counts[thread].items():
                for key, n in counter.items():
                    w.counts[kind][key] += n * weight
        if not main:
            w.counts["group"][LOOP] += run
        for name, seconds in phase["sched"][svc].get("native", {}).items():
            w.counts["group"][f"C library threads ({name})"] += seconds
        if rest_run and not self.active["rest"]:
            w.counts["group"]["threads"] += rest_run
        w.total = sum(w.counts["group"].values())
        return w


class Weighed:
    """A profile's counters in CPU seconds."""

    def __init__(self, counts: dict[str, Counter[Any]]) -> None:
        self.counts, self.total = counts, 0.0

    def top(self, kind: str, n: int) -> list[tuple[Any, Any]]:
        return self.counts[kind].most_common(n)


def source(file: str, line: int) -> str:
    for root in ROOTS:
        try:
            text = linecache.getline(str(root / file), line).strip()
        except (OSError, ValueError):  # a frame read while it changed (nonblocking): garbage
            return ""
        if text:
            return text[:100]
    return ""


def pct(n: float, total: float) -> str:
    return f"{100 * n / total:5.1f}%" if total else "    -"


def report(out: Path, meta: dict[str, Any], top: int = 15, patterns: Sequence[str] = ()) -> str:
    lines: list[str] = []
    put = lines.append
    flood, fprof, idle = meta["phases"]["flood"], meta["phases"]["flood-profiled"], meta["phases"]["idle"]
    orders = (flood.get("result") or {}).get("orders", 1)
    porders = (fprof.get("result") or {}).get("orders", 1)
    put(f"# CPU per order, stack {meta['stack']}: {orders} orders per flood, py-spy at {meta['rate']} Hz on flood B")
    for name, ph in (("flood A (not profiled)", flood), ("flood B (profiled)", fprof)):
        r = ph.get("result") or {}
        if r:
            put(
                f"{name}: {ph['seconds']:.0f} s, accepted {r['accepted_per_s']:.0f}/s, completed "
                f"{r['completed_per_s']:.1f}/s, delivered {r['delivered_per_s']:.1f}/s "
                f"({100 * r['delivered_per_s'] / r['completed_per_s']:.0f}% of the orders; the others cancelled)"
            )
    put(f"py-spy itself during flood B: {fprof['py_spy_cpu_s'] / porders * 1000:.1f} ms/order")
    put("")
    put(
        f"{'process':<16}{'A: ms/order':>12}{'kernel':>8}{'B: ms/order':>12}{'idle ms/s':>10}  "
        "(A: not profiled; B: with py-spy attached; idle: no orders, not profiled)"
    )
    for name, seconds in sorted(flood["cpu_s"].items(), key=lambda kv: -kv[1]):
        b = fprof["cpu_s"].get(name, 0.0) / porders * 1000
        kernel = flood.get("system_s", {}).get(name)
        put(
            f"{name:<16}{seconds / orders * 1000:>12.2f}{pct(kernel, seconds) if kernel is not None else '':>8}"
            f"{b:>12.2f}{idle['cpu_s'].get(name, 0.0) / idle['seconds'] * 1000:>10.1f}"
        )
    svc_total = sum(flood["cpu_s"][s] for s in meta["pids"]) / orders * 1000
    put(
        f"{'services':<16}{svc_total:>12.2f}{sum(fprof['cpu_s'][s] for s in meta['pids']) / porders * 1000:>12.2f}"
        f"{sum(idle['cpu_s'][s] for s in meta['pids']) / idle['seconds'] * 1000:>10.1f}"
    )
    if flood.get("pg"):
        put("")
        put(
            f"{'PostgreSQL, per order':<22}{'commits':>8}{'inserted':>9}{'updated':>8}{'deleted':>8}{'fetched':>8}"
            f"{'backend CPU ms':>15}"
        )
        for svc, d in flood["pg"].items():
            put(
                f"{svc:<22}{d['xact_commit'] / orders:>8.1f}{d['tup_inserted'] / orders:>9.1f}"
                f"{d['tup_updated'] / orders:>8.1f}{d['tup_deleted'] / orders:>8.1f}{d['tup_fetched'] / orders:>8.0f}"
                f"{d['backend_cpu_s'] / orders * 1000:>15.2f}"
            )

    # Each process: flood B's split, scaled to flood A's CPU per order (ms).
    weighed: dict[str, Weighed] = {}
    for svc in meta["pids"]:
        p = Profile(out / f"flood-{svc}.txt", patterns)
        if p.ticks:
            w = weighed[svc] = p.weigh(fprof, svc)
            scale = flood["cpu_s"][svc] / orders * 1000 / (w.total or 1)
            for counter in w.counts.values():
                for key in counter:
                    counter[key] *= scale
            w.total *= scale
    for title, kind in (("CPU per order by group", "group"), ("hottest functions, self", "self_fn")):
        put("")
        put(f"## all services: {title} (flood B's shares x flood A's CPU per process)")
        summed: Counter[Any] = Counter()
        for w in weighed.values():
            summed.update(w.counts[kind])
        grand = sum(w.total for w in weighed.values())
        for key, v in summed.most_common(30 if kind == "group" else 20):
            put(f"  {v:7.2f} ms {pct(v, grand)}  {key}")

    for pattern in patterns:
        put("")
        put(f"## stacks through /{pattern}/ (inclusive, ms/order and share of the process)")
        hits = {svc: w.counts["matched"][pattern] for svc, w in weighed.items()}
        put(
            "  "
            + ", ".join(
                f"{svc} {v:.2f} ({pct(v, weighed[svc].total).strip()})" for svc, v in hits.items() if v >= 0.005
            )
            + f"; all services {sum(hits.values()):.2f} ms"
        )
    if patterns:
        return "\n".join(lines) + "\n"

    for svc in sorted(weighed, key=lambda s: -flood["cpu_s"][s]):
        w, p = weighed[svc], Profile(out / f"flood-{svc}.txt")
        (run, wait), rest = fprof["sched"][svc]["main"], fprof["sched"][svc]["rest"][0]
        put("")
        put(f"## {svc}: {w.total:.2f} ms CPU/order")
        kernel = flood.get("system_s", {}).get(svc)
        put(
            f"  flood B: main thread {run:.1f} s on a CPU ({wait:.1f} s waiting for one), other Python threads "
            f"{rest:.1f} s; {p.ticks} samples of the main thread ({p.ticks / fprof['seconds']:.0f}/s): "
            f"{p.active['main'] + p.active['green']} active, {p.loop} in the loop (waiting, or its C code), "
            f"{p.awaiting} at an await, {p.unreadable} unreadable; {p.active['rest']} active in other threads"
            + (f". In the kernel (flood A): {100 * kernel / flood['cpu_s'][svc]:.0f}% of the CPU" if kernel else "")
        )
        for title, kind, n in (
            ("CPU by group", "group", top),
            ("functions, self", "self_fn", top),
            ("functions, inclusive (loop and entry frames left out)", "incl_fn", top),
            ("lines, self", "line", 10),
        ):
            put(f"  {title}:   share  ms/order")
            for key, v in w.top(kind, n):
                label = f"{key[0]}:{key[1]} {key[2]}: {source(key[0], key[1])}" if kind == "line" else key
                extra = f"   (inclusive {pct(w.counts['incl_group'][key], w.total).strip()})" if kind == "group" else ""
                put(f"    {pct(v, w.total)} {v:7.2f}  {label}{extra}")
        for label, counts, per, unit in (
            ("per order", flood["sql"].get(svc), orders, ""),
            ("per second idle", idle["sql"].get(svc), idle["seconds"], "/s"),
        ):
            by_db: dict[str, Counter[str]] = {}
            for key, n in (counts or {}).items():
                db, _, kind = key.partition(" ")
                by_db.setdefault(db, Counter())[kind] += n
            for db, kinds in sorted(by_db.items()):
                put(
                    f"  SQLite statements {label} on {db}: {sum(kinds.values()) / per:.1f}{unit} = "
                    + ", ".join(f"{k} {n / per:.2f}" for k, n in kinds.most_common(14) if n / per >= 0.01)
                )
        ip = Profile(out / f"idle-{svc}.txt")
        if ip.ticks:
            iw = ip.weigh(meta["phases"]["idle-profiled"], svc)
            put(
                f"  idle: {idle['cpu_s'][svc] / idle['seconds'] * 1000:.1f} ms CPU/s; by group: "
                + ", ".join(f"{g} {pct(v, iw.total).strip()}" for g, v in iw.top("group", 5))
            )
            put(
                "  idle, hottest functions: "
                + "; ".join(f"{fn} {pct(v, iw.total).strip()}" for fn, v in iw.top("self_fn", 6))
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="embedded", choices=["embedded", "postgres+kafka"])
    parser.add_argument("--orders", type=int, default=2000, help="orders in each of the two floods")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=200, help="orders placed before anything is measured")
    parser.add_argument("--idle-seconds", type=float, default=20)
    parser.add_argument("--idle-profile-seconds", type=float, default=10)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument(
        "--bench-timeouts",
        action="store_true",
        help="keep the saga's own step deadlines (on a slow machine a flood then cancels orders "
        "that waited too long, and the mix of work per order changes)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/profile"))
    parser.add_argument("--report", type=Path, metavar="DIR", help="only analyse the run recorded in DIR")
    parser.add_argument(
        "--inclusive",
        nargs="+",
        default=[],
        metavar="REGEX",
        help="with --report: CPU per order of the stacks with a frame matching each REGEX "
        "(matched against 'function (file)')",
    )
    args = parser.parse_args()
    out = args.report or args.out
    if args.report:
        meta = json.loads((out / "meta.json").read_text())
    else:
        out.mkdir(parents=True, exist_ok=True)
        meta = uvloop.run(record(args, out))
        (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    text = report(out, meta, patterns=args.inclusive)
    if not args.inclusive:
        (out / "report.txt").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
