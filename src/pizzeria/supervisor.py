"""`pizzeria up`: run the whole system as child processes, one per service (or per replica).

Applies every migration, creates the topics, starts every service at once (none needs another
to be ready to start: they meet through the broker, and call each other with retries and
breakers) and reports each as ready in the registry's order, then starts the processes that are
clients of the running system; restarts a process that dies with exponential backoff, and on
Ctrl-C or SIGTERM stops them in waves (`Supervisor._stop_waves`). On Linux the processes are
forked from a zygote that imported their libraries while the databases and topics were prepared
(`zygote.py`); a restart after the code on disk changed starts afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx

from pizzeria.chassis.addresses import REPLICA_VARIABLE, replica_label, url_for
from pizzeria.contracts.topology import BUS_SERVICES, MONITOR, all_topics, bus_grants
from pizzeria.kit.migrations import APPLIED_VARIABLE, upgrade
from pizzeria.kit.settings import Settings
from pizzeria.messaging.broker import BrokerError
from pizzeria.messaging.connect import broker_from_settings
from pizzeria.messaging.tables import MESSAGING_MIGRATIONS
from pizzeria.messaging.topics import topic_specs
from pizzeria.registry import BY_NAME, EDGE, OUTSIDE, SERVICES, ServiceEntry
from pizzeria.zygote import ForkedProcess, Zygote, ZygoteGone

READY_TIMEOUT_S = 90.0
STABLE_AFTER_S = 30.0  # a service up this long has its restart backoff reset


def say(text: str) -> None:
    print(text, flush=True)


async def migrate_all(settings: Settings, services: Sequence[ServiceEntry] = SERVICES) -> None:
    for entry in services:
        if entry.has_database:
            await upgrade(settings.database_url_for(entry.name), [MESSAGING_MIGRATIONS, entry.migrations()])


def bus_user(settings: Settings) -> Callable[[str], str]:
    """service → the Kafka user it logs in as."""
    return lambda service: settings.kafka_login(service).username


def bus_users(settings: Settings) -> dict[str, str]:
    """The Kafka user of every service (and of the monitor, when it has a password) → its
    password, from `<SERVICE>_KAFKA_SASL_PASSWORD` (else KAFKA_SASL_PASSWORD)."""
    users: dict[str, str] = {}
    missing: list[str] = []
    for name in (*BUS_SERVICES, MONITOR):
        login = settings.kafka_login(name)
        if login.password:
            users[login.username] = login.password
        elif name != MONITOR:
            missing.append(f"{name.upper()}_KAFKA_SASL_PASSWORD")
    if missing:
        raise SystemExit(f"pizzeria: the services' Kafka users need their passwords: set {', '.join(missing)}")
    return users


async def create_topics(settings: Settings, *, wait: float = 120.0) -> None:
    """Create every topic, waiting (up to `wait` seconds) for a broker that is still starting.
    On a broker that asks who is there (SASL), also give every service its user and make the
    ACLs what the topology allows (`pizzeria kafka-acls`)."""
    secured = settings.on_kafka and settings.kafka_admin_login().sasl
    users = bus_users(settings) if secured else {}
    deadline = time.monotonic() + wait
    while True:
        broker = broker_from_settings(settings, client_id="pizzeria-admin", admin=True)
        try:
            await broker.start()
            await broker.create_topics(
                topic_specs(
                    all_topics(),
                    partitions=settings.topic_partitions,
                    replication_factor=settings.topic_replication_factor,
                    min_insync_replicas=settings.topic_min_insync_replicas,
                )
            )
            if secured:
                from pizzeria.messaging.kafka import KafkaBroker

                assert isinstance(broker, KafkaBroker)
                changes = await broker.apply_access(
                    users, bus_grants(bus_user(settings)), mechanism=settings.kafka_sasl_mechanism
                )
                say(
                    f"pizzeria: Kafka users {', '.join(changes.users)} set; "
                    f"{len(changes.added)} ACLs added, {len(changes.removed)} removed"
                )
            return
        except BrokerError as exc:
            if time.monotonic() > deadline:
                raise
            say(f"pizzeria: waiting for the broker ({exc})")
            await asyncio.sleep(2.0)
        finally:
            await broker.close()


def gateway_proxies(settings: Settings) -> str:
    """The gateway's addresses, as TRUSTED_PROXIES of the services behind it (empty when its
    URL names a host by a name other than localhost: set TRUSTED_PROXIES yourself then)."""
    host = urlsplit(url_for(settings, "gateway")).hostname or ""
    try:
        address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError:
        return ""
    # Bound to every interface (0.0.0.0), it reaches the others on this host through loopback.
    return "127.0.0.1,::1" if address.is_loopback or address.is_unspecified else str(address)


def replica_problems(settings: Settings, replicas: Mapping[str, int]) -> list[str]:
    """Why these replica counts cannot run (empty when they can). Replicas of a service share
    its database, its consumer groups and its caches: that takes PostgreSQL, where one relay
    per database publishes (an advisory lock) and background work is claimed with SKIP
    LOCKED, and Redis for the caches. The broker may be Kafka or the SQL log: both share a
    group's partitions between its members."""
    problems = []
    for name, count in replicas.items():
        entry = BY_NAME[name]
        if count == 1:
            continue
        if entry.single:
            problems.append(f"{name} runs once: {entry.single}")
        elif entry.has_database and settings.database_url_for(name).startswith("sqlite"):
            problems.append(
                f"replicas of {name} need its database on PostgreSQL (set {name.upper()}_DATABASE_URL or "
                "DATABASE_URL): a SQLite file takes one writer at a time and has no lock to elect one outbox "
                "relay among processes"
            )
    if any(count > 1 for count in replicas.values()) and not settings.redis_url:
        problems.append("replicas share their caches through Redis: set REDIS_URL")
    return problems


async def listening(url: str) -> bool:
    """Whether something accepts connections at the URL's host and port."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.open_connection(parts.hostname, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@dataclass
class Child:
    entry: ServiceEntry
    url: str
    log_path: Path
    replica: int = 1
    process: asyncio.subprocess.Process | ForkedProcess | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.5
    log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return replica_label(self.entry.name, self.replica)


async def _stop(child: Child, grace: float) -> None:
    """SIGTERM, and SIGKILL if it is still there `grace` seconds later."""
    proc = child.process
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):  # unlike wait_for on 3.11, never eats a cancellation
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def _answered_by(child: Child, ready: Any) -> bool:
    """Whether a `/ready` answer from the child's port is the child's own, not another process's
    that holds the port (the child then fails to bind it and ends). It names its pid to an
    operations caller (the supervisor is one, on loopback, unless OPS_NETWORKS leaves loopback
    out), else only its service."""
    if not isinstance(ready, dict):
        return False
    if "pid" in ready:
        return child.process is not None and ready["pid"] == child.process.pid
    return bool(ready.get("service") == child.entry.name)


class Supervisor:
    """Starts, watches, restarts and stops the service processes."""

    def __init__(
        self,
        settings: Settings,
        services: Sequence[ServiceEntry] = SERVICES,
        *,
        replicas: Mapping[str, int] | None = None,
        restart: bool = True,
        echo_logs: bool = False,
    ) -> None:
        """`replicas`: how many processes of a service to run (1 for those it does not name);
        check them with `replica_problems` first."""
        self.settings = settings
        self.replicas = dict(replicas or {})
        self.restart = restart
        self.echo_logs = echo_logs
        self.log_dir = settings.var_dir / "log"
        self.children = [
            Child(e, url_for(settings, e.name, n), self.log_dir / f"{replica_label(e.name, n)}.log", replica=n)
            for e in services
            for n in range(1, self.replicas.get(e.name, 1) + 1)
        ]
        self.stopping = asyncio.Event()
        self._http: httpx.AsyncClient | None = None
        self._zygote: Zygote | None = None

    @staticmethod
    def _base_env() -> dict[str, str]:
        # The administrator's Kafka password is the supervisor's, to create topics, users and
        # ACLs: no service gets it (each logs in as itself).
        return {k: v for k, v in os.environ.items() if k.upper() not in ("KAFKA_ADMIN_PASSWORD", APPLIED_VARIABLE)}

    def _env(self, child: Child, parent: int) -> dict[str, str]:
        """The child's environment; `parent` is the process that starts it (this one, or the
        zygote)."""
        env = self._base_env()
        if child.restarts == 0:
            # `run` applied its migrations a moment ago; a restart applies whatever its code has.
            env[APPLIED_VARIABLE] = str(parent)
        env["PIZZERIA_VAR_DIR"] = str(self.settings.var_dir.resolve())
        env.setdefault("PYTHONUNBUFFERED", "1")
        # Which replica this is (its port follows), and how many of each service run (the
        # gateway spreads requests over them).
        env[REPLICA_VARIABLE] = str(child.replica)
        env.update({f"{name.upper()}_REPLICAS": str(count) for name, count in self.replicas.items()})
        if child.entry.name != EDGE and "TRUSTED_PROXIES" not in {k.upper() for k in os.environ}:
            # Behind the gateway the peer is the gateway: believe the client address it forwards
            # (identity throttles sign-ins by it), and nobody else's.
            env["TRUSTED_PROXIES"] = gateway_proxies(self.settings)
        return env

    async def _spawn(self, child: Child) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self._zygote is not None and self._zygote.alive and not (child.restarts and self._zygote.outdated()):
            try:
                child.process = await self._zygote.spawn(
                    ["serve", child.entry.name],
                    self._env(child, self._zygote.process.pid),
                    None if self.echo_logs else child.log_path,
                )
            except ZygoteGone:
                say("pizzeria: the zygote is gone; starting processes afresh")
            else:
                child.started_at = time.monotonic()
                return
        if child.log_file is None:
            child.log_file = child.log_path.open("ab")
        child.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pizzeria",
            "serve",
            child.entry.name,
            env=self._env(child, os.getpid()),
            stdout=child.log_file if not self.echo_logs else None,
            stderr=child.log_file if not self.echo_logs else None,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order
        )
        child.started_at = time.monotonic()

    async def _wait_ready(self, child: Child, timeout: float = READY_TIMEOUT_S) -> bool:
        """Whether the child answers `/ready` within `timeout` seconds of its start."""
        deadline = child.started_at + timeout
        if self._http is None:
            # One client for every wait (making one costs more than many requests); no
            # connection kept, so a restarted child is never asked on its predecessor's.
            self._http = httpx.AsyncClient(timeout=2.0, limits=httpx.Limits(max_keepalive_connections=0))
        while time.monotonic() < deadline and not self.stopping.is_set():
            if child.process is not None and child.process.returncode is not None:
                return False
            # Until the child listens, a bare connect says so for a tenth of an HTTP request's CPU.
            if await listening(child.url):
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    answer = await self._http.get(f"{child.url}/ready")
                    if answer.status_code == 200 and _answered_by(child, answer.json()):
                        return True
            await asyncio.sleep(0.1)
        return False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        say(f"pizzeria: preparing databases and topics ({self.settings.mode} mode, data in {self.settings.var_dir})")
        # The zygote imports the services' libraries while the databases and topics are prepared.
        zygote = asyncio.create_task(Zygote.start(self._base_env()))
        try:
            await migrate_all(self.settings, [c.entry for c in self.children if c.replica == 1])
            await create_topics(self.settings)
        except BaseException:
            if (started := await zygote) is not None:
                await started.close()
            raise
        self._zygote = await zygote
        failed = await self._start_all()
        if failed is not None:
            say(f"pizzeria: {failed.label} did not become ready; see {failed.log_path}")
            await self.shutdown()
            return 1
        if not self.stopping.is_set():
            say("")
            gateway = url_for(self.settings, "gateway")
            say(f"pizzeria is up: {gateway}  (the shop; staff {gateway}/kitchen, operations {gateway}/ops)")
            say(f"API: {gateway}/api/v1/menu  API docs: {gateway}/docs")
            say(f"Logs: {self.log_dir}/. Press Ctrl-C to stop.")
        watchers = [asyncio.create_task(self._watch(c)) for c in self.children]
        await self.stopping.wait()
        for task in watchers:
            task.cancel()
        await self.shutdown()
        return 0

    def _waves(self) -> list[list[Child]]:
        """The children in the order they start: every service together, then the clients of
        the running system (each wave in the registry's order)."""
        services = [c for c in self.children if not c.entry.client]
        clients = [c for c in self.children if c.entry.client]
        return [wave for wave in (services, clients) if wave]

    def _stop_waves(self) -> list[list[Child]]:
        """The children in the order they stop, each wave at once: the clients of the system,
        then the gateway (so that no request from outside reaches a service that is stopping),
        then every other service, then the payment provider (what payments may be calling until
        it stops)."""
        clients = [c for c in self.children if c.entry.client]
        edge = [c for c in self.children if c.entry.name == EDGE]
        outside = [c for c in self.children if c.entry.name == OUTSIDE]
        others = [c for c in self.children if not c.entry.client and c.entry.name not in (EDGE, OUTSIDE)]
        return [wave for wave in (clients, edge, others, outside) if wave]

    async def _start_all(self) -> Child | None:
        """Start the waves in turn: the child that did not become ready, None when every one
        is ready or a stop was asked for."""
        for wave in self._waves():
            failed = await self._start(wave)
            if self.stopping.is_set():
                return None
            if failed is not None:
                return failed
        return None

    async def _start(self, wave: Sequence[Child]) -> Child | None:
        """Start every child of the wave at once, and say each is up once it and those before
        it in the wave are ready; the first child found not to become ready (or to have been
        waited for when a stop was asked), None when every one is ready."""
        for child in wave:
            await self._spawn(child)
        waits = {asyncio.create_task(self._wait_ready(child)): n for n, child in enumerate(wave)}
        ready = [False] * len(wave)
        told = 0
        try:
            pending = set(waits)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if not task.result():
                        return wave[waits[task]]
                    ready[waits[task]] = True
                while told < len(wave) and ready[told]:
                    child = wave[told]
                    say(f"  {child.label:<14} {child.url:<28} {child.entry.summary}")
                    told += 1
        finally:
            for task in waits:
                task.cancel()
        return None

    async def _watch(self, child: Child) -> None:
        """Restart the child whenever it exits, with backoff."""
        while not self.stopping.is_set():
            assert child.process is not None
            code = await child.process.wait()
            if self.stopping.is_set() or not self.restart:
                return
            if time.monotonic() - child.started_at > STABLE_AFTER_S:
                child.backoff = 0.5
            say(f"pizzeria: {child.label} exited with code {code}; restarting in {child.backoff:.1f}s")
            await asyncio.sleep(child.backoff)
            child.backoff = min(child.backoff * 2, 30.0)
            child.restarts += 1
            await self._spawn(child)
            if await self._wait_ready(child):
                say(f"pizzeria: {child.label} is back (pid {child.process.pid}, restart {child.restarts})")

    async def shutdown(self, grace: float = 15.0) -> None:
        say("pizzeria: stopping...")
        for wave in self._stop_waves():
            ended = await asyncio.gather(*(_stop(child, grace) for child in wave), return_exceptions=True)
            for child, outcome in zip(wave, ended, strict=True):
                if isinstance(outcome, BaseException):  # the next waves are stopped all the same
                    say(f"pizzeria: stopping {child.label} failed: {outcome!r}")
        for child in self.children:
            if child.log_file is not None:
                child.log_file.close()
                child.log_file = None
        if self._zygote is not None:
            await self._zygote.close()
            self._zygote = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        say("pizzeria: stopped.")
