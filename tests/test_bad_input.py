"""Every bad input of docs/bad-input.md, run: the exact line and the exit code (table: tests/bad_inputs.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import redis

from bad_inputs import CA_PEM, CASES, DOC, ROOT, Case, render_doc
from fake_mysql import FakeMySQL
from helpers import invoke
from later_read.cli import LAZY_COMMANDS, cli
from tls_certs import CA

SHIPPED = (ROOT / "config.toml").read_text()


def config_for(case: Case, tmp_path: Path, make_config, **replace: str) -> Path:
    text = SHIPPED
    path = tmp_path / "config.toml"
    for old, new in ([case.edit] if case.edit is not None else []) + list(replace.items()):
        assert old in text, f"the shipped config.toml no longer holds {old!r}"
        text = text.replace(old, fill(new, path, tmp_path), 1)
    path.write_text(text, encoding="utf-8")
    return path


def fill(text: str, config: Path, tmp_path: Path, port: int | None = None) -> str:
    text = text.replace("<CONFIG>", str(config)).replace("<TMP>", str(tmp_path))
    return text if port is None else text.replace("<PORT>", str(port))


OFFLINE = [c for c in CASES if not c.needs_redis]
WITH_REDIS = [c for c in CASES if c.needs_redis and c.server is None]
WITH_SERVER = [c for c in CASES if c.server is not None]


def ids(cases: list[Case]) -> list[str]:
    return [f"{CASES.index(c) + 1}-{c.what}" for c in cases]


@pytest.mark.parametrize("case", OFFLINE, ids=ids(OFFLINE))
def test_bad_input(case: Case, tmp_path, make_config, monkeypatch):
    """Config, environment, command line, uid, install: one line, exit 2, before any connection (none is up)."""
    if case.missing is not None:
        not_installed(case.missing, monkeypatch)
    check(case, tmp_path, config_for(case, tmp_path, make_config))


class Absent:
    """A first import finder that answers for `package` as the import system does when it is not installed."""

    def __init__(self, package: str) -> None:
        self.package = package

    def find_spec(self, name: str, path=None, target=None):
        if name.split(".")[0] == self.package:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return


def not_installed(package: str, monkeypatch) -> None:
    """`package` unimportable for one test, as in an install without it (tests/test_packaging.py tries a
    real one); the group's lazily loaded commands start afresh, and all comes back afterwards."""
    for name in [name for name in sys.modules if name.split(".")[0] == package]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [Absent(package), *sys.meta_path])
    monkeypatch.setattr(
        cli, "commands", {name: command for name, command in cli.commands.items() if name not in LAZY_COMMANDS}
    )


@pytest.mark.parametrize("case", WITH_REDIS, ids=ids(WITH_REDIS))
def test_bad_cache_value(case: Case, tmp_path, make_config, redis_url):
    """A bad value in Redis: `show` names what is wrong with it in one line."""
    client = redis.Redis.from_url(redis_url)
    client.set("rec:later_read:u1", case.value, ex=600)
    client.close()
    check(case, tmp_path, make_config())


@pytest.mark.parametrize("case", WITH_SERVER, ids=ids(WITH_SERVER))
def test_bad_server(case: Case, tmp_path, make_config, redis_url):
    """A server that is not what it should be (a fake StarRocks asking for the password in clear text):
    the run's last line, its exit code, and the password never sent."""
    with FakeMySQL() as fake:
        config = config_for(
            case,
            tmp_path,
            make_config,
            **{
                'url = "redis://127.0.0.1:6379/0"': f'url = "{redis_url}"',
                "port = 9030": f"port = {fake.port}",
                'password = ""': 'password = "never-sent-42"',
            },
        )
        check(case, tmp_path, config, port=fake.port, last_line=True)
    assert fake.switched >= 1 and fake.received == []


def check(case: Case, tmp_path: Path, config: Path, port: int | None = None, last_line: bool = False) -> None:
    if case.file is not None:
        content = CA(tmp_path).cert_pem() if case.file == CA_PEM else case.file
        (tmp_path / "input.txt").write_bytes(content.encode("utf-8", "surrogateescape"))
    env = {k: None for k in os.environ if k.startswith("LATER_READ_")}
    env.update({k: fill(v, config, tmp_path) for k, v in case.env.items()})
    args = [fill(a, config, tmp_path) for a in case.args]
    if "LATER_READ_CONFIG" in case.env:
        args = args[: args.index("--config")] + args[args.index("--config") + 2 :]
    result = invoke(*args, env=env)
    expected = fill(case.line, config, tmp_path, port)
    if case.code == 0:
        lines = [line for line in result.stdout.splitlines() if line.startswith(expected.split(" ")[0] + " ")]
    else:
        lines = result.stderr.splitlines()[-1:] if last_line else result.stderr.splitlines()
    assert (lines, result.exit_code) == ([expected], case.code), result.output


def test_the_doc_is_the_table():
    assert len(CASES) >= 60
    assert DOC.read_text(encoding="utf-8") == render_doc(), "run: python tests/bad_inputs.py"
