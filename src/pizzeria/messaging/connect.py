"""Opens the broker adapter a URL names (kept apart from the port so the port imports no adapter;
each adapter is imported when a URL names it, so a process loads only the client it uses)."""

from __future__ import annotations

from pizzeria.kit.settings import Settings
from pizzeria.messaging.broker import Broker


def create_broker(url: str, **options: object) -> Broker:
    """Build the adapter a URL names: `sqllog+sqlite:///...`, `sqllog+postgresql://...`,
    `kafka://host:9092[,host2:9092]`."""
    if url.startswith("sqllog+"):
        from pizzeria.messaging.sqllog import SqlLogBroker

        return SqlLogBroker(url.removeprefix("sqllog+"), **options)  # type: ignore[arg-type]
    if url.startswith("kafka://"):
        from pizzeria.messaging.kafka import KafkaBroker

        return KafkaBroker(url.removeprefix("kafka://"), **options)  # type: ignore[arg-type]
    raise ValueError(f"unsupported broker URL {url!r}")


def broker_from_settings(settings: Settings, client_id: str = "pizzeria", *, admin: bool = False) -> Broker:
    """The broker this configuration names, tuned by its settings. On Kafka its clients log in
    as the service `client_id`, or with `admin` as the administrator."""
    kafka = settings.on_kafka
    return create_broker(
        settings.broker_url_resolved(),
        login=settings.kafka_admin_login() if admin else settings.kafka_login(client_id),
        poll_interval_ms=settings.sqllog_poll_interval_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms if kafka else settings.sqllog_session_timeout_ms,
        retention_hours=settings.sqllog_retention_hours,
        fetch_wait_max_ms=settings.kafka_fetch_wait_max_ms,
        linger_ms=settings.kafka_linger_ms,
        client_id=client_id,
    )
