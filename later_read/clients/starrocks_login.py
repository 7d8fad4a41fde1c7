"""Logging in to StarRocks: the connection's options, the guard on the password, a failure's one line.

TLS (`[starrocks] tls`): pymysql gets an `ssl.SSLContext` that always verifies the server's certificate
chain (against `tls_ca_file`, else the system's CAs) and, with `tls_verify_host`, its name against `host`.
Without it, no TLS at all (`ssl_disabled`): pymysql's default would otherwise upgrade, unverified, whenever
the server offers TLS, and the guard below would take an impostor's certificate for a secure connection.
A server that asks for the password in clear text (an auth switch to `mysql_clear_password`, or MariaDB's
`dialog` prompt) gets it only over TLS: without TLS the connection is refused before the password is
sent (`auth_plugin_map`, pymysql's hook for a plugin's handler). docs/design.md, "Secrets".

`connection_problem` is the one line a failed connection or query ends a job with (starrocks.py, the
sandbox's seeder).
"""

from __future__ import annotations

import ssl

import pymysql

from later_read.config.settings import StarRocksSettings


def connect_options(settings: StarRocksSettings) -> dict:
    """pymysql.connect's arguments: the login, timeouts, verified TLS when `tls` (else none), and the
    cleartext guard."""
    s = settings
    options = dict(
        host=s.host,
        port=s.port,
        user=s.user,
        password=s.password,
        database=s.database,
        connect_timeout=s.connect_timeout_seconds,
        read_timeout=s.read_timeout_seconds,
        autocommit=True,
        charset="utf8mb4",
        auth_plugin_map={"mysql_clear_password": ClearPasswordOverTls, "dialog": DialogOverTls},
    )
    if s.tls:
        context = ssl.create_default_context(cafile=s.tls_ca_file or None)
        context.check_hostname = s.tls_verify_host
        context.verify_mode = ssl.CERT_REQUIRED
        options["ssl"] = context
    else:  # no TLS at all: pymysql's default would take the server's TLS unverified (docs/design.md, "Secrets")
        options["ssl_disabled"] = True
    return options


ACCESS_DENIED = 1045  # ER_ACCESS_DENIED_ERROR


class CleartextRefused(pymysql.err.OperationalError):
    """The server asked for the password in clear text on a connection without TLS; it was not sent."""


class ClearPasswordOverTls:
    """pymysql's handler (`auth_plugin_map`) for `mysql_clear_password`: the password as is, over TLS only."""

    def __init__(self, conn: pymysql.connections.Connection) -> None:
        self.conn = conn

    def authenticate(self, packet):
        _require_tls(self.conn)
        self.conn.write_packet(self.conn.password + b"\0")
        reply = self.conn._read_packet()
        reply.check_error()
        return reply


class DialogOverTls:
    """pymysql's handler for MariaDB's `dialog` plugin, whose "Password: " prompt pymysql answers with the
    password as is: over TLS, an AttributeError from `authenticate` hands it back to pymysql's own prompt
    loop (`Connection._process_auth` catches it for `dialog`); without TLS the connection is refused."""

    def __init__(self, conn: pymysql.connections.Connection) -> None:
        self.conn = conn

    def authenticate(self, packet):
        _require_tls(self.conn)
        raise AttributeError("dialog: answered by pymysql's prompt loop")


def _require_tls(conn: pymysql.connections.Connection) -> None:
    if not conn._secure:  # type: ignore[attr-defined]  # pymysql's own flag: set once TLS is up (or on a unix socket)
        raise CleartextRefused(2059, "the server asked for the password in clear text without TLS; not sent")


def connection_problem(settings: StarRocksSettings, exc: pymysql.err.OperationalError) -> str:
    """One line for a failed connection or query: refused cleartext, TLS, or the server's own error."""
    where = f"StarRocks at {settings.host}:{settings.port}"
    code, text = (*exc.args, "")[:2]
    cause = getattr(exc, "original_exception", None)
    if isinstance(exc, CleartextRefused):
        return (
            f"{where} asked for the password in clear text (mysql_clear_password) on a connection "
            "without TLS; refused, the password was not sent; set [starrocks] tls = true (and "
            "tls_ca_file), or check that host/port is really StarRocks"
        )
    if isinstance(cause, ssl.SSLError):
        verify = getattr(cause, "verify_message", None)
        reason = f"certificate verify failed: {verify}" if verify else cause.reason or type(cause).__name__
        return (
            f"{where}: TLS handshake failed ({reason}); check [starrocks] tls_ca_file (the CA that signed "
            "the server's certificate) and tls_verify_host (the certificate must name host)"
        )
    if code == 2026:  # CR_SSL_CONNECTION_ERROR: the server offers no TLS
        return f"{where} does not offer TLS ({text}); turn TLS on at the server or set [starrocks] tls = false"
    fix = "check [starrocks] host/port/user and LATER_READ__STARROCKS__PASSWORD"
    if code == ACCESS_DENIED and not settings.tls:  # MariaDB refuses a login without a TLS it requires so too
        fix += ", or set [starrocks] tls = true (and tls_ca_file) if the server requires TLS"
    return f"{where} failed ({code}: {text}); {fix}"
