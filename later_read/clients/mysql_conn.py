"""pymysql's connection, faster where the users' pages spend their time: reading text rows, quoting uids.

pymysql reads each row through half a dozen Python calls (a packet object, a bounds-checked reader per
column, a decode per column) and quotes each parameter through as many: about 3 us per row read and
0.5 us per uid quoted, a fifth of the push's CPU per user. `Connection` is pymysql's own but for two
steps:

- a buffered result whose every column is text in one encoding with no converter (what `UserQuery`'s pages
  and earlier-hour lookups select) is read by `_text_rows`, one loop over the socket's buffered reader
  that frames the packets and splits each row's length-encoded strings itself;
- `bind` quotes a query's string parameters in one `_escape_string` call over all of them (escaping is
  per character in both of pymysql's modes) and every other parameter as pymysql does.

It also sends a query without waiting for its result (`send`, then `receive`): the server runs it while
the caller works, as starrocks.py reads a task id's next page and a page's earlier-hour lookup.

Everything else (the handshake, TLS, the authentication guard of starrocks_login.py, errors, other column
types, unbuffered results) is pymysql's code, unchanged. The loop keeps pymysql's contract for what it
reads: rows as tuples of `str` (None for NULL), the packet sequence checked, a row over 16 MB joined from
its packets, the server's error packet raised as pymysql raises it, a lost connection closed and raised
as `OperationalError` (CR_SERVER_LOST), the EOF packet's warnings and status kept. tests/test_mysql_conn.py
holds rows and quoting equal to pymysql's against a real MariaDB.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import pymysql
from pymysql import err
from pymysql.connections import MAX_PACKET_LEN, MySQLResult
from pymysql.constants import COMMAND, CR
from pymysql.protocol import MysqlPacket

# A length-encoded string's first byte: below _NULL the length itself, else NULL or the width of the length.
_NULL, _TWO, _THREE, _EIGHT = 0xFB, 0xFC, 0xFD, 0xFE
SEPARATOR = "\x01"  # what `bind` joins the strings with: escaping leaves it as it is in both modes
_ERROR = 0xFF  # the first byte of the server's error packet (an EOF packet: _EIGHT and under 9 bytes)


class Garbled(err.InternalError):
    """A result set's packet that breaks the protocol (empty, or a row shorter than its lengths say): the
    connection is closed, as for a packet out of sequence."""


class Connection(pymysql.connections.Connection):
    """pymysql's Connection whose buffered results are read by `TextResult`, with `bind`, `send` and
    `receive`."""

    pending = False  # a query `send` sent whose result `receive` has not read: the connection takes no other

    def send(self, sql: str) -> None:
        """Send one query (`bind`'s SQL) and return at once: the server runs it and its result waits in the
        socket until `receive` reads it. A result still pending is a ProgrammingError, nothing sent."""
        if self.pending:
            raise err.ProgrammingError("a query's result is still pending on this connection")
        self._execute_command(COMMAND.COM_QUERY, sql)  # type: ignore[attr-defined]  # pymysql's, as query() sends
        self.pending = True

    def receive(self) -> tuple[tuple[Any, ...], ...]:
        """The rows of the query `send` sent, buffered (as `cursor.fetchall()` returns them: () for none);
        the server's error raised as pymysql raises it."""
        if not self.pending:
            raise err.ProgrammingError("no query was sent on this connection")
        self.pending = False
        self._read_query_result()
        rows = self._result.rows if self._result is not None else None
        return rows if rows is not None else ()

    def bind(self, sql: str, params: Sequence[Any]) -> str:
        """`sql` with `params` quoted in, as pymysql's `Cursor.mogrify` would make it: run it with no
        parameters (`cursor.execute(bound)`). The strings are quoted together: joined by SEPARATOR, escaped
        and quoted in one pass, split again (one by one when one of them holds SEPARATOR); any other
        parameter as pymysql quotes it."""
        others = [i for i, p in enumerate(params) if type(p) is not str]
        strings = [p for p in params if type(p) is str] if others else params
        joined = SEPARATOR.join(strings)
        if strings and joined.count(SEPARATOR) == len(strings) - 1:
            quote = "'" + SEPARATOR + "'"
            escaped: str = self._escape_string(joined)  # type: ignore[attr-defined]  # pymysql's, by the server's mode
            literals = ("'" + escaped.replace(SEPARATOR, quote) + "'").split(SEPARATOR)
        else:
            literals = [self.escape(p) for p in strings]
        for i in others:
            literals.insert(i, self.escape(params[i]))
        try:
            return sql % tuple(literals)
        except TypeError as exc:
            raise err.ProgrammingError(str(exc)) from None

    def _read_query_result(self, unbuffered: bool = False) -> int | None:
        if unbuffered:
            return super()._read_query_result(unbuffered=True)  # type: ignore[misc]
        self._result = None  # as pymysql's own, with TextResult for MySQLResult
        result = TextResult(self)
        result.read()
        self._result = result
        if result.server_status is not None:
            self.server_status = result.server_status
        return result.affected_rows


class TextResult(MySQLResult):
    """A buffered result: text-only rows read in one loop, any other result by pymysql's reader."""

    def _read_rowdata_packet(self) -> None:
        converters: list[tuple[str | None, Any]] = self.converters  # type: ignore[attr-defined]
        encodings = {encoding for encoding, _ in converters}
        if len(encodings) != 1 or None in encodings or any(c is not None for _, c in converters):
            super()._read_rowdata_packet()  # type: ignore[misc]
            return
        encoding = encodings.pop()
        assert encoding is not None
        self.rows = _text_rows(self, len(converters), encoding)
        self.affected_rows = len(self.rows)
        self.connection = None  # as pymysql: no cycle once the result is read


def _text_rows(result: TextResult, columns: int, encoding: str) -> tuple[tuple[str | None, ...], ...]:
    """The rows up to the EOF packet, each a tuple of `columns` strings (None: NULL). A failed read closes
    the connection, as pymysql's `_read_bytes` does."""
    conn: Any = result.connection  # pymysql's private reader and sequence number: not in its type stubs
    try:
        return _read_rows(result, conn, columns, encoding)
    except Garbled:
        conn._force_close()  # the rest of the result is unread: the connection is of no more use
        raise
    except err.MySQLError:  # the server's error: the connection is in step, as after pymysql's
        raise
    except OSError as exc:
        conn._force_close()
        raise err.OperationalError(CR.CR_SERVER_LOST, f"Lost connection to MySQL server during query ({exc})") from None
    except BaseException:
        conn._force_close()  # the rest of the result is unread: the connection is of no more use
        raise


def _read_rows(result: TextResult, conn: Any, columns: int, encoding: str) -> tuple[tuple[str | None, ...], ...]:
    """`_text_rows`' loop: each packet framed as pymysql's `_read_packet` frames it, each row split."""
    read, seq = conn._rfile.read, conn._next_seq_id
    rows: list[tuple[str | None, ...]] = []
    append = rows.append
    while True:
        data, size = b"", MAX_PACKET_LEN
        while size == MAX_PACKET_LEN:  # a payload of 16 MB or more goes on in the next packets
            head = read(4)
            if len(head) < 4:
                _lost(conn)
            size = head[0] | head[1] << 8 | head[2] << 16
            if head[3] != seq:
                _out_of_sequence(conn, head[3], seq)
            seq = (seq + 1) & 0xFF
            part = read(size)
            if len(part) < size:
                _lost(conn)
            data = data + part if data else part
        first = data[0] if data else None
        if first is None or first == _ERROR or (first == _EIGHT and len(data) < 9):
            _end(result, conn, data, seq)  # the EOF packet, or the server's error raised
            return tuple(rows)
        if first < _NULL:  # the common row: one or two strings of under 251 bytes, read without `_row`
            if columns == 1 and len(data) == first + 1:
                append((data[1:].decode(encoding),))
                continue
            second = data[first + 1] if len(data) > first + 1 else _NULL
            if columns == 2 and second < _NULL and len(data) == first + 2 + second:
                append((data[1 : first + 1].decode(encoding), data[first + 2 :].decode(encoding)))
                continue
        append(_row(data, columns, encoding))


def _end(result: TextResult, conn: Any, data: bytes, seq: int) -> None:
    """The packet that ends a result set: the server's error raised as pymysql raises it, or the EOF
    packet's warnings and status kept."""
    conn._next_seq_id = seq
    if not data:
        raise Garbled("an empty packet in a result set")
    packet = MysqlPacket(data, conn.encoding)
    packet.check_error()
    result._check_packet_is_eof(packet)  # type: ignore[attr-defined]


def _row(data: bytes, columns: int, encoding: str) -> tuple[str | None, ...]:
    """One row's length-encoded strings, decoded; a row with fewer columns ends early, as in pymysql."""
    row: list[str | None] = []
    pos, end = 0, len(data)
    for _ in range(columns):
        if pos >= end:
            break
        first = data[pos]
        if first < _NULL:
            start = pos + 1
            pos = start + first
        elif first == _NULL:
            row.append(None)
            pos += 1
            continue
        else:
            width = 2 if first == _TWO else 3 if first == _THREE else 8
            start = pos + 1 + width
            pos = start + int.from_bytes(data[pos + 1 : start], "little")
        row.append(data[start:pos].decode(encoding))
    if pos > end:
        raise Garbled(f"a row shorter than its lengths say ({end} bytes)")
    return tuple(row)


def _lost(conn: Any) -> NoReturn:
    conn._force_close()
    raise err.OperationalError(CR.CR_SERVER_LOST, "Lost connection to MySQL server during query")


def _out_of_sequence(conn: Any, got: int, expected: int) -> NoReturn:
    conn._force_close()
    if got == 0:  # MariaDB's error packet at shutdown
        raise err.OperationalError(CR.CR_SERVER_LOST, "Lost connection to MySQL server during query")
    raise err.InternalError(f"Packet sequence number wrong - got {got} expected {expected}")
