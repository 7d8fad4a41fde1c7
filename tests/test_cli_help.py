"""Every command has help that ends with a real example, and the README's tables are the CLI's: its command
table lists every command once (no missing, no stale row, no option the command lacks) and its exit-code table
every code errors.py defines plus the crontab's flock code."""

from __future__ import annotations

import re
from collections import Counter

import click
import pytest

from helpers import ROOT, invoke
from later_read import errors
from later_read.cli import cli

README = ROOT / "README.md"


def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand as its path of names, the root group being ()."""
    paths = [prefix]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # the lazy `sandbox` group is loaded here
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            paths += command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        command = command.get_command(click.Context(command), name)  # type: ignore[attr-defined]
    return command


def example_lines(help_text: str) -> list[str]:
    """The lines of the help text's closing example block (after its last `Example:` line)."""
    lines = [line.strip() for line in help_text.strip().splitlines()]
    starts = [i for i, line in enumerate(lines) if line.rstrip(":") in ("Example", "Examples")]
    assert starts, "no 'Example:' block"
    return [line for line in lines[starts[-1] + 1 :] if line]


PATHS = command_paths()


def test_the_walk_finds_the_commands():
    names = {" ".join(path) for path in PATHS}
    assert {"", "prewarm", "push", "rerun", "show", "check", "sandbox", "sandbox seed"} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(("later-read", *path)))
def test_help_exits_0_describes_and_ends_with_an_example(path):
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    command = command_at(path)
    assert command.help and command.help.strip().splitlines()[0].strip(), "empty description"
    example = example_lines("\n\n".join(filter(None, [command.help, command.epilog])))  # epilog comes last
    assert example and example[0].startswith("later-read "), f"example does not start with later-read: {example}"
    if not isinstance(command, click.Group):
        assert example[0].startswith(" ".join(("later-read", *path)) + " ") or example[0] == " ".join(
            ("later-read", *path)
        ), f"the example runs another command: {example[0]}"
    assert example[0] in result.output  # the example is shown by --help, not only in the source


def readme_table(heading: str) -> list[str]:
    """The first cell of each body row of the table under the README's `## heading`."""
    text = README.read_text(encoding="utf-8")
    assert f"\n## {heading}\n" in text, f"README.md has no '## {heading}' section"
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [re.split(r"(?<!\\)\|", row)[1].strip() for row in rows[2:]]  # past the header and |---|


def row_command(cell: str) -> tuple[tuple[str, ...], set[str]]:
    """`later-read sandbox seed --config F [--users N]` -> (("sandbox", "seed"), {"--config", "--users"})."""
    words = cell.strip("`").split()
    assert words[0] == "later-read", f"a command row that does not start with later-read: {cell}"
    path = []
    for word in words[1:]:
        if not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        path.append(word)
    return tuple(path), set(re.findall(r"--[a-z][a-z-]*", cell))


LEAVES = [path for path in PATHS if path and not isinstance(command_at(path), click.Group)]


def test_the_readme_command_table_is_the_cli():
    rows = [row_command(cell) for cell in readme_table("Commands")]
    listed = Counter(path for path, _ in rows)
    twice = sorted(" ".join(path) for path, n in listed.items() if n > 1)
    missing = sorted(" ".join(path) for path in LEAVES if path not in listed)
    stale = sorted(" ".join(path) for path in listed if path not in LEAVES)
    assert (twice, missing, stale) == ([], [], []), (
        f"README command table: listed twice {twice}, missing {missing}, not a command {stale}"
    )
    for path, options in rows:
        known = {opt for param in command_at(path).params for opt in (*param.opts, *param.secondary_opts)}
        assert options <= known, f"README names options `later-read {' '.join(path)}` lacks: {options - known}"


def documented_exit_codes() -> set[int]:
    """errors.py's EXIT_* codes, and the code the crontab's `flock -n -E N` exits with when a run is still on."""
    codes = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    flock = re.findall(r"flock -n -E (\d+)", (ROOT / "crontab").read_text(encoding="utf-8"))
    assert flock and len(set(flock)) == 1, "the crontab's flock exit code"
    return codes | {int(flock[0])}


def test_the_readme_exit_code_table_is_the_codes_the_code_defines():
    listed = Counter(int(cell) for cell in readme_table("Exit codes"))
    assert {code for code, n in listed.items() if n > 1} == set(), f"exit codes listed twice: {listed}"
    assert set(listed) == documented_exit_codes(), (
        f"README exit codes {sorted(listed)} != defined {sorted(documented_exit_codes())}"
    )
