"""Real local servers for tests, the demo and benchmarks: redis-server, MariaDB and a KRaft Kafka broker.

Why real servers: everything that crosses a process boundary is tested against the real thing
(docs/design.md, "Tests"). MariaDB stands in for StarRocks (same MySQL protocol); the Kafka broker is
Apache Kafka itself, run with `java` from Maven Central jars (no Docker, no Apache download site here).

Each server class is a context manager. A managed server gets a free loopback port, its own
temporary directory and its own process group; `start()` returns only once the server really answers,
and `stop()` kills the process group and removes the directory. Children also get PR_SET_PDEATHSIG so
that a test run killed with SIGKILL leaves no daemon behind, and an atexit hook covers ordinary exits.

Each kind can instead point at an already-running server through an environment variable
(`LATER_READ_TEST_REDIS_URL`, `LATER_READ_TEST_MYSQL`, `LATER_READ_TEST_KAFKA`); the factories
`redis_server()`, `mariadb_server()` and `kafka_server()` read them. An external server is never
started, stopped nor restarted by this module.

A server that cannot start raises `ServerUnavailable` with one line saying what is missing and what to
install or run. Nothing here ever skips.

Command line (used by scripts/setup and for demos):
    python3 -m later_read.sandbox.servers fetch-kafka     # fill the Kafka jar cache
    python3 -m later_read.sandbox.servers up [redis mariadb kafka]   # run until Ctrl-C, print env vars
"""

from __future__ import annotations

import argparse
import atexit
import base64
import ctypes
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

REDIS_ENV = "LATER_READ_TEST_REDIS_URL"
MYSQL_ENV = "LATER_READ_TEST_MYSQL"
KAFKA_ENV = "LATER_READ_TEST_KAFKA"
CACHE_ENV = "LATER_READ_CACHE"

#: Where Debian keeps daemons (`mariadbd`); not always on a non-root user's PATH.
SBIN_DIRS: tuple[str, ...] = ("/usr/sbin", "/usr/local/sbin")

KAFKA_POM = Path(__file__).with_name("kafka") / "pom.xml"
_MARKER = ".complete"
_OWNER = "owner.pid"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOG_ERROR = re.compile(r"ERROR|FATAL|Exception|[Ee]rror:|in use|[Ff]ailed")


class ServerUnavailable(RuntimeError):
    """A test server could not be started or reached; the message is one line saying what to do."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it; a tiny race remains, see _retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_program(name: str) -> str | None:
    """`shutil.which`, falling back to the sbin folders where Debian installs daemons."""
    found = shutil.which(name)
    if found:
        return found
    return shutil.which(name, path=os.pathsep.join(SBIN_DIRS)) if SBIN_DIRS else None


def require_program(name: str, install: str, env: str) -> str:
    """The program's path, or ServerUnavailable saying which package to install."""
    path = find_program(name)
    if path is None:
        raise ServerUnavailable(f"{name} not found: run `{install}` (or set {env})")
    return path


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _one_line(text: str, limit: int = 240) -> str:
    """Squeeze a log excerpt or error into one line, so ServerUnavailable stays one line."""
    text = _ANSI.sub("", text)
    text = " | ".join(part.strip() for part in text.splitlines() if part.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------
# Child processes


def death_signal_setter():
    """A function for the forked child: prctl(PR_SET_PDEATHSIG, SIGKILL), so it dies with us.

    prctl is looked up here, in the parent: the child between fork and exec should run as little as
    possible (no dlopen), since other threads (librdkafka's) may hold locks at fork time.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class ChildProcess:
    """One server process in its own process group, logging to a file, killed with its group.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, so it is set only when the
    child is started from the main thread; otherwise only the process group and atexit protect us.
    """

    def __init__(self, argv: list[str], log_path: Path, cwd: Path) -> None:
        self.argv, self.log_path, self.cwd = argv, log_path, cwd
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        main = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                process_group=0, preexec_fn=death_signal_setter() if main else None,
            )
        atexit.register(self.kill)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, graceful: bool = True, timeout: float = 15.0) -> None:
        """SIGTERM the group and wait (graceful), then SIGKILL whatever is left."""
        if self.popen is None:
            return
        if graceful and self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group at once; safe to call twice (also the atexit hook)."""
        if self.popen is None:
            return
        self._signal(signal.SIGKILL)
        self.popen.wait()
        self.popen = None
        atexit.unregister(self.kill)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def log_tail(self) -> str:
        """The log's first error lines and its last line, as one line, for error messages.

        The last lines alone are often a stack trace or shutdown chatter (Kafka); the first error
        line usually says what went wrong ("Address already in use", a bad option).
        """
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        errors = [ln for ln in lines if _LOG_ERROR.search(ln)][:2]
        picked = list(dict.fromkeys([*errors, *lines[-1:]]))
        return _one_line("\n".join(picked), 500) or f"(empty log {self.log_path})"


def wait_until(ready, child: ChildProcess, timeout: float, what: str) -> None:
    """Poll `ready()` until it is true; fail early with the log tail when the child exits."""
    deadline = time.monotonic() + timeout
    while True:
        if not child.alive():
            code = child.popen.returncode if child.popen else None
            raise ServerUnavailable(f"{what} exited (code {code}) while starting: {child.log_tail()}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"{what} did not answer within {timeout:.0f} s: {child.log_tail()}")
        time.sleep(0.05)


def _sweep_orphans() -> None:
    """Remove server folders left by a test run that was SIGKILLed (its children died with it).

    Each folder names the Python process that owns it; a folder whose owner is gone is garbage.
    """
    for folder in Path(tempfile.gettempdir()).glob("later-read-*-*"):
        try:
            owner = int((folder / _OWNER).read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError):
            continue


# --------------------------------------------------------------------------------------------------
# Lifecycle shared by the three kinds


class LocalServer:
    """Start/stop/restart shared by the three servers; subclasses say how to prepare, run and probe.

    `external` is the address of an already-running server; then nothing is started or stopped.
    """

    kind = "server"
    env = ""

    def __init__(self, external: str | None = None, start_timeout: float = 30.0) -> None:
        self.external = external
        self.start_timeout = start_timeout
        self.tempdir: Path | None = None
        self.child: ChildProcess | None = None
        self.startup_seconds: float | None = None

    @property
    def managed(self) -> bool:
        """True when this object started (and so owns) the server process."""
        return self.external is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.external if not self.managed else f"pid {self.child.pid if self.child else None}"
        return f"<{type(self).__name__} {self.address()} ({where})>"

    def start(self):
        """Start the server (or check the external one answers); returns self. Idempotent."""
        if self.tempdir is not None:
            return self
        began = time.monotonic()
        if self.managed:
            self._retry(self._start_managed)
        else:
            self._check_external()
        self.startup_seconds = time.monotonic() - began
        return self

    def _retry(self, attempt, tries: int = 3) -> None:
        """free_port() can race with another process; pick new ports when a bind failed."""
        for left in range(tries - 1, -1, -1):
            try:
                return attempt()
            except ServerUnavailable as error:
                self._discard()
                if left == 0 or "in use" not in str(error).lower():
                    raise

    def _start_managed(self) -> None:
        _sweep_orphans()
        self.tempdir = Path(tempfile.mkdtemp(prefix=f"later-read-{self.kind}-"))
        (self.tempdir / _OWNER).write_text(f"{os.getpid()}\n")
        self._prepare()
        self._run()
        self._after_first_start()

    def _run(self) -> None:
        self.child = ChildProcess(self._argv(), self.tempdir / f"{self.kind}.log", self.tempdir)
        self.child.start()
        wait_until(self._answers, self.child, self.start_timeout, self.kind)

    def stop(self) -> None:
        """Kill the server and remove its directory; does nothing to an external server."""
        if self.managed:
            self._discard()

    def _discard(self) -> None:
        if self.child is not None:
            self.child.kill()
            self.child = None
        if self.tempdir is not None:
            shutil.rmtree(self.tempdir, ignore_errors=True)
            self.tempdir = None

    def stop_process(self, graceful: bool = True) -> None:
        """Stop only the process (same ports, same directory) so a test can see the server down."""
        self._require_managed("stop")
        if self.child is not None:
            self.child.stop(graceful=graceful)

    def restart(self) -> None:
        """Start the process again on the same ports and directory (after stop_process or a crash)."""
        self._require_managed("restart")
        if self.child is not None and self.child.alive():
            self.child.stop()
        self._run()

    def _require_managed(self, action: str) -> None:
        if not self.managed:
            raise ServerUnavailable(f"cannot {action} the external {self.kind} named by {self.env}; "
                                    f"unset it to let the tests run their own")
        if self.tempdir is None:
            raise ServerUnavailable(f"cannot {action} {self.kind}: it was never started")

    # Subclass hooks
    def address(self) -> str:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Find programs, pick ports, initialise the data directory."""

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _answers(self) -> bool:
        raise NotImplementedError

    def _after_first_start(self) -> None:
        """One-time setup once the server answers (users, databases)."""

    def _check_external(self) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------
# Redis


class RedisServer(LocalServer):
    """redis-server without persistence on a free loopback port; `.url` ends in /0."""

    kind = "redis"
    env = REDIS_ENV

    def __init__(self, external: str | None = None, start_timeout: float = 15.0) -> None:
        super().__init__(external, start_timeout)
        self.port = (urlsplit(external).port or 6379) if external else 0
        self.binary = ""

    @property
    def url(self) -> str:
        return self.external or f"redis://127.0.0.1:{self.port}/0"

    def address(self) -> str:
        return self.url

    def client(self, **options):
        """A redis-py client for this server (the caller closes it)."""
        import redis

        options.setdefault("socket_connect_timeout", 1)
        return redis.Redis.from_url(self.url, **options)

    def _prepare(self) -> None:
        self.binary = require_program("redis-server", "apt-get install redis-server", REDIS_ENV)
        self.port = free_port()

    def _argv(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.tempdir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""]

    def _answers(self) -> bool:
        return port_open(self.port) and self._ping()

    def _ping(self) -> bool:
        import redis

        client = self.client(socket_timeout=2)  # a silent listener on the port must not hang us
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _check_external(self) -> None:
        if not self._ping():
            raise ServerUnavailable(f"{REDIS_ENV}={self.url} does not answer PING: start that Redis "
                                    f"or unset {REDIS_ENV} to let the tests run their own")


def redis_server() -> RedisServer:
    """The external Redis named by LATER_READ_TEST_REDIS_URL, else a new local one (not started)."""
    return RedisServer(external=os.environ.get(REDIS_ENV) or None)


# --------------------------------------------------------------------------------------------------
# MariaDB (stands in for StarRocks: same MySQL protocol)


@dataclass(frozen=True)
class MySQLDatabase:
    """Where a MySQL-protocol database is: what the `mysql` fixture yields and configs point at."""

    host: str
    port: int
    user: str
    password: str
    database: str

    def dsn(self) -> str:
        """`mysql://user:password@host:port/database`, the LATER_READ_TEST_MYSQL format."""
        auth = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"mysql://{auth}@{self.host}:{self.port}/{quote(self.database, safe='')}"

    def connect(self, database: str | None = None, **options):
        """A pymysql connection (autocommit on); `database=""` connects to no database."""
        import pymysql

        options.setdefault("connect_timeout", 5)
        return pymysql.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               database=self.database if database is None else (database or None),
                               autocommit=True, charset="utf8mb4", **options)

    @classmethod
    def from_dsn(cls, dsn: str) -> MySQLDatabase:
        parts = urlsplit(dsn)
        if parts.scheme not in ("mysql", "mariadb") or not parts.hostname:
            raise ServerUnavailable(f"{MYSQL_ENV}={dsn!r} is not mysql://user:password@host:port/database")
        return cls(host=parts.hostname, port=parts.port or 3306, user=unquote(parts.username or "root"),
                   password=unquote(parts.password or ""),
                   database=unquote(parts.path.lstrip("/")) or "later_read")


class MariaDBServer(LocalServer):
    """mariadbd with a throwaway data directory, tuned for speed over durability.

    Logins: user `later_read` / password `later-read` over TCP (all privileges, so tests can create
    databases), and root without a password; the database `later_read` exists.
    """

    kind = "mariadb"
    env = MYSQL_ENV
    USER, PASSWORD, DATABASE = "later_read", "later-read", "later_read"
    #: Speed over durability: a test database is thrown away anyway.
    TUNING = ["--skip-log-bin", "--skip-name-resolve", "--innodb-flush-log-at-trx-commit=2",
              "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=8M", "--innodb-doublewrite=0",
              "--character-set-server=utf8mb4", "--max-connections=500"]

    def __init__(self, external: str | None = None, start_timeout: float = 30.0) -> None:
        super().__init__(external, start_timeout)
        target = MySQLDatabase.from_dsn(external) if external else None
        self.target = target or MySQLDatabase("127.0.0.1", 0, self.USER, self.PASSWORD, self.DATABASE)
        self.binary = ""

    host = property(lambda self: self.target.host)
    port = property(lambda self: self.target.port)
    user = property(lambda self: self.target.user)
    password = property(lambda self: self.target.password)
    database = property(lambda self: self.target.database)

    def dsn(self) -> str:
        return self.target.dsn()

    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self, database: str | None = None, **options):
        """A pymysql connection as the test user (autocommit on)."""
        return self.target.connect(database, **options)

    def create_database(self, name: str) -> MySQLDatabase:
        """A new empty database on this server (utf8mb4), for one test."""
        with self.connect("") as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return MySQLDatabase(self.host, self.port, self.user, self.password, name)

    def drop_database(self, name: str) -> None:
        with self.connect("") as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")

    def _prepare(self) -> None:
        install = "apt-get install mariadb-server"
        self.binary = require_program("mariadbd", install, MYSQL_ENV)
        install_db = require_program("mariadb-install-db", install, MYSQL_ENV)
        self.target = MySQLDatabase("127.0.0.1", free_port(), self.USER, self.PASSWORD, self.DATABASE)
        argv = [install_db, "--no-defaults", f"--datadir={self.tempdir / 'data'}", "--skip-test-db",
                "--auth-root-authentication-method=normal", *self._as_user(), *self.TUNING]
        done = subprocess.run(argv, cwd=self.tempdir, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise ServerUnavailable(f"mariadb-install-db failed (exit {done.returncode}): "
                                    f"{_one_line(done.stdout + done.stderr)}")

    @staticmethod
    def _as_user() -> list[str]:
        """mariadbd refuses to run as root unless told to (the sandbox runs as root in CI)."""
        return ["--user=root"] if os.geteuid() == 0 else []

    def _argv(self) -> list[str]:
        d = self.tempdir
        (d / "tmp").mkdir(exist_ok=True)  # its own temp tables: nothing else cleaning /tmp can break a query
        return [self.binary, "--no-defaults", *self._as_user(), f"--datadir={d / 'data'}",
                f"--tmpdir={d / 'tmp'}", f"--socket={d / 'mysqld.sock'}", f"--pid-file={d / 'mysqld.pid'}", f"--port={self.port}",
                "--bind-address=127.0.0.1", *self.TUNING]

    def _login(self, user: str, password: str) -> bool:
        import pymysql

        try:
            pymysql.connect(host=self.host, port=self.port, user=user, password=password,
                            connect_timeout=1, read_timeout=2, write_timeout=2).close()
            return True
        except pymysql.Error:
            return False

    def _answers(self) -> bool:
        return port_open(self.port) and self._login("root", "")

    def _after_first_start(self) -> None:
        import pymysql

        with pymysql.connect(host=self.host, port=self.port, user="root", password="",
                             autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (self.USER, self.PASSWORD))
            cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@'%%' WITH GRANT OPTION", (self.USER,))
            cur.execute(f"CREATE DATABASE `{self.DATABASE}` CHARACTER SET utf8mb4")

    def _check_external(self) -> None:
        import pymysql

        try:
            self.connect().close()
        except pymysql.Error as error:
            raise ServerUnavailable(f"{MYSQL_ENV} ({self.host}:{self.port}, user {self.user}) refused the "
                                    f"login: {_one_line(str(error))}; fix it or unset {MYSQL_ENV}") from None


def mariadb_server() -> MariaDBServer:
    """The external MySQL named by LATER_READ_TEST_MYSQL, else a new local MariaDB (not started)."""
    return MariaDBServer(external=os.environ.get(MYSQL_ENV) or None)


# --------------------------------------------------------------------------------------------------
# Kafka (single-node KRaft broker+controller from Maven Central jars)


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
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
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
    argv = [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom), "dependency:copy-dependencies",
            f"-DoutputDirectory={into}", "-DincludeScope=runtime"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise ServerUnavailable("mvn took over 15 min fetching the Kafka jars: check access to Maven Central")
    if done.returncode != 0 or not any(into.glob("kafka_2.13-*.jar")):
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if "ERROR" in ln] or [done.stderr]
        raise ServerUnavailable(f"mvn failed (exit {done.returncode}) fetching the Kafka jars from Maven "
                                f"Central: {_one_line(lines[0], 400)}")


def _cluster_id() -> str:
    """A Kafka cluster id (a UUID in URL-safe base64, as `StorageTool random-uuid` prints), no JVM needed."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaServer(LocalServer):
    """A single-node KRaft Kafka (broker and controller in one JVM) with test-friendly settings.

    Topics are not auto-created (tests create theirs with `create_topic`), new topics get 3
    partitions, consumer groups join without the initial rebalance delay.
    """

    kind = "kafka"
    env = KAFKA_ENV
    #: Small heap, serial GC and C1 only: the broker starts about twice as fast on 2 cores.
    JVM = ["-Xmx512m", "-Xms64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData",
           "-Djava.awt.headless=true", "-Dorg.slf4j.simpleLogger.showDateTime=true",
           "-Dorg.slf4j.simpleLogger.log.org.apache.kafka.common.config=warn"]
    TOOL_JVM = ["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"]

    def __init__(self, external: str | None = None, start_timeout: float = 90.0) -> None:
        super().__init__(external, start_timeout)
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
        future = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                                     operation_timeout=timeout)[name]
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
            if topic and topic.error is None and len(topic.partitions) == partitions \
                    and all(p.leader >= 0 for p in topic.partitions.values()):
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
        props = self.tempdir / "server.properties"
        props.write_text(self._properties())
        self._format(props, Path(self.classpath).parent)

    def _format(self, props: Path, jars: Path) -> None:
        """`StorageTool format --standalone`, with a class-data archive kept beside the jars.

        The archive (written by the first format, used by the next ones) saves about half a second
        of the tool's 1.2 s; a missing or stale archive is ignored by the JVM, never an error.
        """
        archive = jars / "storage-tool.jsa"
        staging = jars / f"storage-tool.jsa.{os.getpid()}"
        cds = [f"-XX:SharedArchiveFile={archive}"] if archive.is_file() else \
            [f"-XX:ArchiveClassesAtExit={staging}"] if os.access(jars, os.W_OK) else []
        argv = [self.java, *self.TOOL_JVM, *cds, "-cp", self.classpath, "kafka.tools.StorageTool",
                "format", "--standalone", "-t", _cluster_id(), "-c", str(props)]
        done = subprocess.run(argv, cwd=self.tempdir, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise ServerUnavailable(f"kafka storage format failed (exit {done.returncode}): "
                                    f"{_one_line(done.stdout + done.stderr)}")
        if staging.is_file():
            os.replace(staging, archive)

    def _properties(self) -> str:
        settings = {
            "process.roles": "broker,controller", "node.id": 1,
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": self.tempdir / "data",
            "num.partitions": 3, "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": 0,
            "offsets.topic.replication.factor": 1, "offsets.topic.num.partitions": 3,
            "transaction.state.log.replication.factor": 1, "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 3,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "log.flush.interval.messages": 9223372036854775807,
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _argv(self) -> list[str]:
        return [self.java, *self.JVM, "-cp", self.classpath, "kafka.Kafka",
                str(self.tempdir / "server.properties")]

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
        """Have the broker create __consumer_offsets now (0.2 s) rather than on the first consumer
        group, where librdkafka's coordinator retries turn it into about 3 s inside some test."""
        from confluent_kafka import KafkaException

        admin = self.admin()
        try:
            admin.describe_consumer_groups(["later-read-warm-up"])["later-read-warm-up"].result(30)
        except KafkaException:
            pass  # only an optimisation; a real problem shows in the first test that uses a group

    def _check_external(self) -> None:
        if not self._has_broker(timeout=10.0):
            raise ServerUnavailable(f"{KAFKA_ENV}={self.bootstrap} returned no broker metadata within "
                                    f"10 s: start that Kafka or unset {KAFKA_ENV}")


def kafka_server() -> KafkaServer:
    """The external Kafka named by LATER_READ_TEST_KAFKA, else a new local broker (not started)."""
    return KafkaServer(external=os.environ.get(KAFKA_ENV) or None)


# --------------------------------------------------------------------------------------------------
# Command line

FACTORIES = {"redis": redis_server, "mariadb": mariadb_server, "kafka": kafka_server}


def _env_line(server: LocalServer) -> str:
    """The `export` line that points later tests (or a demo) at this running server."""
    if isinstance(server, RedisServer):
        return f"export {REDIS_ENV}={server.url}"
    if isinstance(server, MariaDBServer):
        return f"export {MYSQL_ENV}={server.dsn()}"
    return f"export {KAFKA_ENV}={server.bootstrap}"


def _interrupt(*_) -> None:
    """SIGTERM handler for `up`: stop like Ctrl-C does, so the servers are stopped too."""
    raise KeyboardInterrupt


def _up(kinds: list[str]) -> int:
    """Start the servers, print export lines, keep them up until SIGINT/SIGTERM."""
    running: list[LocalServer] = []
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for kind in kinds:
            running.append(FACTORIES[kind]().start())
            print(f"# {kind} ready in {running[-1].startup_seconds:.2f} s", file=sys.stderr)
            print(_env_line(running[-1]), flush=True)
        print("# servers are up; Ctrl-C stops them", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        for server in reversed(running):
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m later_read.sandbox.servers",
                                     description="Real local servers for later-read's tests and demo.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch-kafka", help="download the Kafka broker jars (cached) and print their folder")
    up = commands.add_parser("up", help="start servers until Ctrl-C, printing `export` lines for the tests")
    up.add_argument("kinds", nargs="*", metavar="KIND", help="redis, mariadb, kafka (default: all)")
    args = parser.parse_args(argv)
    unknown = set(getattr(args, "kinds", None) or ()) - set(FACTORIES)
    if unknown:
        parser.error(f"unknown server kind {', '.join(sorted(unknown))}: choose from {', '.join(FACTORIES)}")
    try:
        if args.command == "fetch-kafka":
            print(ensure_kafka_classpath())
            return 0
        return _up(args.kinds or list(FACTORIES))
    except ServerUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
