"""Typed settings read from the environment (12-factor); defaults give the embedded mode."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pizzeria.kit.clientaddr import Network, parse_networks

#: The embedded mode's token signing secret. Public (it is in the source), so production mode
#: refuses to start with it.
DEVELOPMENT_JWT_SECRET = "pizzeria-development-only-jwt-secret-do-not-use-in-production"
#: HS256 keys shorter than the hash output (32 bytes) weaken the signature (RFC 7518 3.2).
MIN_JWT_SECRET_BYTES = 32

#: A consumer's linger when `CONSUMER_LINGER_MS` is unset. The SQL log's consumers poll every
#: `SQLLOG_POLL_INTERVAL_MS`, so a run already holds what a poll interval brought: 5 ms more
#: gathers the commits right behind. A Kafka consumer is handed each record as it arrives, so at
#: a steady rate its runs would be one or two records, each a transaction and an offset commit,
#: and the many small wake-ups of every service crowd the placement's path to the cores: 50 ms
#: keeps the runs long (docs/performance.md, the twenty-sixth session's section).
CONSUMER_LINGER_MS_BY_BROKER = {"sqllog": 5.0, "kafka": 50.0}

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


@dataclass(frozen=True)
class KafkaLogin:
    """How one client logs in to Kafka: what librdkafka's security settings say."""

    protocol: KafkaSecurityProtocol
    mechanism: KafkaSaslMechanism
    username: str
    password: str = field(repr=False)
    ca_location: str = ""

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")


class Settings(BaseSettings):
    """What every service process reads: mode, stores, broker, messaging, security, caching,
    telemetry. A service's own knobs live with the service (its `settings.py`); `.env.example`
    lists them all with their defaults."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    mode: Literal["embedded", "production"] = Field("embedded", alias="PIZZERIA_MODE")
    var_dir: Path = Field(Path("var"), alias="PIZZERIA_VAR_DIR")
    # `{service}` is replaced by the service name, so one template serves every process;
    # `<SERVICE>_DATABASE_URL` overrides it for one service.
    database_url: str = Field("sqlite:///{var}/{service}.db", alias="DATABASE_URL")
    broker_url: str = Field("sqllog+sqlite:///{var}/broker.db", alias="BROKER_URL")
    host: str = Field("127.0.0.1", alias="PIZZERIA_HOST")
    db_pool_size: int = Field(10, alias="DB_POOL_SIZE")
    # Callers from these networks (addresses or CIDRs) see /metrics and the details of /health
    # and /ready; anyone else needs an administrator's access token.
    ops_networks: str = Field("127.0.0.0/8,::1", alias="OPS_NETWORKS")
    # Proxies whose X-Forwarded-For is believed (addresses or CIDRs, comma-separated); from any
    # other peer the peer's own address is the client's.
    trusted_proxies: str = Field("", alias="TRUSTED_PROXIES")
    # Requests beyond these are refused before they are buffered (413, 431).
    max_request_body_bytes: int = Field(1_048_576, alias="MAX_REQUEST_BODY_BYTES", gt=0)
    max_request_header_bytes: int = Field(16_384, alias="MAX_REQUEST_HEADER_BYTES", gt=0)

    topic_partitions: int = Field(3, alias="TOPIC_PARTITIONS")
    topic_replication_factor: int = Field(1, alias="TOPIC_REPLICATION_FACTOR")
    topic_min_insync_replicas: int = Field(1, alias="TOPIC_MIN_INSYNC_REPLICAS")
    # The lowest session a stock broker accepts (group.min.session.timeout.ms): a killed member's
    # partitions move on within 6 s. A broker answers a fetch as soon as data arrives, so the
    # fetch wait only bounds idle polling: a long one costs no latency and saves requests.
    kafka_session_timeout_ms: int = Field(6000, alias="KAFKA_SESSION_TIMEOUT_MS")
    kafka_fetch_wait_max_ms: int = Field(500, alias="KAFKA_FETCH_WAIT_MAX_MS")
    # The producer gathers a relay's batch for 2 ms into fewer, larger requests: fewer requests
    # and acknowledgements for librdkafka's threads, the broker and the consumers' fetches
    # (CPU per order 8-14% lower on the Kafka stack, performance.md), for 2 ms a hop.
    kafka_linger_ms: int = Field(2, alias="KAFKA_LINGER_MS", ge=0, le=1000)
    # Who may write what on the bus: production logs in to Kafka (SASL), each service as its
    # own user, whose ACLs let it write only its own topics (`pizzeria kafka-acls`). SASL_SSL
    # also encrypts; KAFKA_SSL_CA_LOCATION names the PEM file of the brokers' CA (empty: the
    # system's CAs). `{service}` in the user name is the service's name; a service's password
    # is `<SERVICE>_KAFKA_SASL_PASSWORD`, else KAFKA_SASL_PASSWORD.
    kafka_security_protocol: KafkaSecurityProtocol = Field("PLAINTEXT", alias="KAFKA_SECURITY_PROTOCOL")
    kafka_sasl_mechanism: KafkaSaslMechanism = Field("SCRAM-SHA-512", alias="KAFKA_SASL_MECHANISM")
    kafka_sasl_username: str = Field("{service}", alias="KAFKA_SASL_USERNAME", min_length=1)
    kafka_sasl_password: SecretStr = Field("", alias="KAFKA_SASL_PASSWORD", validate_default=True)
    kafka_ssl_ca_location: str = Field("", alias="KAFKA_SSL_CA_LOCATION")
    # The administrator: creates the topics, the services' users and their ACLs (`pizzeria
    # topics create`, `pizzeria up`). The brokers of deploy/kafka define it themselves (PLAIN).
    kafka_admin_username: str = Field("admin", alias="KAFKA_ADMIN_USERNAME", min_length=1)
    kafka_admin_password: SecretStr = Field("", alias="KAFKA_ADMIN_PASSWORD", validate_default=True)
    kafka_admin_sasl_mechanism: KafkaSaslMechanism = Field("PLAIN", alias="KAFKA_ADMIN_SASL_MECHANISM")
    sqllog_poll_interval_ms: int = Field(20, alias="SQLLOG_POLL_INTERVAL_MS")
    sqllog_session_timeout_ms: int = Field(6000, alias="SQLLOG_SESSION_TIMEOUT_MS")
    sqllog_retention_hours: float = Field(168.0, alias="SQLLOG_RETENTION_HOURS")

    outbox_batch_size: int = Field(500, alias="OUTBOX_BATCH_SIZE")
    outbox_poll_interval_ms: int = Field(1000, alias="OUTBOX_POLL_INTERVAL_MS")
    # Woken by a commit, the relay waits this long for the commits right behind it, so that
    # under load it publishes runs, not single rows (a row alone costs several times more).
    outbox_linger_ms: float = Field(5.0, alias="OUTBOX_LINGER_MS", ge=0, le=1000)
    outbox_retention_s: float = Field(3600.0, alias="OUTBOX_RETENTION_S")
    inbox_retention_s: float = Field(7 * 24 * 3600.0, alias="INBOX_RETENTION_S")
    consumer_max_attempts: int = Field(5, alias="CONSUMER_MAX_ATTEMPTS")
    consumer_backoff_initial_ms: int = Field(100, alias="CONSUMER_BACKOFF_INITIAL_MS")
    consumer_backoff_max_ms: int = Field(5000, alias="CONSUMER_BACKOFF_MAX_MS")
    consumer_transient_patience_s: float = Field(30.0, alias="CONSUMER_TRANSIENT_PATIENCE_S", ge=0)
    consumer_batch_size: int = Field(200, alias="CONSUMER_BATCH_SIZE")
    # Given fewer records than a batch, a consumer waits this long for more before handling
    # them: longer runs, one transaction each (Kafka's fetch.wait.max.ms, on our side). Unset,
    # it depends on the broker (`consumer_linger_s`).
    consumer_linger_ms: float | None = Field(None, alias="CONSUMER_LINGER_MS", ge=0, le=1000)
    # A group held up on one record this long makes /ready fail and pizzeria_consumer_stuck 1.
    consumer_stuck_after_s: float = Field(60.0, alias="CONSUMER_STUCK_AFTER_S", gt=0)

    # SecretStr keeps the secret out of reprs and logs; validate_default makes the default one too.
    jwt_secret: SecretStr = Field(DEVELOPMENT_JWT_SECRET, alias="JWT_SECRET", validate_default=True)
    access_token_ttl_s: int = Field(900, alias="ACCESS_TOKEN_TTL_S", gt=0)
    refresh_token_ttl_s: int = Field(1_209_600, alias="REFRESH_TOKEN_TTL_S", gt=0)

    redis_url: str = Field("", alias="REDIS_URL")
    redis_key_prefix: str = Field("pizzeria", alias="REDIS_KEY_PREFIX", min_length=1)
    cache_ttl_s: float = Field(30.0, alias="CACHE_TTL_S", gt=0)
    cache_tombstone_s: float = Field(5.0, alias="CACHE_TOMBSTONE_S", gt=0)

    otel_exporter_otlp_endpoint: str = Field("", alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    trace_sample_ratio: float = Field(1.0, alias="TRACE_SAMPLE_RATIO", ge=0.0, le=1.0)

    log_level: str = Field("INFO", alias="LOG_LEVEL")
    log_format: Literal["json", "console"] = Field("json", alias="LOG_FORMAT")
    failpoints: str = Field("", alias="PIZZERIA_FAILPOINTS")

    @field_validator("consumer_linger_ms", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        # `CONSUMER_LINGER_MS=` (as .env.example lists it, uncommented) leaves it to the broker.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("trusted_proxies", "ops_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    def trusted_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.trusted_proxies)

    def ops_callers(self) -> tuple[Network, ...]:
        return parse_networks(self.ops_networks)

    def exposure_problems(self) -> list[str]:
        """Why this configuration must not listen where it would (in any mode): the public
        development secret lets anyone who can reach a service sign their own tokens, so
        with it the services listen on this machine's loopback only."""
        if self.jwt_secret.get_secret_value() != DEVELOPMENT_JWT_SECRET or is_loopback(self.host):
            return []
        return [
            f"PIZZERIA_HOST={self.host} lets other machines in, and JWT_SECRET is the public development "
            "secret (anyone could sign an administrator's token): set JWT_SECRET to 32+ random bytes, "
            "or keep PIZZERIA_HOST=127.0.0.1"
        ]

    def resolve(self, template: str, service: str = "") -> str:
        """Fill `{var}` and `{service}` in a URL template."""
        return template.replace("{var}", str(self.var_dir)).replace("{service}", service)

    def database_url_for(self, service: str) -> str:
        """The database URL of one service: its own override, else the shared template."""
        override = os.environ.get(f"{service.upper()}_DATABASE_URL")
        return self.resolve(override or self.database_url, service)

    def kafka_login(self, service: str) -> KafkaLogin:
        """How `service` logs in to Kafka: as its own user, with its own password."""
        password = os.environ.get(f"{service.upper()}_KAFKA_SASL_PASSWORD")
        return KafkaLogin(
            self.kafka_security_protocol,
            self.kafka_sasl_mechanism,
            self.kafka_sasl_username.replace("{service}", service),
            self.kafka_sasl_password.get_secret_value() if password is None else password,
            self.kafka_ssl_ca_location,
        )

    def kafka_admin_login(self) -> KafkaLogin:
        """How the administrator's tools (topics, users, ACLs) log in to Kafka."""
        return KafkaLogin(
            self.kafka_security_protocol,
            self.kafka_admin_sasl_mechanism,
            self.kafka_admin_username,
            self.kafka_admin_password.get_secret_value(),
            self.kafka_ssl_ca_location,
        )

    def production_problems(
        self,
        service: str,
        *,
        messaging: bool = True,
        shared_state: bool = False,
    ) -> list[str]:
        """Why this configuration cannot run `service` in production mode (empty if it can):
        production never falls back to the embedded stores. `messaging`: the service has a
        database and talks to the broker (the gateway has neither); `shared_state`: its caches
        or rate limits must be shared by its replicas (in Redis)."""
        if self.mode != "production":
            return []
        problems = []
        if messaging and self.database_url_for(service).startswith("sqlite"):
            problems.append(f"{service}: set DATABASE_URL or {service.upper()}_DATABASE_URL to a PostgreSQL URL")
        if messaging and self.broker_url.startswith("sqllog"):
            problems.append("set BROKER_URL to kafka://host:port[,host:port]")
        if messaging and self.on_kafka:
            login = self.kafka_login(service)
            if not login.sasl:
                problems.append(
                    "set KAFKA_SECURITY_PROTOCOL to SASL_SSL or SASL_PLAINTEXT: on a broker that asks nobody "
                    "who they are, any process that reaches it can write any service's events"
                )
            elif not login.password:
                problems.append(f"{service}: set KAFKA_SASL_PASSWORD or {service.upper()}_KAFKA_SASL_PASSWORD")
        if shared_state and not self.redis_url:
            problems.append(f"{service}: set REDIS_URL (caches and rate limits are shared between processes)")
        # Every service verifies access tokens, so every service refuses the public secret.
        secret = self.jwt_secret.get_secret_value()
        if secret == DEVELOPMENT_JWT_SECRET:
            problems.append("set JWT_SECRET: the development default is public")
        elif len(secret.encode()) < MIN_JWT_SECRET_BYTES:
            problems.append(f"JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes long")
        return problems

    def consumer_linger_s(self) -> float:
        """How long a consumer given fewer records than a batch waits for more: what
        `CONSUMER_LINGER_MS` says, else the broker's default (`CONSUMER_LINGER_MS_BY_BROKER`)."""
        if self.consumer_linger_ms is not None:
            return self.consumer_linger_ms / 1000
        return CONSUMER_LINGER_MS_BY_BROKER["kafka" if self.on_kafka else "sqllog"] / 1000

    @property
    def on_kafka(self) -> bool:
        """Whether the broker is Kafka (else the SQL log)."""
        return self.broker_url.startswith("kafka")

    def broker_url_resolved(self) -> str:
        return self.resolve(self.broker_url)


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine's loopback only."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
