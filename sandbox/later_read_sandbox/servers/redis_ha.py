"""Highly available Redis for tests and benchmarks: a Redis Cluster and a Sentinel group, real servers.

- `RedisClusterGroup`: 3 masters + 3 replicas (`redis-server --cluster-enabled yes`, joined by
  `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`), `cluster-node-timeout` 1 s so a
  killed master's replica takes over within a few seconds.
- `RedisSentinelGroup`: 1 master, 1 replica and 3 sentinels (`redis-server sentinel.conf --sentinel`)
  monitoring it as `mymaster` with `down-after-milliseconds` 1 s.

Every process listens on a free loopback port (bus ports too), lives in one temporary directory and its
own process group, and dies with the session (ChildProcess: PR_SET_PDEATHSIG, atexit). `kill_master()`
SIGKILLs the master (the replica is promoted by the cluster / the sentinels); `wait_failover()` returns
once the promoted node serves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from later_read_sandbox.servers.process import (
    REDIS_ENV,
    ChildProcess,
    ServerUnavailable,
    free_port,
    port_open,
    require_program,
    wait_until,
)

NODE_TIMEOUT_MS = 1000  # cluster-node-timeout / down-after-milliseconds: a failover in ~2-5 s
SENTINEL_FAILOVER_TIMEOUT_MS = 5000
SERVICE_NAME = "mymaster"
_COMMON = [
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--daemonize",
    "no",
    "--logfile",
    "",
    "--protected-mode",
    "no",
    # a replica must hold the data before a master is killed: no 5 s wait before the first sync
    "--repl-diskless-sync-delay",
    "0",
]


def _client(port: int, **options):
    import redis

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=1, **options)


def _ask(port: int, call, default=None):
    """call(client) against 127.0.0.1:port; `default` when the server does not answer."""
    import redis

    client = _client(port)
    try:
        return call(client)
    except (redis.RedisError, OSError):
        return default
    finally:
        client.close()


def _poll(ready, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"{what} within {timeout:.0f} s")
        time.sleep(0.1)


class _Group:
    """A set of redis-server processes in one temporary directory, stopped together."""

    kind = "redis-group"

    def __init__(self, start_timeout: float = 30.0) -> None:
        self.start_timeout = start_timeout
        self.tempdir: Path | None = None
        self.children: dict[int, ChildProcess] = {}  # port -> process
        self.binary = ""
        self.killed: int | None = None  # the master `kill_master` took down (wait_failover looks past it)

    @property
    def workdir(self) -> Path:
        """The temporary directory, from the start until stop() (only a started server has one)."""
        assert self.tempdir is not None, "not started"
        return self.tempdir

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self):
        if self.tempdir is not None:
            return self
        self.binary = require_program("redis-server", "apt-get install redis-server", REDIS_ENV)
        self.tempdir = Path(tempfile.mkdtemp(prefix=f"later-read-{self.kind}-"))
        (self.tempdir / "owner.pid").write_text(f"{os.getpid()}\n")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def _spawn(self, port: int, argv: list[str], name: str) -> ChildProcess:
        folder = self.workdir / name
        folder.mkdir(exist_ok=True)
        child = ChildProcess([self.binary, *argv], folder / "redis.log", folder)
        child.start()
        self.children[port] = child
        wait_until(
            lambda: port_open(port) and _ask(port, lambda c: c.ping(), False),
            child,
            self.start_timeout,
            f"{self.kind} {name} on port {port}",
        )
        return child

    def kill(self, port: int) -> None:
        """SIGKILL the process listening on `port` (a crash, not a shutdown)."""
        child = self.children.pop(port)
        child.kill()

    def _kill_master_at(self, port: int) -> int:
        """SIGKILL the master on `port` and remember it for `wait_failover`; returns the port."""
        self.kill(port)
        self.killed = port
        return port

    def stop(self) -> None:
        for child in self.children.values():
            child.kill()
        self.children.clear()
        if self.tempdir is not None:
            shutil.rmtree(self.tempdir, ignore_errors=True)
            self.tempdir = None


class RedisClusterGroup(_Group):
    """3 masters + 3 replicas; `.url` names one node (the client discovers the rest)."""

    kind = "redis-cluster"
    size = 6

    def _start(self) -> None:
        self.ports = [free_port() for _ in range(self.size)]
        for i, port in enumerate(self.ports):
            self._spawn(
                port,
                [
                    "--port",
                    str(port),
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    *_COMMON,
                    "--dir",
                    str(self.workdir / f"node{i}"),
                ],
                f"node{i}",
            )
        cli = require_program("redis-cli", "apt-get install redis-tools", REDIS_ENV)
        done = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=self.start_timeout,
            check=False,
        )
        if done.returncode != 0:
            raise ServerUnavailable(f"redis-cli --cluster create failed: {done.stdout[-300:]}{done.stderr}")
        _poll(self.healthy, self.start_timeout, "the cluster did not reach state ok with a replica per master")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.live_ports()[0]}/0"

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if p in self.children]

    def nodes(self) -> list[dict]:
        """CLUSTER NODES as seen by a live node: [{"port", "role", "failed", "slots"}]."""
        for port in self.live_ports():
            seen = _nodes_seen_by(port)
            if seen:
                return seen
        return []

    def masters(self) -> list[int]:
        return [n["port"] for n in self.nodes() if n["role"] == "master" and not n["failed"] and n["slots"]]

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok and already sees 3 masters with slots and 3 replicas (the
        roles travel by gossip: right after `--cluster create` a node can still list a replica as a
        master, and a `check` asking it would count 2 replicas); 3 serving masters each have a synced
        replica."""
        for port in self.live_ports():
            info = _ask(port, lambda c: c.execute_command("CLUSTER", "INFO"), b"")
            if b"cluster_state:ok" not in (info if isinstance(info, bytes) else info.encode()):
                return False
            seen = [n for n in _nodes_seen_by(port) if not n["failed"]]
            if (
                sum(1 for n in seen if n["role"] == "master" and n["slots"]) != 3
                or sum(1 for n in seen if n["role"] == "replica") != 3
            ):
                return False
        masters = self.masters()
        synced = [p for p in masters if _replica_online(p)]
        return len(masters) == 3 and len(synced) == 3

    def kill_master(self, port: int | None = None) -> int:
        """SIGKILL a master (the first one, or `port`); its replica is promoted. Returns its port."""
        return self._kill_master_at(port or self.masters()[0])

    def wait_failover(self, timeout: float = 30.0) -> None:
        """Return once every live node says cluster_state:ok again (the replica took the slots)."""

        def ok() -> bool:
            masters = self.masters()
            return (
                len(masters) == 3
                and self.killed not in masters
                and all(
                    b"cluster_state:ok" in _ask(p, lambda c: c.execute_command("CLUSTER", "INFO"), b"")
                    for p in self.live_ports()
                )
            )

        _poll(ok, timeout, "no replica took over the killed master's slots")


def _nodes_seen_by(port: int) -> list[dict]:
    """CLUSTER NODES as the node on `port` sees it; [] when it does not answer."""
    text = _ask(port, lambda c: c.execute_command("CLUSTER", "NODES"))
    return [_parse_node(line) for line in _text(text).splitlines() if line.strip()] if text else []


def _replica_online(port: int) -> bool:
    """Whether the master on `port` has a replica that finished its sync (state=online)."""
    info = _ask(port, lambda c: c.info("replication"), {})
    replica = info.get("slave0")
    return isinstance(replica, dict) and replica.get("state") == "online"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse_node(line: str) -> dict:
    parts = line.split()
    flags = parts[2].split(",")
    return {
        "port": int(parts[1].split("@")[0].rsplit(":", 1)[1]),
        "role": "master" if "master" in flags else "replica" if "slave" in flags else "unknown",
        "failed": "fail" in flags or "fail?" in flags,
        "slots": parts[8:],
    }


class RedisSentinelGroup(_Group):
    """1 master + 1 replica watched by 3 sentinels as `mymaster`; `.sentinels` are "host:port" strings."""

    kind = "redis-sentinel"

    def _start(self) -> None:
        self.master_port, self.replica_port = free_port(), free_port()
        self._spawn(
            self.master_port,
            ["--port", str(self.master_port), *_COMMON, "--dir", str(self.workdir / "master")],
            "master",
        )
        self._spawn(
            self.replica_port,
            [
                "--port",
                str(self.replica_port),
                "--replicaof",
                "127.0.0.1",
                str(self.master_port),
                *_COMMON,
                "--dir",
                str(self.workdir / "replica"),
            ],
            "replica",
        )
        self.sentinel_ports = [free_port() for _ in range(3)]
        for i, port in enumerate(self.sentinel_ports):
            self._spawn(port, [str(self._sentinel_conf(i, port)), "--sentinel"], f"sentinel{i}")
        _poll(self.healthy, self.start_timeout, "the sentinels did not see the master, the replica and each other")

    def _sentinel_conf(self, i: int, port: int) -> Path:
        folder = self.workdir / f"sentinel{i}"
        folder.mkdir(exist_ok=True)
        conf = folder / "sentinel.conf"
        conf.write_text(
            "\n".join(
                [
                    f"port {port}",
                    "bind 127.0.0.1",
                    "protected-mode no",
                    f"dir {folder}",
                    f"sentinel monitor {SERVICE_NAME} 127.0.0.1 {self.master_port} 2",
                    f"sentinel down-after-milliseconds {SERVICE_NAME} {NODE_TIMEOUT_MS}",
                    f"sentinel failover-timeout {SERVICE_NAME} {SENTINEL_FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {SERVICE_NAME} 1",
                    "",
                ]
            )
        )
        return conf

    @property
    def sentinels(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.sentinel_ports]

    def master(self) -> int | None:
        """The master's port according to the first sentinel that answers."""
        for port in self.sentinel_ports:
            found = _ask(port, lambda c: c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE_NAME))
            if found:
                return int(found[1])
        return None

    def healthy(self) -> bool:
        """Each sentinel knows the master, one replica and the two other sentinels; the replica synced."""

        def ready(c) -> bool:
            master = c.execute_command("SENTINEL", "MASTER", SERVICE_NAME)
            fields = dict(zip(master[::2], master[1::2], strict=True)) if isinstance(master, list) else master
            fields = {_text(k): _text(v) for k, v in fields.items()}
            return fields.get("num-slaves") == "1" and fields.get("num-other-sentinels") == "2"

        return _replica_online(self.master_port) and all(_ask(p, ready, False) for p in self.sentinel_ports)

    def kill_master(self) -> int:
        """SIGKILL the current master; the sentinels promote the replica. Returns the killed port."""
        master = self.master()
        if master is None:
            raise ServerUnavailable("no sentinel named the master: nothing to kill")
        return self._kill_master_at(master)

    def wait_failover(self, timeout: float = 30.0) -> None:
        """Return once the sentinels name a new master and it answers as a master."""

        def promoted() -> bool:
            port = self.master()
            return (
                port is not None
                and port != self.killed
                and _ask(port, lambda c: c.info("replication"), {}).get("role") == "master"
            )

        _poll(promoted, timeout, "the sentinels promoted no replica")
