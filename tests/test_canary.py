"""The canary: a unique secret in every secret-bearing setting, every command run through its failure paths,
and not one trace of any of them in stdout, stderr, --report files, uids files, the metrics textfile or the
bodies the pings sent.

Settings holding a canary (all at once, in every case): the Redis URL's userinfo (with '/', '@', ':' and '#'
in it, percent-encoded), the Redis URL's `?password=` (redis-py logs in with the userinfo's when both are
there: the `redis_query` path drops the userinfo), `[redis] sentinel_password`, the StarRocks password
(with the same characters), librdkafka's `sasl.password`, both ping URLs' tokens. Every canary holds
MARK, so a fragment of one (a password cut at its '/') is found too, plain or percent-encoded.

Failure paths: every dependency refusing connections; every dependency a listening socket that never
answers; a real redis-server whose requirepass the URL does not match (userinfo, then `?password=`); a
real MariaDB user whose password the config does not match; Redis Sentinel refusing, with its password;
Kafka refusing (with SASL configured); a bad value in the config next to the secrets (and one holding a
secret). Each (command, path) is one test id; each runs the real command in its own process.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from helpers import run_cli, servers

MARK = "Xq9Zt"
SPECIAL = "/7@k:1#z"  # what breaks a URL unless percent-encoded
CANARY = {
    "redis_userinfo": f"{MARK}-ru{SPECIAL}",
    "redis_query": f"{MARK}-rq",
    "redis_real": f"{MARK}-real",  # the redis-server's own requirepass
    "sentinel": f"{MARK}-sentinel",
    "starrocks": f"{MARK}-sr{SPECIAL}",
    "sasl": f"{MARK}-sasl",
    "prewarm_ping": f"{MARK}0prewarm0ping0token",
    "push_ping": f"{MARK}0push0ping0token",
}
DATE = "20261123"
NOW = "2026-11-23T09:05:00+08:00"  # inside hour 9's window: an explicit push of it is not refused


def forms(text: str) -> set[str]:
    return {text, quote(text, safe=""), quote(text), quote_plus(text), text.replace("/", "\\/")}


NEEDLES = {MARK} | {form for canary in CANARY.values() for form in forms(canary)}


class Servers:
    """What the paths point at: dead ports, a silent listener, a Redis with requirepass, a MariaDB user
    with another password, a ping service answering 500 (its request bodies kept)."""

    def __init__(self, tmp: Path) -> None:
        self.dead = servers.free_port()
        self.silent = socket.create_server(("127.0.0.1", 0))
        self.silent_port = self.silent.getsockname()[1]
        self.redis = servers.RedisServer(password=CANARY["redis_real"]).start()
        self.mariadb = servers.MariaDBServer().start()
        with self.mariadb.connect("") as conn, conn.cursor() as cur:
            cur.execute("CREATE USER 'canary'@'%' IDENTIFIED BY 'not-the-configured-one'")
            cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'canary'@'%'")
        self.bodies: list[str] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.pings = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.pings.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.pings.shutdown()
        self.silent.close()
        self.redis.stop()
        self.mariadb.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    servers = Servers(tmp_path_factory.mktemp("canary"))
    yield servers
    servers.close()


def redis_url(port: int, userinfo: bool = True, query: bool = True) -> str:
    auth = f":{quote(CANARY['redis_userinfo'], safe='')}@" if userinfo else ""
    return f"redis://{auth}127.0.0.1:{port}/0" + (f"?password={quote(CANARY['redis_query'], safe='')}" if query else "")


def config(world: Servers, tmp: Path, path: str) -> dict:
    """The case's config: every canary set; the addresses of the path."""
    w = world
    port = {"refused": w.dead, "timeout": w.silent_port}.get(path, w.dead)
    data = {
        "starrocks": {
            "host": "127.0.0.1",
            "port": port,
            "user": "canary",
            "password": CANARY["starrocks"],
            "database": "later_read",
            "connect_timeout_seconds": 1,
            "read_timeout_seconds": 1,
        },
        "redis": {"url": redis_url(port), "sentinel_password": CANARY["sentinel"], "socket_timeout_seconds": 1},
        "services": {
            "ab_url": f"http://127.0.0.1:{port}",
            "rec_url": f"http://127.0.0.1:{port}",
            "material_url": f"http://127.0.0.1:{port}",
            "timeout_seconds": 1,
            "max_attempts": 1,
        },
        "kafka": {
            "bootstrap_servers": f"127.0.0.1:{port}",
            "librdkafka": {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "PLAIN",
                "sasl.username": "canary",
                "sasl.password": CANARY["sasl"],
                "message.timeout.ms": 2000,
            },
        },
        "metrics": {"textfile_dir": str(tmp), "pushgateway_url": f"http://127.0.0.1:{w.dead}"},
        "monitor": {
            "prewarm_ping_url": f"http://127.0.0.1:{w.pings.server_port}/{CANARY['prewarm_ping']}",
            "push_ping_url": f"http://127.0.0.1:{w.pings.server_port}/p/{CANARY['push_ping']}",
            "ping_timeout_seconds": 1,
        },
        "sandbox": {"own_servers": True},
    }
    real_redis = redis_url(w.redis.port, userinfo=False, query=False).replace(
        "redis://", f"redis://:{quote(CANARY['redis_real'], safe='')}@"
    )
    if path == "redis_userinfo":
        data["redis"]["url"] = redis_url(w.redis.port)
    elif path == "redis_query":
        data["redis"]["url"] = redis_url(w.redis.port, userinfo=False)
    elif path in ("starrocks_password", "kafka_refused"):
        data["redis"]["url"] = real_redis
        data["starrocks"].update(host=w.mariadb.host, port=w.mariadb.port)
    elif path == "sentinel":
        data["redis"].update(
            mode="sentinel", sentinels=[f"127.0.0.1:{w.dead}"], service_name="mymaster", failover_seconds=1
        )
    return data


BAD_VALUES = {  # a value the config check refuses, next to (or holding) the secrets
    "redis_password_with_slash": ("redis", "url", f"redis://:{CANARY['redis_userinfo']}@127.0.0.1:6379/0"),
    "redis_bad_port": ("redis", "url", f"redis://:{quote(CANARY['redis_userinfo'], safe='')}@127.0.0.1:x/0"),
    "redis_query_bad_db": ("redis", "url", f"redis://127.0.0.1:6379/x?password={CANARY['redis_query']}"),
    "starrocks_password_not_a_string": ("starrocks", "password", [CANARY["starrocks"]]),
    "sentinel_password_not_a_string": ("redis", "sentinel_password", [CANARY["sentinel"]]),
    "sasl_password_not_a_value": ("kafka", "librdkafka", {"sasl.password": [CANARY["sasl"]]}),
    "ping_url_not_http": ("monitor", "prewarm_ping_url", f"ftp://hc-ping.com/{CANARY['prewarm_ping']}"),
    "pushgateway_with_userinfo": ("metrics", "pushgateway_url", f"http://u:{CANARY['sasl']}@pgw:9091"),
    "redis_url_from_the_environment": (
        "env",
        "LATER_READ__REDIS__URL",
        f"redis://:{quote(CANARY['redis_userinfo'], safe='')}@h:x/0",
    ),
}

COMMANDS = {  # command -> argv after `later-read` (the config is added), the paths it is run through
    "check": (
        ["check", "--timeout", "3"],
        ["refused", "timeout", "redis_userinfo", "redis_query", "starrocks_password", "sentinel", "kafka_refused"],
    ),
    "prewarm": (
        ["prewarm", "--date", DATE, "--report", "{tmp}/prewarm.json"],
        ["refused", "timeout", "redis_userinfo", "redis_query", "starrocks_password", "sentinel"],
    ),
    "push": (
        ["push", "--date", DATE, "--hour", "9", "--now", NOW, "--report", "{tmp}/push.json"],
        ["refused", "timeout", "redis_userinfo", "redis_query", "sentinel", "kafka_refused"],
    ),
    "push-dry-run": (
        ["push", "--dry-run", "--date", DATE, "--hour", "9", "--now", NOW, "--report", "{tmp}/push.json"],
        ["starrocks_password"],
    ),
    "rerun": (["rerun", "u1", "--date", DATE, "--now", NOW], ["refused", "timeout", "redis_userinfo", "sentinel"]),
    "rerun-dry-run": (["rerun", "u1", "--date", DATE, "--now", NOW, "--dry-run"], ["starrocks_password"]),
    "show": (["show", "u1", "--date", DATE], ["refused", "timeout", "redis_userinfo", "redis_query", "sentinel"]),
    "sent": (["sent", "--date", DATE, "--timeout", "2"], ["refused", "kafka_refused"]),  # 10 s each: metadata
    "sandbox-seed": (["sandbox", "seed", "--users", "5", "--date", DATE], ["refused", "starrocks_password"]),
}
CASES = [(command, path) for command, (_, paths) in COMMANDS.items() for path in paths]
CASES += [(command, "bad_value:redis_bad_port") for command in COMMANDS if command != "prewarm"]
CASES += [("prewarm", f"bad_value:{name}") for name in BAD_VALUES]


def run(world: Servers, tmp: Path, make_config, command: str, path: str) -> subprocess.CompletedProcess:
    args, _ = COMMANDS[command]
    data = config(world, tmp, path.split(":")[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATER_READ_")}
    if path.startswith("bad_value:"):
        section, key, value = BAD_VALUES[path.split(":", 1)[1]]
        if section == "env":
            env[key] = value
        else:
            data[section][key] = value
    config_path = make_config(**data)
    argv = [a.replace("{tmp}", str(tmp)) for a in args] + ["--config", str(config_path)]
    return run_cli(*argv, env=env, timeout=90, cwd=tmp)


def artifacts(tmp: Path, result: subprocess.CompletedProcess, world: Servers) -> dict[str, str]:
    found = {"stdout": result.stdout, "stderr": result.stderr, "ping bodies": "\n".join(world.bodies)}
    for file in tmp.rglob("*"):
        if file.is_file() and file.suffix in (".json", ".txt", ".prom"):
            found[file.name] = file.read_text(errors="replace")
    return found


def expected_code(command: str, path: str) -> int:
    """A refused config value is exit 2, and so is `sandbox seed` at a StarRocks the sandbox did not start
    (refused before connecting); every other path ends at a dependency that fails: exit 3."""
    return 2 if path.startswith("bad_value:") or (command, path) == ("sandbox-seed", "refused") else 3


@pytest.mark.parametrize("command, path", CASES, ids=[f"{c}-{p}" for c, p in CASES])
def test_no_secret_is_ever_printed(command, path, world, tmp_path, make_config):
    world.bodies.clear()
    result = run(world, tmp_path, make_config, command, path)
    assert result.returncode == expected_code(command, path), result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    if command in ("prewarm", "push") and not path.startswith("bad_value"):
        assert (tmp_path / f"later_read_{command}.prom").exists() and world.bodies  # the sinks were written
    leaks = {
        where: sorted({n for n in NEEDLES if n in text}) for where, text in artifacts(tmp_path, result, world).items()
    }
    assert {where: found for where, found in leaks.items() if found} == {}, result.stderr[-3000:]


def test_the_needles_find_a_leak():
    """The search itself: each canary is found in each form a leak could take."""
    for canary in CANARY.values():
        for text in (f"x={canary}", f"redis://:{quote(canary, safe='')}@h", f"port '{canary.split('/')[0]}'"):
            assert any(n in text for n in NEEDLES) and re.search(MARK, text)
