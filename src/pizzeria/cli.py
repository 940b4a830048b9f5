"""The `pizzeria` command: run the system, one service, migrations, topics, dead letters, the
documents generated from the code (AsyncAPI, OpenAPI), and demonstrations of faults survived."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from pizzeria.kit.settings import Settings, get_settings
from pizzeria.messaging.deadletters import DeadLetterStatus
from pizzeria.registry import BY_NAME, SERVICES, SIMULATORS, entry

if TYPE_CHECKING:
    import uvicorn


def refuse_exposure(settings: Settings) -> None:
    """Never listen beyond loopback with the public development secret (see Settings)."""
    problems = settings.exposure_problems()
    if problems:
        raise SystemExit("pizzeria: refusing to start: " + "; ".join(problems))


def replicas_asked(option: str | None, environ: Mapping[str, str]) -> dict[str, int]:
    """The replica counts `pizzeria up` runs: `<SERVICE>_REPLICAS`, then `--replicas` over them."""
    from pizzeria.chassis.addresses import parse_replicas, replicas_from_env

    try:
        return {**replicas_from_env(environ), **(parse_replicas(option) if option is not None else {})}
    except ValueError as exc:
        raise SystemExit(f"pizzeria: replicas: {exc}") from None


def simulators_asked() -> bool:
    """Whether `pizzeria up` also runs the simulated devices (`DEVICE_SIMULATORS`)."""
    from pizzeria.simulators.fleet import FleetSettings

    return FleetSettings().enabled


def cmd_up(args: argparse.Namespace) -> int:
    from pizzeria.supervisor import Supervisor, replica_problems

    settings = get_settings()
    refuse_exposure(settings)
    services = [entry(n) for n in args.only.split(",")] if args.only else list(SERVICES)
    if not args.only and simulators_asked():
        services += SIMULATORS  # last: they are clients of the running system
    replicas = replicas_asked(args.replicas, os.environ)
    problems = replica_problems(settings, replicas)
    if problems:
        raise SystemExit("pizzeria: refusing to start: " + "; ".join(problems))
    supervisor = Supervisor(settings, services, replicas=replicas, restart=not args.no_restart, echo_logs=args.logs)
    return asyncio.run(supervisor.run())


def server_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """How `pizzeria serve` runs an app."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        loop="uvloop",
        http="httptools",
        timeout_keep_alive=30,
        # The client's address is worked out by the app, from TRUSTED_PROXIES only
        # (kit/clientaddr.py): uvicorn must not replace the peer with what a header says.
        proxy_headers=False,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from pizzeria.chassis.addresses import port_for, replica_number
    from pizzeria.kit import heap

    settings = get_settings()
    refuse_exposure(settings)
    try:
        replica = replica_number()
    except ValueError as exc:
        raise SystemExit(f"pizzeria: {exc}") from None
    heap.tune()
    app = entry(args.service).load().create_app(settings)
    heap.Server(server_config(app, settings.host, port_for(args.service, replica))).run()
    return 0


def cmd_zygote(args: argparse.Namespace) -> int:
    from pizzeria import zygote

    zygote.main(args.reply_fd, run=main)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from pizzeria.supervisor import migrate_all

    settings = get_settings()
    services = [entry(n) for n in args.services] if args.services else [s for s in SERVICES if s.has_database]
    asyncio.run(migrate_all(settings, services))
    for s in services:
        print(f"{s.name}: up to date ({settings.database_url_for(s.name)})")
    return 0


def cmd_revision(args: argparse.Namespace) -> int:
    """Autogenerate a migration by comparing the tables in code with an up-to-date scratch DB."""
    import tempfile

    from alembic import command

    from pizzeria.kit.migrations import alembic_config, upgrade_sync
    from pizzeria.messaging.tables import MESSAGING_MIGRATIONS

    migrations = MESSAGING_MIGRATIONS if args.service == "messaging" else entry(args.service).migrations()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/scratch.db"
        upgrade_sync(url, [migrations])
        command.revision(alembic_config(migrations, url), message=args.message, autogenerate=True, rev_id=args.rev_id)
    return 0


def emit(document: str, output: str | None) -> int:
    """A generated document to the file `output` names, else to standard output."""
    if output:
        Path(output).write_text(document)
    else:
        print(document, end="")
    return 0


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from pizzeria.contracts.asyncapi import build

    return emit(render_json(build()), args.output)


def openapi_documents(var_dir: Path) -> dict[str, dict[str, Any]]:
    """The OpenAPI document of every process, by name, as its routes declare it.

    Each app is built as `pizzeria serve` builds it, in embedded mode whatever the environment
    says (so the documents do not depend on it), with `var_dir` as its data directory: building
    an app opens no database, broker or port (that happens in its lifespan, which never runs
    here). The gateway's document has its own routes only (the overview, the operations
    fan-out, its probes): the one it serves at `/openapi.json` is merged at run time from the
    documents of the services it routes to, which are here each on their own."""
    from pizzeria.kit.settings import Settings

    settings = Settings.model_validate(
        {
            "PIZZERIA_MODE": "embedded",
            "PIZZERIA_VAR_DIR": str(var_dir),
            "DATABASE_URL": "sqlite:///{var}/{service}.db",
            "BROKER_URL": "sqllog+sqlite:///{var}/broker.db",
            "REDIS_URL": "",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "",
            "PIZZERIA_FAILPOINTS": "",
        }
    )
    documents: dict[str, dict[str, Any]] = {}
    for service in SERVICES:
        document: dict[str, Any] = service.load().create_app(settings).openapi()
        if document.get("paths"):
            documents[service.name] = document
    return documents


def render_json(document: Any) -> str:
    """A generated document as committed: sorted keys, two-space indent, a final newline."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def cmd_openapi(args: argparse.Namespace) -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pizzeria-openapi-") as var_dir:
        documents = openapi_documents(Path(var_dir))
    if not args.output:
        print(render_json(documents), end="")
        return 0
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, document in documents.items():
        (out / f"{name}.json").write_text(render_json(document))
        print(out / f"{name}.json")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from pizzeria.contracts.topology import all_topics
    from pizzeria.supervisor import create_topics

    settings = get_settings()
    if args.action == "create":
        asyncio.run(create_topics(settings))
    for name in all_topics():
        print(name)
    return 0


def render_acls(settings: Settings) -> str:
    """The ACLs of the Kafka cluster, one rule a line, as `pizzeria kafka-acls` prints them."""
    from pizzeria.contracts.topology import bus_grants
    from pizzeria.supervisor import bus_user

    header = (
        "# Who may do what on Kafka (generated from src/pizzeria/contracts/topology.py by `pizzeria kafka-acls`).\n"
        "# Nothing else is allowed anyone but the administrator (super.users); `pizzeria topics create` applies them.\n"
    )
    return header + "".join(f"{grant.line().rstrip()}\n" for grant in bus_grants(bus_user(settings)))


def cmd_kafka_acls(args: argparse.Namespace) -> int:
    return emit(render_acls(get_settings()), args.output)


async def _dlq(args: argparse.Namespace) -> int:
    import getpass

    from pizzeria.chassis.ops import act_on_dead_letter
    from pizzeria.kit.db import Database
    from pizzeria.kit.errors import ProblemError
    from pizzeria.messaging.deadletters import DeadLetterStore
    from pizzeria.messaging.uow import UnitOfWork

    settings = get_settings()
    names = [args.service] if getattr(args, "service", None) else [s.name for s in SERVICES if s.has_database]
    stores: dict[str, DeadLetterStore] = {}
    databases: list[Database] = []
    try:
        for name in names:
            url = settings.database_url_for(name)
            if _missing_sqlite_file(url):
                continue  # that service never ran here: it has no dead letters
            db = Database(url, pool_size=1)
            databases.append(db)
            store = DeadLetterStore(db, partial(UnitOfWork, db, source=f"/pizzeria/{name}"))
            try:
                await store.recent(limit=1)
            except Exception as exc:
                print(
                    f"skipping {name}: its database is not reachable or not migrated ({type(exc).__name__})",
                    file=sys.stderr,
                )
                continue
            stores[name] = store
        if args.action == "list":
            rows: list[tuple[str, dict[str, Any]]] = []
            for name, store in stores.items():
                rows += [(name, r) for r in await store.recent(status=args.status, limit=args.limit)]
            if not rows:
                print("no dead letters")
            for name, r in sorted(rows, key=lambda x: x[1]["created_at"]):
                print(
                    f"{r['id']}  {name:<13} {r['status']:<16} {r['group_id']:<14} {r['message_type'] or '?':<40} "
                    f"attempts={r['attempts']}  {r['error'][:80]}"
                )
            return 0
        for name, store in stores.items():
            row = await store.get(args.id)
            if row is None:
                continue
            if args.action == "show":
                shown = {k: v for k, v in row.items() if k not in ("payload", "headers")}
                shown["service"] = name
                shown["headers"] = orjson.loads(row["headers"])
                try:
                    shown["payload"] = orjson.loads(row["payload"])
                except orjson.JSONDecodeError:
                    shown["payload"] = row["payload"].decode("utf-8", "replace")
                print(orjson.dumps(shown, default=str, option=orjson.OPT_INDENT_2).decode())
                return 0
            try:
                await act_on_dead_letter(
                    store, store.uow_factory, name, args.id, args.action, actor=f"cli:{getpass.getuser()}"
                )
            except ProblemError as exc:
                print(exc.detail, file=sys.stderr)
                return 1
            print(
                f"{args.action}: {args.id} ({name}); "
                + ("the consumer replays it within a second" if args.action == "replay" else "discarded")
            )
            return 0
        print(f"no dead letter {args.id}", file=sys.stderr)
        return 1
    finally:
        for db in databases:
            await db.dispose()


def _missing_sqlite_file(url: str) -> bool:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists()


def cmd_dlq(args: argparse.Namespace) -> int:
    return asyncio.run(_dlq(args))


async def _saga(args: argparse.Namespace) -> int:
    from pizzeria.kit.db import Database
    from pizzeria.messaging import saga

    db = Database(get_settings().database_url_for("orders"), pool_size=1)
    try:
        async with db.read() as conn:
            if args.action == "list":
                print("  ".join(f"{k}={v}" for k, v in sorted((await saga.counts(conn)).items())) or "no sagas")
                for found in await saga.listing(conn, state=args.state, limit=args.limit):
                    print(
                        f"{found.id}  {found.type:<12} {found.state:<13} step={found.step} "
                        f"reason={found.reason or '-':<20} updated={found.updated_at:%Y-%m-%d %H:%M:%S}"
                    )
                return 0
            one = await saga.load(conn, args.id)
            if one is None:
                print(f"no saga {args.id}", file=sys.stderr)
                return 1
            print(f"{one.id}  {one.type}  {one.state}  step={one.step}  reason={one.reason}")
            for entry in await saga.history(conn, args.id):
                print(f"  {entry['at']:%H:%M:%S.%f}  {entry['entry']}")
            return 0
    finally:
        await db.dispose()


def cmd_saga(args: argparse.Namespace) -> int:
    if args.action == "diagram":
        from pizzeria.services.orders.saga import place_order_saga
        from pizzeria.services.orders.settings import OrdersSettings

        print(place_order_saga(OrdersSettings()).mermaid(), end="")
        return 0
    return asyncio.run(_saga(args))


async def _projections(args: argparse.Namespace) -> int:
    from pizzeria.kit.db import Database
    from pizzeria.services.orders import projection

    if args.name == "analytics":
        return await _analytics(args)
    db = Database(get_settings().database_url_for("orders"), pool_size=1)
    try:
        if args.action == "rebuild":
            async with db.transaction() as conn:
                generation = await projection.request_rebuild(conn)
            if generation is None:
                print("a rebuild is already under way", file=sys.stderr)
                return 1
            print(
                f"rebuilding the order views as generation {generation}; the orders service switches reads "
                "to it once it has caught up (see `pizzeria projections status orders`)"
            )
            return 0
        async with db.read() as conn:
            print(orjson.dumps(await projection.status(conn), default=str, option=orjson.OPT_INDENT_2).decode())
        return 0
    finally:
        await db.dispose()


async def _analytics(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from pizzeria.kit.db import Database
    from pizzeria.services.audit import analytics
    from pizzeria.services.audit.tables import analytics_orders

    db = Database(get_settings().database_url_for("audit"), pool_size=1)
    try:
        if args.action == "rebuild":
            applied = await analytics.rebuild(db)
            print(f"applied the {applied} facts of orders and payments in the audit log to the analytics again")
            return 0
        async with db.read() as conn:
            orders = (await conn.execute(sa.select(sa.func.count()).select_from(analytics_orders))).scalar_one()
        print(orjson.dumps({"name": "analytics", "orders": orders}, option=orjson.OPT_INDENT_2).decode())
        return 0
    finally:
        await db.dispose()


def cmd_projections(args: argparse.Namespace) -> int:
    return asyncio.run(_projections(args))


def add_document(sub: Any, name: str, summary: str, func: Any) -> None:
    """A command that prints a document generated from the code, or writes it with `-o FILE`."""
    command = sub.add_parser(name, help=summary)
    command.add_argument("-o", "--output", help="write it to this file")
    command.set_defaults(func=func)


def cmd_demo(args: argparse.Namespace) -> int:
    from pizzeria import demo

    return asyncio.run(demo.run(args.scenario, args.url))


def cmd_check(args: argparse.Namespace) -> int:
    from pizzeria.chaos import run

    return asyncio.run(run.run(args.url, args.seconds, args.rate))


def add_process_commands(sub: Any) -> None:
    """The commands a process of the system runs as: one service, and (not for people) the
    process `up` forks the others from."""
    serve = sub.add_parser("serve", help="run one service in this process")
    serve.add_argument("service", choices=sorted(BY_NAME))
    serve.set_defaults(func=cmd_serve)
    zygote = sub.add_parser("zygote", help="(internal) the process `up` forks the others from")
    zygote.add_argument("reply_fd", type=int)
    zygote.set_defaults(func=cmd_zygote)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pizzeria", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run every service (embedded by default) until Ctrl-C")
    up.add_argument("--only", help="comma-separated services to run (default: all)")
    up.add_argument(
        "--replicas",
        metavar="SERVICE=N,...",
        help="run N processes of a service, as in orders=2,kitchen=2 (over <SERVICE>_REPLICAS; "
        "needs PostgreSQL and Redis)",
    )
    up.add_argument("--no-restart", action="store_true", help="do not restart services that exit")
    up.add_argument("--logs", action="store_true", help="print service logs here instead of var/log/")
    up.set_defaults(func=cmd_up)

    add_process_commands(sub)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("services", nargs="*", help="default: every service")
    migrate.set_defaults(func=cmd_migrate)

    revision = sub.add_parser("revision", help="autogenerate a migration for a service (developers)")
    revision.add_argument("service", help="a service name, or 'messaging'")
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--rev-id", default=None)
    revision.set_defaults(func=cmd_revision)

    add_document(sub, "asyncapi", "print the AsyncAPI document of every message", cmd_asyncapi)

    openapi = sub.add_parser("openapi", help="print the OpenAPI document of every service (its own routes)")
    openapi.add_argument("-o", "--output", metavar="DIR", help="write <service>.json into this directory")
    openapi.set_defaults(func=cmd_openapi)

    topics = sub.add_parser(
        "topics", help="list or create the broker topics (and, on Kafka with SASL, the services' users and ACLs)"
    )
    topics.add_argument("action", choices=["list", "create"])
    topics.set_defaults(func=cmd_topics)

    add_document(
        sub, "kafka-acls", "print who may write and read what on Kafka (`topics create` applies it)", cmd_kafka_acls
    )

    saga_cmd = sub.add_parser("saga", help="order sagas: list, show ID, diagram (Mermaid)")
    saga_sub = saga_cmd.add_subparsers(dest="action", required=True)
    saga_list = saga_sub.add_parser("list")
    saga_list.add_argument("--state", choices=["running", "compensating", "completed", "compensated"])
    saga_list.add_argument("--limit", type=int, default=50)
    saga_sub.add_parser("show").add_argument("id")
    saga_sub.add_parser("diagram")
    saga_cmd.set_defaults(func=cmd_saga)

    projections_cmd = sub.add_parser("projections", help="read models: rebuild without downtime, status")
    projections_cmd.add_argument("action", choices=["rebuild", "status"])
    projections_cmd.add_argument(
        "name",
        choices=["orders", "analytics"],
        help="orders: the order views, in a new generation; analytics: every fact of the audit log applied again",
    )
    projections_cmd.set_defaults(func=cmd_projections)

    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay, discard")
    dlq_sub = dlq.add_subparsers(dest="action", required=True)
    dlq_list = dlq_sub.add_parser("list")
    dlq_list.add_argument("--service")
    dlq_list.add_argument("--status", type=DeadLetterStatus, choices=list(DeadLetterStatus))
    dlq_list.add_argument("--limit", type=int, default=100)
    for action in ("show", "replay", "discard"):
        p = dlq_sub.add_parser(action)
        p.add_argument("id")
    dlq.set_defaults(func=cmd_dlq)
    add_demo_parser(sub)
    add_check_parser(sub)
    return parser


def between(low: float, high: float) -> Callable[[str], float]:
    """An argument type: a number from `low` to `high`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not between {low:g} and {high:g}")
        return value

    return parse


def add_check_parser(sub: Any) -> None:
    from pizzeria.chaos.run import DEFAULT_URL

    check = sub.add_parser(
        "check",
        help="load a running system through its gateway, then check everything it did (the history checker)",
        description=(
            "Places orders at a steady rate for a while (some declined, some cancelled), waits for them to end, "
            "reads everything back through the gateway and checks it: nothing lost, nothing duplicated, money and "
            "stock conserved. Prints the counts; exit status 0 when everything held, 1 on any violation, 2 when "
            "the system cannot be used."
        ),
    )
    check.add_argument("--url", default=DEFAULT_URL, help=f"the gateway of the running system (default {DEFAULT_URL})")
    check.add_argument("--seconds", type=between(1, 86_400), default=60.0, help="how long to load it (default 60)")
    check.add_argument("--rate", type=between(0.1, 50), default=3.0, help="orders a second (default 3)")
    check.set_defaults(func=cmd_check)


def add_demo_parser(sub: Any) -> None:
    from pizzeria.demo import DEFAULT_URL, SCENARIOS

    demo = sub.add_parser(
        "demo",
        help="break a running system on purpose and narrate what it does about it",
        description="Scenarios: " + "; ".join(f"{name}: {s.summary}" for name, s in SCENARIOS.items()),
    )
    demo.add_argument("scenario", choices=sorted(SCENARIOS))
    demo.add_argument("--url", default=DEFAULT_URL, help=f"the gateway of the running system (default {DEFAULT_URL})")
    demo.set_defaults(func=cmd_demo)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(args.func(args))
