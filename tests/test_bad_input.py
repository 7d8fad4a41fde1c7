"""Every bad input of docs/bad-input.md, run: the exact line and the exit code (table: tests/bad_inputs.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from later_read.cli import cli

from bad_inputs import CASES, DOC, ROOT, Case, render_doc

SHIPPED = (ROOT / "config.toml").read_text()


def config_for(case: Case, tmp_path: Path, make_config) -> Path:
    text = SHIPPED
    if case.edit is not None:
        old, new = case.edit
        assert old in text, f"the shipped config.toml no longer holds {old!r}"
        text = text.replace(old, new, 1)
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def fill(text: str, config: Path, tmp_path: Path) -> str:
    return text.replace("<CONFIG>", str(config)).replace("<TMP>", str(tmp_path))


OFFLINE = [c for c in CASES if not c.needs_redis]
WITH_REDIS = [c for c in CASES if c.needs_redis]


def ids(cases: list[Case]) -> list[str]:
    return [f"{CASES.index(c) + 1}-{c.what}" for c in cases]


@pytest.mark.parametrize("case", OFFLINE, ids=ids(OFFLINE))
def test_bad_input(case: Case, tmp_path, make_config):
    """Config, environment, command line, uid: one line, exit 2, before any connection (none is up)."""
    check(case, tmp_path, config_for(case, tmp_path, make_config))


@pytest.mark.parametrize("case", WITH_REDIS, ids=ids(WITH_REDIS))
def test_bad_cache_value(case: Case, tmp_path, make_config, redis_url):
    """A bad value in Redis: `show` names what is wrong with it in one line."""
    client = redis.Redis.from_url(redis_url)
    client.set("rec:later_read:u1", case.value, ex=600)
    client.close()
    check(case, tmp_path, make_config())


def check(case: Case, tmp_path: Path, config: Path) -> None:
    if case.file is not None:
        (tmp_path / "input.txt").write_bytes(case.file.encode("utf-8", "surrogateescape"))
    env = {k: None for k in os.environ if k.startswith("LATER_READ_")}
    env.update({k: fill(v, config, tmp_path) for k, v in case.env.items()})
    args = [fill(a, config, tmp_path) for a in case.args]
    if "LATER_READ_CONFIG" in case.env:
        args = args[:args.index("--config")] + args[args.index("--config") + 2:]
    result = CliRunner().invoke(cli, args, env=env, prog_name="later-read")
    expected = fill(case.line, config, tmp_path)
    if case.code == 0:
        lines = [line for line in result.stdout.splitlines() if line.startswith(expected.split(" ")[0] + " ")]
    else:
        lines = result.stderr.splitlines()
    assert (lines, result.exit_code) == ([expected], case.code), result.output


def test_the_doc_is_the_table():
    assert len(CASES) >= 60
    assert DOC.read_text(encoding="utf-8") == render_doc(), "run: python tests/bad_inputs.py"
