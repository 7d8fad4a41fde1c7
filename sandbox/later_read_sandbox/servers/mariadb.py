"""A real MariaDB (`mariadbd`) standing in for StarRocks (same MySQL protocol), or the one
`LATER_READ_TEST_MYSQL` names."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from later_read_sandbox.servers.process import (
    MYSQL_ENV,
    LocalServer,
    ServerUnavailable,
    _one_line,
    free_port,
    port_open,
    require_program,
)


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
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.database if database is None else (database or None),
            autocommit=True,
            charset="utf8mb4",
            **options,
        )

    @classmethod
    def from_dsn(cls, dsn: str) -> MySQLDatabase:
        parts = urlsplit(dsn)
        if parts.scheme not in ("mysql", "mariadb") or not parts.hostname:
            raise ServerUnavailable(f"{MYSQL_ENV}={dsn!r} is not mysql://user:password@host:port/database")
        return cls(
            host=parts.hostname,
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=unquote(parts.path.lstrip("/")) or "later_read",
        )


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a server's TLS: the CA that signed its certificate, the certificate, its key."""

    ca: str
    cert: str
    key: str


class MariaDBServer(LocalServer):
    """mariadbd with a throwaway data directory, tuned for speed over durability.

    Logins: user `later_read` / password `sandbox-pw` over TCP (all privileges, so tests can create
    databases), and root without a password; the database `later_read` exists. With `tls` the server
    offers TLS with those files (clients may still connect without it).
    """

    kind = "mariadb"
    env = MYSQL_ENV
    # The password is a configured secret, so output never shows it: it must not be a word output uses.
    USER, PASSWORD, DATABASE = "later_read", "sandbox-pw", "later_read"
    #: Speed over durability: a test database is thrown away anyway.
    TUNING = (
        "--skip-log-bin",
        "--skip-name-resolve",
        "--innodb-flush-log-at-trx-commit=2",
        "--innodb-buffer-pool-size=64M",
        "--innodb-log-file-size=8M",
        "--innodb-doublewrite=0",
        "--character-set-server=utf8mb4",
        "--max-connections=500",
    )

    def __init__(self, external: str | None = None, start_timeout: float = 30.0, tls: TlsFiles | None = None) -> None:
        super().__init__(external, start_timeout)
        self.tls = tls
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
        argv = [
            install_db,
            "--no-defaults",
            f"--datadir={self.workdir / 'data'}",
            "--skip-test-db",
            "--auth-root-authentication-method=normal",
            *self._as_user(),
            *self.TUNING,
        ]
        done = subprocess.run(argv, cwd=self.workdir, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise ServerUnavailable(
                f"mariadb-install-db failed (exit {done.returncode}): {_one_line(done.stdout + done.stderr)}"
            )

    @staticmethod
    def _as_user() -> list[str]:
        """mariadbd refuses to run as root unless told to (the sandbox runs as root in CI)."""
        return ["--user=root"] if os.geteuid() == 0 else []

    def _argv(self) -> list[str]:
        d = self.workdir
        (d / "tmp").mkdir(exist_ok=True)  # its own temp tables: nothing else cleaning /tmp can break a query
        return [
            self.binary,
            "--no-defaults",
            *self._as_user(),
            f"--datadir={d / 'data'}",
            f"--tmpdir={d / 'tmp'}",
            f"--socket={d / 'mysqld.sock'}",
            f"--pid-file={d / 'mysqld.pid'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            *self.TUNING,
            *self._tls_options(),
        ]

    def _tls_options(self) -> list[str]:
        t = self.tls
        return [f"--ssl-ca={t.ca}", f"--ssl-cert={t.cert}", f"--ssl-key={t.key}"] if t else []

    def _login(self, user: str, password: str) -> bool:
        import pymysql

        try:
            pymysql.connect(
                host=self.host,
                port=self.port,
                user=user,
                password=password,
                connect_timeout=1,
                read_timeout=2,
                write_timeout=2,
            ).close()
            return True
        except pymysql.Error:
            return False

    def _answers(self) -> bool:
        return port_open(self.port) and self._login("root", "")

    def _after_first_start(self) -> None:
        import pymysql

        with (
            pymysql.connect(host=self.host, port=self.port, user="root", password="", autocommit=True) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (self.USER, self.PASSWORD))
            cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@'%%' WITH GRANT OPTION", (self.USER,))
            cur.execute(f"CREATE DATABASE `{self.DATABASE}` CHARACTER SET utf8mb4")

    def _check_external(self) -> None:
        import pymysql

        try:
            self.connect().close()
        except pymysql.Error as error:
            raise ServerUnavailable(
                f"{MYSQL_ENV} ({self.host}:{self.port}, user {self.user}) refused the "
                f"login: {_one_line(str(error))}; fix it or unset {MYSQL_ENV}"
            ) from None


def mariadb_server() -> MariaDBServer:
    """The external MySQL named by LATER_READ_TEST_MYSQL, else a new local MariaDB (not started)."""
    return MariaDBServer(external=os.environ.get(MYSQL_ENV) or None)
