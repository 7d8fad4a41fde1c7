"""The sandbox acts only on servers it started itself: the check every sandbox command that writes makes
before it opens any connection.

A writing command (`sandbox seed`) takes the config only from `--config` (never from $LATER_READ_CONFIG,
which the production crontab sets, nor from LATER_READ__* overrides, which could point it elsewhere) and
goes on only when:

1. the config says it is the sandbox's: `[sandbox] own_servers = true`, written only by `sandbox up` and
   `sandbox demo` into the config of the servers they started; and
2. the server it would write to is one the sandbox started and that still runs: a managed server's
   folder holds a record of its address and pid (`servers.started_servers`).

Anything else is a UsageError (exit 2, one line naming the problem and the fix) and nothing is touched.
Why: docs/design.md, "The sandbox never touches production".
"""

from __future__ import annotations

from later_read.config.settings import ENV_CONFIG_PATH, Settings, load_settings
from later_read.errors import UsageError
from later_read_sandbox.servers import started_servers

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def sandbox_settings(config_path: str | None, command: str) -> Settings:
    """The settings of a sandbox config for `sandbox <command>`, or UsageError (nothing opened yet)."""
    if not config_path:
        raise UsageError(
            f"sandbox {command}: no --config; sandbox commands never read ${ENV_CONFIG_PATH} (it "
            "may name production); pass --config with the file `later-read sandbox up` wrote"
        )
    settings = load_settings(config_path, environ={})
    if not settings.sandbox.own_servers:
        raise UsageError(
            f"sandbox {command}: {config_path} is not a sandbox config (no [sandbox] own_servers = "
            "true), and the sandbox writes only to servers it started; pass the config "
            "`later-read sandbox up --config-out` wrote"
        )
    sr = settings.starrocks
    if not started_by_sandbox("mariadb", sr.host, sr.port):
        raise UsageError(
            f"sandbox {command}: [starrocks] {sr.host}:{sr.port} in {config_path} is no MariaDB the "
            "sandbox started (none of its running servers is there); start them with "
            "`later-read sandbox up` and pass the config it writes"
        )
    return settings


def started_by_sandbox(kind: str, host: str, port: int) -> bool:
    """Whether a running server of `kind` the sandbox started listens at host:port (always on loopback)."""
    if host not in LOOPBACK:
        return False
    return any(record["address"] == f"127.0.0.1:{port}" for record in started_servers(kind))
