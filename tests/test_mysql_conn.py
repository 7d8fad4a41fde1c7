"""later_read/clients/mysql_conn.py against pymysql itself, on a real MariaDB: the same rows, the same quoting,
the same errors (the server's, a lost connection), whatever the text."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import types

import pymysql
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from later_read.clients import mysql_conn

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)  # utf8mb4 holds any non-surrogate
# Lengths on both sides of each of the length prefixes' bounds (1, 2 and 3 bytes of length).
LONG = st.sampled_from([250, 251, 252, 65535, 65536, 70000]).map(lambda n: "é" * (n // 2) + "x" * (n % 2))
VALUE = st.one_of(st.none(), TEXT, LONG)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def ours(db, **options) -> mysql_conn.Connection:
    return mysql_conn.Connection(
        host=db.host, port=db.port, user=db.user, password=db.password, database=db.database, autocommit=True,
        charset="utf8mb4", **options,
    )  # fmt: skip


def rows_of(conn, sql: str, params: list | None = None) -> tuple:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


@pytest.fixture
def both(mysql):
    """(pymysql's connection, ours) to one fresh database."""
    theirs, mine = mysql.connect(), ours(mysql)
    yield theirs, mine
    theirs.close()
    mine.close()


@SETTINGS
@given(rows=st.lists(st.tuples(VALUE, VALUE, VALUE), max_size=30))
def test_text_rows_read_alike(both, rows):
    theirs, mine = both
    rows_of(
        theirs, "CREATE OR REPLACE TABLE t (id INT PRIMARY KEY, a MEDIUMTEXT, b LONGTEXT, c MEDIUMTEXT) CHARSET utf8mb4"
    )
    for i, row in enumerate(rows):
        rows_of(theirs, "INSERT INTO t VALUES (%s, %s, %s, %s)", [i, *row])
    for sql in ("SELECT a, b, c FROM t ORDER BY id", "SELECT a FROM t ORDER BY id", "SELECT b, a FROM t ORDER BY id"):
        read = rows_of(mine, sql)
        assert read == rows_of(theirs, sql)
        assert all(type(v) in (str, type(None)) for row in read for v in row)
    assert rows_of(mine, "SELECT id, a FROM t ORDER BY id") == rows_of(theirs, "SELECT id, a FROM t ORDER BY id")


@SETTINGS
@given(
    params=st.lists(
        st.one_of(TEXT, st.sampled_from(["\x01", "a\x01b", "'", "\\", "\x00", "%s", "\\'"]), st.integers(), st.none()),
        max_size=12,
    ),
    no_backslash=st.booleans(),
)
def test_bind_quotes_as_pymysql_does_and_the_server_reads_the_values_back(both, params, no_backslash):
    theirs, mine = both
    mode = "NO_BACKSLASH_ESCAPES" if no_backslash else ""
    for conn in both:
        rows_of(conn, f"SET SESSION sql_mode = '{mode}'")
    sql = "SELECT " + ", ".join(["%s"] * len(params)) if params else "SELECT 1"
    with theirs.cursor() as cur:
        assert mine.bind(sql, params) == cur.mogrify(sql, params)
    if params:
        found = rows_of(mine, mine.bind(sql, params))[0]
        assert [str(v) if v is not None else None for v in found] == [str(p) if p is not None else None for p in params]


def test_bind_refuses_a_count_mismatch_as_pymysql_does(both):
    _, mine = both
    with pytest.raises(pymysql.err.ProgrammingError):
        mine.bind("SELECT %s, %s", ["one"])


def test_a_row_over_16_mb_is_joined_from_its_packets(mariadb_server, mysql):
    admin = mysql.connect()
    (before,) = rows_of(admin, "SELECT @@GLOBAL.max_allowed_packet")[0]
    rows_of(admin, "SET GLOBAL max_allowed_packet = %s", [64 * 1024 * 1024])
    try:
        theirs, mine = mysql.connect(), ours(mysql)  # new sessions take the new bound
        sql = "SELECT REPEAT('é', 9000000), 'after', NULL UNION ALL SELECT 'short', REPEAT('x', 16777215), ''"
        read = rows_of(mine, sql)
        assert read == rows_of(theirs, sql)
        assert len(read[0][0]) == 9_000_000 and read[1][2] == ""
        assert rows_of(mine, "SELECT 'still in step'") == (("still in step",),)
    finally:
        rows_of(admin, "SET GLOBAL max_allowed_packet = %s", [before])


def test_the_servers_error_after_some_rows_is_raised_as_pymysql_raises_it(both):
    theirs, mine = both
    rows_of(theirs, "CREATE TABLE t (n INT, s VARCHAR(10))")
    rows_of(theirs, "INSERT INTO t VALUES " + ", ".join(f"({i}, 'r{i}')" for i in range(5000)))
    # The scalar subquery is only evaluated from row 4000 on: rows go out before the error does.
    sql = "SELECT s, IF(n < 4000, 'ok', (SELECT s FROM t)) FROM t ORDER BY n"
    errors = []
    for conn in (theirs, mine):
        with pytest.raises(pymysql.err.MySQLError) as caught:
            rows_of(conn, sql)
        errors.append((type(caught.value), caught.value.args))
        assert rows_of(conn, "SELECT 'still usable'") == (("still usable",),)
    assert errors[0] == errors[1]
    assert errors[0][1][0] == 1242  # ER_SUBQUERY_NO_1_ROW


def test_a_query_sent_ahead_is_read_later_as_a_cursor_reads_it(both, mysql):
    """`send` returns before the result; `receive` reads the rows `fetchall` would, and the server's error
    as pymysql raises it, after which the connection is in step. One result pending at a time."""
    theirs, mine = both
    rows_of(theirs, "CREATE TABLE t (n INT, s VARCHAR(10))")
    rows_of(theirs, "INSERT INTO t VALUES " + ", ".join(f"({i}, 'r{i}')" for i in range(5000)))
    for sql in ("SELECT s, s FROM t ORDER BY n", "SELECT s FROM t WHERE n < 0", "SELECT n, s FROM t ORDER BY n"):
        mine.send(mine.bind(sql, []))
        assert mine.pending
        with pytest.raises(pymysql.err.ProgrammingError, match="still pending"):
            mine.send("SELECT 'refused'")  # nothing sent: the pending result is still the one read next
        assert mine.receive() == rows_of(theirs, sql)
        assert not mine.pending
    with pytest.raises(pymysql.err.ProgrammingError, match="no query was sent"):
        mine.receive()
    mine.send("SELECT s, IF(n < 4000, 'ok', (SELECT s FROM t)) FROM t ORDER BY n")  # fails after 4,000 rows
    with pytest.raises(pymysql.err.MySQLError) as caught:
        mine.receive()
    assert caught.value.args[0] == 1242  # ER_SUBQUERY_NO_1_ROW
    assert rows_of(mine, "SELECT 'in step'") == (("in step",),)
    other = ours(mysql)
    other.send("SELECT 'left unread'")
    other.close()  # a result left unread: the connection closes as any other
    assert not other.open


class CuttingProxy:
    """A loopback TCP proxy to the server that, once armed, closes both sides after passing `cut_after`
    more bytes from the server: a connection lost in the middle of a result set."""

    def __init__(self, host: str, port: int, cut_after: int) -> None:
        self.target, self.cut_after, self.armed = (host, port), cut_after, False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(self.target)
        threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
        self._pipe(server, client, True)

    def _pipe(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_server and self.armed:
                    data = data[: self.cut_after]
                    self.cut_after -= len(data)
                    sink.sendall(data)
                    if self.cut_after <= 0:
                        break
                    continue
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):  # shutdown, not just close: the other direction's thread is in recv on it
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.mark.parametrize("connect", ["pymysql", "later_read"])
def test_a_connection_lost_mid_result_is_closed_and_raised_as_server_lost(mysql, connect):
    setup = mysql.connect()
    rows_of(setup, "CREATE TABLE IF NOT EXISTS t (s VARCHAR(20))")
    rows_of(setup, "INSERT INTO t VALUES " + ", ".join(f"('row{i:06d}')" for i in range(20000)))
    proxy = CuttingProxy(mysql.host, mysql.port, cut_after=30000)
    options = dict(host="127.0.0.1", port=proxy.port, user=mysql.user, password=mysql.password, database=mysql.database)
    conn = pymysql.connect(**options) if connect == "pymysql" else mysql_conn.Connection(**options)
    proxy.armed = True
    with pytest.raises(pymysql.err.OperationalError) as caught:
        rows_of(conn, "SELECT s FROM t")
    assert caught.value.args[0] == 2013  # CR_SERVER_LOST, what starrocks.py reads as a lost connection
    assert not conn.open


class _Wire:
    """The connection side `_text_rows` reads: a buffered reader over the packets given, and whether it was
    closed (the bytes are made here: a protocol breach no real server sends on demand)."""

    encoding = "utf8"

    def __init__(self, *payloads: bytes, first_seq: int = 1) -> None:
        framed = b"".join(
            len(p).to_bytes(3, "little") + bytes([(first_seq + i) & 0xFF]) + p for i, p in enumerate(payloads)
        )
        self._rfile, self._next_seq_id, self.closed = io.BufferedReader(io.BytesIO(framed)), first_seq, False

    def _force_close(self) -> None:
        self.closed = True


EOF_PACKET = b"\xfe\x00\x00\x02\x00"


@pytest.mark.parametrize(
    ("payloads", "error", "code"),
    [
        ((b"\x05ab", EOF_PACKET), mysql_conn.Garbled, None),  # a row shorter than its length says
        ((b"\x01a", b"", EOF_PACKET), mysql_conn.Garbled, None),  # an empty packet
        ((b"\x01a\x01b",), pymysql.err.OperationalError, 2013),  # the stream ends before the EOF packet
    ],
)
def test_a_result_that_breaks_the_protocol_closes_the_connection(payloads, error, code):
    wire = _Wire(*payloads)
    result = types.SimpleNamespace(connection=wire)
    with pytest.raises(error) as caught:
        mysql_conn._text_rows(result, 2, "utf8")
    assert wire.closed
    if code is not None:
        assert caught.value.args[0] == code


def test_a_packet_out_of_sequence_closes_the_connection():
    wire = _Wire(b"\x01a\x01b", EOF_PACKET, first_seq=1)
    wire._next_seq_id = 3  # the reader expects another sequence number than the server sent
    with pytest.raises(pymysql.err.InternalError, match="sequence"):
        mysql_conn._text_rows(types.SimpleNamespace(connection=wire), 2, "utf8")
    assert wire.closed


def test_rows_and_the_eof_packet_read_from_bytes_keep_the_sequence():
    wire = _Wire(b"\x01a\x01b", b"\x00\xfb", b"\xfc\x00\x01" + b"x" * 256 + b"\x00", EOF_PACKET)
    checked = []
    result = types.SimpleNamespace(connection=wire, _check_packet_is_eof=checked.append)
    assert mysql_conn._text_rows(result, 2, "utf8") == (("a", "b"), ("", None), ("x" * 256, ""))
    assert wire._next_seq_id == 5 and len(checked) == 1 and not wire.closed
