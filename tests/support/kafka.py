"""Apache Kafka for the tests and benchmarks: the broker's jars from Maven Central (fetched once
into a cache) and broker processes in KRaft mode, each a combined broker and controller, alone
or as a cluster that a test can break one node at a time.

The settings every broker shares live in deploy/kafka/broker.properties, so the test brokers
run as production's do: every client logs in (SASL) and may do only what its ACLs allow. Only
what belongs to one node (id, ports, directories, the quorum) and the administrator's password
(new for each cluster) are added here."""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from pizzeria.contracts.topology import BUS_SERVICES
from pizzeria.kit.settings import KafkaLogin
from pizzeria.messaging.kafka import KafkaBroker, security_config
from tests.support.tcpproxy import TcpProxy, free_port

HERE = Path(__file__).resolve().parent
POM = HERE / "kafka" / "pom.xml"
LOG_CONFIG = HERE / "kafka" / "log4j2.properties"
BROKER_PROPERTIES = HERE.parents[1] / "deploy" / "kafka" / "broker.properties"

# Small enough to sit beside PostgreSQL, Redis and a dozen service processes on two cores:
# a test broker holds little data, so a small heap and the serial collector do. A test's broker
# lives for seconds or minutes, so the JVM compiles with its quick compiler only
# (TieredStopAtLevel=1): it starts sooner and spends no core on the optimizing compiler.
JVM_OPTIONS = ("-Xms64m", "-Xmx320m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")
# A broker that runs for as long as a deployed one (the benchmarks' brokers): the JVM's whole
# tiered compilation, as the production image runs it, with the same small heap and collector.
# The optimizing compiler costs CPU while it warms up and then makes each record cheaper.
LONG_RUNNING_JVM_OPTIONS = ("-Xms320m", "-Xmx320m", "-XX:+UseSerialGC", "-Djava.awt.headless=true")

# Replication settings that name a number of brokers; a smaller cluster caps them at its size.
REPLICAS = (
    "default.replication.factor",
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
    "share.coordinator.state.topic.replication.factor",
)
MIN_IN_SYNC = ("min.insync.replicas", "transaction.state.log.min.isr", "share.coordinator.state.topic.min.isr")

START_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0


def kafka_version() -> str:
    """The broker version the pom names."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(POM).getroot().findtext("m:properties/m:kafka.version", namespaces=ns)
    if not version:
        raise RuntimeError(f"{POM} names no kafka.version")
    return version.strip()


def cache_dir() -> Path:
    """Where the broker's jars are kept between runs (`PIZZERIA_KAFKA_CACHE` moves it)."""
    root = os.environ.get("PIZZERIA_KAFKA_CACHE") or str(Path.home() / ".cache" / "pizzeria" / "kafka")
    return Path(root) / kafka_version()


def classpath() -> str:
    """The broker's runtime classpath, fetched with Maven on first use. A lock file makes
    parallel test processes wait for one download instead of racing; the pom's digest marks a
    complete copy, so a changed pom or an interrupted download fetches again."""
    home = cache_dir()
    lib = home / "lib"
    stamp = home / "pom.sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()

    def complete() -> bool:
        return stamp.is_file() and stamp.read_text().strip() == digest and lib.is_dir()

    if not complete():
        home.mkdir(parents=True, exist_ok=True)
        with (home / "download.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not complete():
                _download(lib)
                stamp.write_text(digest + "\n")
    return f"{lib}/*"


def _download(lib: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven (mvn) is needed to fetch the Kafka broker for the tests: apt-get install maven")
    partial = lib.with_name(f"lib.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    # MAVEN_OPTS (e.g. -Dmaven.repo.local=...) is honoured by mvn itself.
    done = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"fetching Kafka {kafka_version()} with Maven failed:\n{done.stdout}\n{done.stderr}")
    shutil.rmtree(lib, ignore_errors=True)
    partial.rename(lib)


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not found:
        raise RuntimeError(
            "Java 17+ is needed to run the Kafka broker for the tests: apt-get install openjdk-17-jre-headless"
        )
    return found


def read_properties(path: Path) -> dict[str, str]:
    """A Java properties file of plain `key=value` lines (all ours are)."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "!")):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def cluster_id() -> str:
    """A random cluster id in Kafka's own form (URL-safe base64 of 16 bytes, no padding)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # the storage tool would read it as an option
            return text


#: The super user the shared settings name (`super.users`): the brokers among themselves, the
#: quorum, and whoever creates topics, users and ACLs.
ADMIN = "admin"


def admin_login(password: str) -> dict[str, str]:
    """The broker settings that hold the administrator's password: what a deployment sets from
    its secrets beside deploy/kafka/broker.properties (Compose: KAFKA_ADMIN_PASSWORD)."""
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{ADMIN}" password="{password}" user_{ADMIN}="{password}";'
    )
    return {f"listener.name.{listener}.plain.sasl.jaas.config": jaas for listener in ("broker", "controller")}


_live: set[KafkaNode] = set()


@atexit.register
def _stop_leftovers() -> None:
    # A safety net for an interrupted run: never leave a broker behind the test process.
    for node in list(_live):
        node.kill()


class KafkaNode:
    """One Kafka process: broker and KRaft controller in one JVM, its data in `home`. Clients
    are told to connect to `advertised_port` (a proxy's port when one sits in front); the
    controller listener is for the quorum only."""

    def __init__(
        self,
        node_id: int,
        home: Path,
        *,
        advertised_port: int | None = None,
        jvm_options: Sequence[str] = JVM_OPTIONS,
    ) -> None:
        self.node_id = node_id
        self.home = home
        self.jvm_options = tuple(jvm_options)
        self.broker_port = free_port()
        self.controller_port = free_port()
        self.advertised_port = advertised_port or self.broker_port
        self.config_path = home / "server.properties"
        self.log_path = home / "broker.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    @property
    def voter(self) -> str:
        return f"{self.node_id}@127.0.0.1:{self.controller_port}"

    def configure(self, common: Mapping[str, str], voters: str, admin_password: str) -> None:
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        settings = {
            **common,
            "node.id": str(self.node_id),
            "listeners": f"BROKER://127.0.0.1:{self.broker_port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"BROKER://{self.address}",
            "controller.quorum.voters": voters,
            "log.dirs": str(self.home / "data"),
            **admin_login(admin_password),
        }
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))

    def _command(self, main: str, *args: str, jvm_options: Sequence[str] = JVM_OPTIONS) -> list[str]:
        return [java(), *jvm_options, f"-Dlog4j2.configurationFile={LOG_CONFIG}", "-cp", classpath(), main, *args]

    def format_storage(self, cluster: str) -> subprocess.Popen[bytes]:
        """Starts `kafka-storage format` for this node (the caller waits, so nodes format at once)."""
        return subprocess.Popen(
            self._command(
                "kafka.tools.StorageTool", "format", "--cluster-id", cluster, "--config", str(self.config_path)
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self._command("kafka.Kafka", str(self.config_path), jvm_options=self.jvm_options),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _live.add(self)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no controlled shutdown, no flush, as a crashed machine."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(STOP_TIMEOUT)
        _live.discard(self)

    def terminate(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self) -> None:
        """After `terminate`: wait for a clean shutdown, then kill whatever is still running."""
        if self.process is not None:
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        _live.discard(self)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class KafkaCluster:
    """`size` Kafka nodes, every one a broker and a controller voter, in `workdir`. With
    `proxied`, clients reach each broker only through a TcpProxy (the broker advertises the
    proxy's port and listens on its own), so a test can cut every client connection."""

    def __init__(
        self, workdir: Path, *, size: int = 1, proxied: bool = False, jvm_options: Sequence[str] = JVM_OPTIONS
    ) -> None:
        self.workdir = workdir
        self.proxies: dict[int, TcpProxy] = {}
        self.nodes: dict[int, KafkaNode] = {}
        for node_id in range(1, size + 1):
            proxy_port = free_port() if proxied else None
            node = KafkaNode(node_id, workdir / f"node-{node_id}", advertised_port=proxy_port, jvm_options=jvm_options)
            self.nodes[node_id] = node
            if proxy_port is not None:
                self.proxies[node_id] = TcpProxy(node.broker_port, listen_port=proxy_port)
        self.started_in = 0.0
        self.admin_password = secrets.token_urlsafe(24)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes.values())

    def admin_login(self) -> KafkaLogin:
        """The administrator's login (a super user: may do anything)."""
        return KafkaLogin("SASL_PLAINTEXT", "PLAIN", ADMIN, self.admin_password)

    def client_config(self, login: KafkaLogin | None = None, bootstrap: str | None = None) -> dict[str, Any]:
        """librdkafka's settings of a client that logs in as `login` (default: the administrator)."""
        return {"bootstrap.servers": bootstrap or self.bootstrap, **security_config(login or self.admin_login())}

    def broker(self, login: KafkaLogin | None = None, **options: Any) -> KafkaBroker:
        """The Kafka adapter, logged in as `login` (default: the administrator)."""
        return KafkaBroker(self.bootstrap, login=login or self.admin_login(), **options)

    def environment(self) -> dict[str, str]:
        """What `pizzeria up` needs to run the services on this cluster, each as its own user
        (the users and their ACLs are made as the system starts, by `create_topics`)."""
        env = {
            "BROKER_URL": f"kafka://{self.bootstrap}",
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_ADMIN_PASSWORD": self.admin_password,
        }
        env.update({f"{name.upper()}_KAFKA_SASL_PASSWORD": secrets.token_urlsafe(18) for name in BUS_SERVICES})
        return env

    def settings(self) -> dict[str, str]:
        """The shared broker settings, with replication capped at this cluster's size."""
        common = read_properties(BROKER_PROPERTIES)
        size = len(self.nodes)
        for key in REPLICAS:
            common[key] = str(min(int(common.get(key, "1")), size))
        for key in MIN_IN_SYNC:
            common[key] = str(min(int(common.get(key, "1")), size))
        return common

    def start(self) -> KafkaCluster:
        began = time.monotonic()
        classpath()  # the first run downloads before the clock of any node starts
        common = self.settings()
        voters = ",".join(node.voter for node in self.nodes.values())
        cluster = cluster_id()
        for node in self.nodes.values():
            node.configure(common, voters, self.admin_password)
        formatting = [(node, node.format_storage(cluster)) for node in self.nodes.values()]
        for node, process in formatting:
            output, _ = process.communicate(timeout=120)
            if process.returncode != 0:
                raise RuntimeError(f"formatting Kafka node {node.node_id} failed:\n{output.decode(errors='replace')}")
        for proxy in self.proxies.values():
            proxy.start()
        try:
            for node in self.nodes.values():
                node.start()
            self.wait_serving(set(self.nodes))
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def admin(self, node_ids: set[int] | None = None) -> AdminClient:
        """An admin client that bootstraps only from the given nodes (default: the running ones)."""
        ids = node_ids or {i for i, n in self.nodes.items() if n.running}
        return AdminClient(
            {
                **self.client_config(bootstrap=",".join(self.nodes[i].address for i in sorted(ids))),
                "log_level": 0,  # refused connections while a node starts are expected, not news
            }
        )

    def wait_serving(self, node_ids: set[int], timeout: float = START_TIMEOUT) -> None:
        """Poll until every named node is a registered, unfenced broker."""
        admin = self.admin(node_ids)
        deadline = time.monotonic() + timeout
        while True:
            for i in node_ids:
                node = self.nodes[i]
                if not node.running:
                    raise RuntimeError(f"Kafka node {i} exited; its log ends:\n{node.log_tail()}")
            with contextlib.suppress(Exception):
                if node_ids <= set(admin.list_topics(timeout=2).brokers):
                    return
            if time.monotonic() > deadline:
                tails = "\n".join(f"-- node {i}:\n{self.nodes[i].log_tail()}" for i in node_ids)
                raise TimeoutError(f"Kafka nodes {sorted(node_ids)} not serving after {timeout:.0f} s\n{tails}")
            time.sleep(0.1)

    def partition_state(self, topic: str, partition: int) -> tuple[int, list[int]]:
        """The partition's (leader, in-sync replicas), as the running brokers report them."""
        meta = self.admin().list_topics(topic=topic, timeout=10)
        found = meta.topics[topic].partitions[partition]
        return int(found.leader), sorted(int(r) for r in found.isrs)

    def end_offsets(self, topic: str, partitions: int) -> dict[int, int]:
        """Each partition's log end offset: how many records were ever written to it."""
        asked = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}
        admin = self.admin()  # must outlive its futures: a collected client never settles them
        futures = admin.list_offsets(asked, request_timeout=10)
        return {tp.partition: int(future.result(timeout=30).offset) for tp, future in futures.items()}

    def leader(self, topic: str, partition: int) -> int:
        return self.partition_state(topic, partition)[0]

    def kill(self, node_id: int) -> None:
        """kill -9 one node."""
        self.nodes[node_id].kill()

    def restart(self, node_id: int) -> None:
        """Start a node again on its own ports and data, and wait until it serves."""
        node = self.nodes[node_id]
        if node.running:
            raise RuntimeError(f"Kafka node {node_id} is still running")
        node.start()
        self.wait_serving({node_id})

    def drop_client_connections(self, refuse_for: float = 0.0) -> int:
        """Cut every connection through the proxies (and refuse new ones for a while)."""
        return sum(proxy.drop_all(refuse_for=refuse_for) for proxy in self.proxies.values())

    def stop(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()
        for node in self.nodes.values():
            node.terminate()
        for node in self.nodes.values():
            node.wait_stopped()


@contextlib.contextmanager
def running_kafka(workdir: Path, *, size: int = 1, proxied: bool = False) -> Iterator[KafkaCluster]:
    """A started cluster, stopped on the way out."""
    cluster = KafkaCluster(workdir, size=size, proxied=proxied).start()
    try:
        yield cluster
    finally:
        cluster.stop()
