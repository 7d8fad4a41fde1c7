"""A real single-node KRaft Apache Kafka broker run with the machine's java from Maven Central jars (cached
under `LATER_READ_CACHE`, default ~/.cache/later-read), or the one `LATER_READ_TEST_KAFKA` names."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from later_read_sandbox.servers.process import (
    KAFKA_ENV,
    LocalServer,
    ServerUnavailable,
    _one_line,
    find_program,
    free_port,
    port_open,
    require_program,
    wait_until,
)

CACHE_ENV = "LATER_READ_CACHE"
# The one place the Kafka version is pinned (Maven resolves the broker and its dependencies from it).
KAFKA_POM = Path(__file__).resolve().parent.parent / "kafka" / "pom.xml"
_MARKER = ".complete"  # written last into a cache folder, so a half-copied folder is never used
WARM_UP_GROUP = "later-read-warm-up"
WARM_UP_SECONDS = 120.0  # the broker's own start is allowed 90 s; a coordinator takes 0.2 s when well
WARM_UP_REQUEST_SECONDS = 10.0  # per attempt: librdkafka's default (60 s) would wait out a lost request


def kafka_version(pom: Path = KAFKA_POM) -> str:
    """The Kafka version pinned in kafka/pom.xml (the single place it is written)."""
    found = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom.read_text())
    if not found:
        raise ServerUnavailable(f"{pom} has no <kafka.version> property")
    return found.group(1)


def kafka_cache_dir(version: str | None = None) -> Path:
    """`$LATER_READ_CACHE/kafka-<version>`, else `~/.cache/later-read/kafka-<version>`."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "later-read"
    return Path(root) / f"kafka-{version or kafka_version()}"


def ensure_java() -> str:
    """The `java` binary, checked to be 17+ (Kafka 4.x brokers need it)."""
    hint = f"run `apt-get install openjdk-17-jre-headless` (or set {KAFKA_ENV})"
    java = find_program("java")
    if java is None:
        raise ServerUnavailable(f"java not found: {hint}")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if not found or int(found.group(1)) < 17:
        raise ServerUnavailable(f"Kafka 4.x needs Java 17+, {java} says {_one_line(out.stderr)[:80]!r}: {hint}")
    return java


def ensure_kafka_classpath(pom: Path = KAFKA_POM) -> Path:
    """The folder of the broker's jars, fetched once with Maven and cached.

    The marker file holds the pom's hash and is written last, so an interrupted or outdated fetch
    is redone; Maven fetches into a sibling folder renamed into place, so a reader never sees half.
    """
    folder = kafka_cache_dir(kafka_version(pom))
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    marker = folder / _MARKER
    if marker.is_file() and marker.read_text().strip() == digest:
        return folder
    mvn = require_program("mvn", "apt-get install maven", KAFKA_ENV)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        _copy_dependencies(mvn, pom, staging)
        (staging / _MARKER).write_text(digest + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _copy_dependencies(mvn: str, pom: Path, into: Path) -> None:
    argv = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={into}",
        "-DincludeScope=runtime",
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        raise ServerUnavailable("mvn took over 15 min fetching the Kafka jars: check access to Maven Central") from None
    if done.returncode != 0 or not any(into.glob("kafka_2.13-*.jar")):
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if "ERROR" in ln] or [done.stderr]
        raise ServerUnavailable(
            f"mvn failed (exit {done.returncode}) fetching the Kafka jars from Maven "
            f"Central: {_one_line(lines[0], 400)}"
        )


def _cluster_id() -> str:
    """A Kafka cluster id (a UUID in URL-safe base64, as `StorageTool random-uuid` prints), no JVM needed."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaServer(LocalServer):
    """A single-node KRaft Kafka (broker and controller in one JVM) with test-friendly settings.

    Topics are not auto-created (tests create theirs with `create_topic`; `auto_create_topics=True`
    gives a broker that would create them, as many production clusters do), new topics get 3
    partitions, consumer groups join without the initial rebalance delay.
    """

    kind = "kafka"
    env = KAFKA_ENV
    #: Small heap, serial GC and C1 only: the broker starts about twice as fast on 2 cores.
    JVM = (
        "-Xmx512m",
        "-Xms64m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-XX:-UsePerfData",
        "-Djava.awt.headless=true",
        "-Dorg.slf4j.simpleLogger.showDateTime=true",
        "-Dorg.slf4j.simpleLogger.log.org.apache.kafka.common.config=warn",
    )
    TOOL_JVM = (
        "-Xmx128m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-XX:-UsePerfData",
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
    )

    def __init__(
        self, external: str | None = None, start_timeout: float = 90.0, auto_create_topics: bool = False
    ) -> None:
        super().__init__(external, start_timeout)
        self.auto_create_topics = auto_create_topics
        self.port = self.controller_port = 0
        self.java, self.classpath = "", ""

    @property
    def bootstrap(self) -> str:
        return self.external or f"127.0.0.1:{self.port}"

    def address(self) -> str:
        return self.bootstrap

    def admin(self):
        """A confluent-kafka AdminClient for this broker."""
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 3})

    def create_topic(self, name: str, partitions: int = 3, timeout: float = 30.0) -> str:
        """Create a topic and wait until every partition has a leader; returns the name."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        admin = self.admin()
        future = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)], operation_timeout=timeout
        )[name]
        try:
            future.result(timeout)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        self._wait_for_leaders(admin, name, partitions, timeout)
        return name

    @staticmethod
    def _wait_for_leaders(admin, name: str, partitions: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            topic = admin.list_topics(topic=name, timeout=timeout).topics.get(name)
            if (
                topic
                and topic.error is None
                and len(topic.partitions) == partitions
                and all(p.leader >= 0 for p in topic.partitions.values())
            ):
                return
            time.sleep(0.05)
        raise ServerUnavailable(f"topic {name} has no leader for every partition after {timeout:.0f} s")

    def delete_topic(self, name: str, timeout: float = 30.0) -> None:
        admin = self.admin()  # held until the result: a destroyed client fails its futures
        admin.delete_topics([name], operation_timeout=timeout)[name].result(timeout)

    def _prepare(self) -> None:
        self.java = ensure_java()
        self.classpath = str(ensure_kafka_classpath() / "*")
        self.port, self.controller_port = free_port(), free_port()
        props = self.workdir / "server.properties"
        props.write_text(self._properties())
        self._format(props, Path(self.classpath).parent)

    def _format(self, props: Path, jars: Path) -> None:
        """`StorageTool format --standalone`, with a class-data archive kept beside the jars.

        The archive (written by the first format, used by the next ones) saves about half a second
        of the tool's 1.2 s; a missing or stale archive is ignored by the JVM, never an error.
        """
        archive = jars / "storage-tool.jsa"
        staging = jars / f"storage-tool.jsa.{os.getpid()}"
        cds = (
            [f"-XX:SharedArchiveFile={archive}"]
            if archive.is_file()
            else [f"-XX:ArchiveClassesAtExit={staging}"]
            if os.access(jars, os.W_OK)
            else []
        )
        argv = [
            self.java,
            *self.TOOL_JVM,
            *cds,
            "-cp",
            self.classpath,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            _cluster_id(),
            "-c",
            str(props),
        ]
        done = subprocess.run(argv, cwd=self.workdir, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise ServerUnavailable(
                f"kafka storage format failed (exit {done.returncode}): {_one_line(done.stdout + done.stderr)}"
            )
        if staging.is_file():
            os.replace(staging, archive)

    def _properties(self) -> str:
        settings = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": self.workdir / "data",
            "num.partitions": 3,
            "auto.create.topics.enable": str(self.auto_create_topics).lower(),
            "group.initial.rebalance.delay.ms": 0,
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 3,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 3,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "log.flush.interval.messages": 9223372036854775807,
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _argv(self) -> list[str]:
        return [self.java, *self.JVM, "-cp", self.classpath, "kafka.Kafka", str(self.workdir / "server.properties")]

    def _answers(self) -> bool:
        if not port_open(self.port):
            return False
        return self._has_broker(timeout=2.0)

    def _has_broker(self, timeout: float) -> bool:
        from confluent_kafka import KafkaException

        try:
            return bool(self.admin().list_topics(timeout=timeout).brokers)
        except KafkaException:
            return False

    def _after_first_start(self) -> None:
        """Have the broker create __consumer_offsets and load its group coordinator now (~1 s) rather
        than on the first consumer group, where librdkafka's coordinator retries take about 3 s inside
        some test.

        The first answers are NOT_COORDINATOR (the topic is being created), then
        COORDINATOR_LOAD_IN_PROGRESS; each is asked again. On a starved host the broker can leave a
        request unanswered (librdkafka would wait out its 60 s request timeout: CI saw a 30 s wait time
        out), so each attempt has a short timeout. A broker without a coordinator after WARM_UP_SECONDS
        fails the start with its log's tail (`wait_until`, as a broker that does not answer at all).
        """
        admin = self.admin()
        assert self.child is not None, "called once the broker has started"
        wait_until(lambda: self._has_coordinator(admin), self.child, WARM_UP_SECONDS, "kafka's group coordinator")

    @staticmethod
    def _has_coordinator(admin) -> bool:
        from confluent_kafka import KafkaException

        try:
            admin.describe_consumer_groups([WARM_UP_GROUP], request_timeout=WARM_UP_REQUEST_SECONDS)[
                WARM_UP_GROUP
            ].result(WARM_UP_REQUEST_SECONDS + 5)
            return True
        except (KafkaException, TimeoutError):
            return False

    def _check_external(self) -> None:
        if not self._has_broker(timeout=10.0):
            raise ServerUnavailable(
                f"{KAFKA_ENV}={self.bootstrap} returned no broker metadata within "
                f"10 s: start that Kafka or unset {KAFKA_ENV}"
            )


def kafka_server() -> KafkaServer:
    """The external Kafka named by LATER_READ_TEST_KAFKA, else a new local broker (not started)."""
    return KafkaServer(external=os.environ.get(KAFKA_ENV) or None)
