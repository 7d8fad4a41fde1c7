"""A real redis-server on a free loopback port (or the one `LATER_READ_TEST_REDIS_URL` names)."""

from __future__ import annotations

import os
from urllib.parse import quote, urlsplit

from later_read_sandbox.servers.process import (
    REDIS_ENV,
    LocalServer,
    ServerUnavailable,
    free_port,
    port_open,
    require_program,
)


class RedisServer(LocalServer):
    """redis-server without persistence on a free loopback port; `.url` ends in /0 (and carries the
    password when started with `password`, redis-server's requirepass)."""

    kind = "redis"
    env = REDIS_ENV

    def __init__(self, external: str | None = None, start_timeout: float = 15.0, password: str = "") -> None:
        super().__init__(external, start_timeout)
        self.port = (urlsplit(external).port or 6379) if external else 0
        self.password = password
        self.binary = ""

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return self.external or f"redis://{auth}127.0.0.1:{self.port}/0"

    def address(self) -> str:
        return self.url

    def client(self, **options):
        """A redis-py client for this server (the caller closes it)."""
        import redis

        options.setdefault("socket_connect_timeout", 1)
        return redis.Redis.from_url(self.url, **options)

    #: How the server keeps its data: nothing on disk (a subclass may ask for an append-only file).
    PERSISTENCE: tuple[str, ...] = ("--appendonly", "no")

    def _prepare(self) -> None:
        self.binary = require_program("redis-server", "apt-get install redis-server", REDIS_ENV)
        self.port = free_port()

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.tempdir),
            "--save",
            "",
            *self.PERSISTENCE,
            "--daemonize",
            "no",
            "--logfile",
            "",
            *(["--requirepass", self.password] if self.password else []),
        ]

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
            raise ServerUnavailable(
                f"{REDIS_ENV}={self.url} does not answer PING: start that Redis "
                f"or unset {REDIS_ENV} to let the tests run their own"
            )


def redis_server() -> RedisServer:
    """The external Redis named by LATER_READ_TEST_REDIS_URL, else a new local one (not started)."""
    return RedisServer(external=os.environ.get(REDIS_ENV) or None)
