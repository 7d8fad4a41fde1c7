"""A small fake MySQL server that asks for the password in clear text, and records whether it got it.

A real TCP server on loopback speaking the start of the MySQL protocol: the v10 handshake (offering
`mysql_native_password`, and TLS when given a certificate), then, whatever the client answered, an auth
switch request to `mysql_clear_password` (the plugin StarRocks' LDAP login uses). Whatever the client sends
next is recorded in `received` (the password and its NUL, when a client complies) and answered OK, as is
every later command, until the client closes. An impostor on the configured address would do exactly this.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading

PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH, CLIENT_SSL = 1 << 9, 1 << 15, 1 << 19, 1 << 11
CAPABILITIES = 1 | 8 | PROTOCOL_41 | (1 << 13) | SECURE_CONNECTION | PLUGIN_AUTH | (1 << 21)
SALT = b"0123456789abcdefghij"
OK = b"\x00\x00\x00\x02\x00\x00\x00"


class FakeMySQL:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.received: list[bytes] = []  # what each client sent after the switch to mysql_clear_password
        self.switched = 0  # auth switch requests sent
        self.tls_used = False
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeMySQL:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self._session(conn)
                except (OSError, ssl.SSLError, EOFError):
                    pass

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        caps = CAPABILITIES | (CLIENT_SSL if self.tls else 0)
        greeting = (
            b"\x0a8.0.99-fake\x00"
            + struct.pack("<I", 7)
            + SALT[:8]
            + b"\x00"
            + struct.pack("<H", caps & 0xFFFF)
            + b"\x21"
            + struct.pack("<H", 2)
            + struct.pack("<H", caps >> 16)
            + bytes([len(SALT) + 1])
            + b"\x00" * 10
            + SALT[8:]
            + b"\x00"
            + b"mysql_native_password\x00"
        )
        _send(conn, 0, greeting)
        seq, payload = _read(conn)
        if self.tls and len(payload) == 32:  # the client's SSL request: TLS from here on
            conn = self.tls.wrap_socket(conn, server_side=True)
            self.tls_used = True
            seq, payload = _read(conn)
        _send(conn, seq + 1, b"\xfe" + b"mysql_clear_password\x00" + SALT + b"\x00")
        self.switched += 1
        seq, payload = _read(conn)
        self.received.append(payload)
        _send(conn, seq + 1, OK)
        while True:  # SET NAMES, autocommit, queries, COM_QUIT: OK to all until the client closes
            seq, payload = _read(conn)
            if payload[:1] == b"\x01":
                return
            _send(conn, seq + 1, OK)


def _send(conn: socket.socket, seq: int, payload: bytes) -> None:
    conn.sendall(struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload)


def _read(conn: socket.socket) -> tuple[int, bytes]:
    head = _exact(conn, 4)
    return head[3], _exact(conn, int.from_bytes(head[:3], "little"))


def _exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
