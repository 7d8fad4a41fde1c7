"""Every command has help that ends with a real example, and every command is named in the README."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from later_read.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


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
    return [line for line in lines[starts[-1] + 1:] if line]


PATHS = command_paths()


def test_the_walk_finds_the_commands():
    names = {" ".join(path) for path in PATHS}
    assert {"", "prewarm", "push", "rerun", "show", "check", "sandbox", "sandbox seed"} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(("later-read", *path)))
def test_help_exits_0_describes_and_ends_with_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="later-read")
    assert result.exit_code == 0, result.output
    command = command_at(path)
    assert command.help and command.help.strip().splitlines()[0].strip(), "empty description"
    example = example_lines("\n\n".join(filter(None, [command.help, command.epilog])))  # epilog comes last
    assert example and example[0].startswith("later-read "), f"example does not start with later-read: {example}"
    if not isinstance(command, click.Group):
        assert example[0].startswith(" ".join(("later-read", *path)) + " ") or \
            example[0] == " ".join(("later-read", *path)), f"the example runs another command: {example[0]}"
    assert example[0] in result.output  # the example is shown by --help, not only in the source


@pytest.mark.parametrize("path", [p for p in PATHS if p], ids=lambda path: " ".join(("later-read", *path)))
def test_every_command_is_named_in_the_readme(path):
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    name = " ".join(("later-read", *path))
    assert name in text, f"README.md does not name `{name}`"
