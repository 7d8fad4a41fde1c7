"""The packages' shape (later_read and the sandbox's later_read_sandbox): module and function sizes, the
sandbox off the production path, docs/design.md's layout section against both trees."""

from __future__ import annotations

import ast
import bisect
import fnmatch
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "later_read"
SANDBOX = ROOT / "sandbox" / "later_read_sandbox"  # a distribution of its own: sandbox/pyproject.toml
PACKAGES = (PACKAGE, SANDBOX)
# Sizes in logical lines (Python's NEWLINE tokens: a statement or a declaration, however the formatter lays
# it out over physical lines), so `ruff format` cannot move a module or a function across a limit.
MAX_MODULE_LINES = 280
MAX_FUNCTION_LINES = 35


def modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in package.rglob("*.py"))


def logical_lines(source: str) -> list[int]:
    """The physical line each logical line of `source` ends on."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [token.start[0] for token in tokens if token.type == tokenize.NEWLINE]


def test_no_module_over_280_logical_lines_and_no_function_over_35():
    too_long = []
    for path in modules():
        source = path.read_text(encoding="utf-8")
        ends = logical_lines(source)
        if len(ends) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {len(ends)} logical lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):  # from `def` (decorators declare)
                length = bisect.bisect_right(ends, node.end_lineno) - bisect.bisect_left(ends, node.lineno)
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}(): {length} logical lines")
    assert not too_long, "\n".join(too_long)


def test_the_size_limits_count_logical_lines():
    one = "def f(\n    a,\n    b,\n):\n    return (\n        a\n        + b\n    )\n"
    assert logical_lines(one) == [4, 8]  # the signature and the return: 2, over 8 physical lines


def test_prewarm_help_imports_no_sandbox_module():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "later_read", "prewarm", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Example:" in result.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert "later_read.cli" in imported  # -X importtime did list the package's imports
    assert [name for name in imported if name.startswith("later_read_sandbox")] == []


def test_prewarm_runs_without_loading_the_sandbox():
    """The job's whole import graph (not only --help): everything run_prewarm needs, then sys.modules."""
    code = (
        "import sys; import later_read.cli, later_read.jobs.prewarm, later_read.jobs.push, "
        "later_read.oncall.rerun; print([m for m in sys.modules if m.startswith('later_read_sandbox')])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def layout_block() -> str:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1]


def documented_names(block: str) -> set[str]:
    """Every file name (or glob like simulator*.py) the layout block mentions, and the folders that head
    its lines (`jobs/`, `prewarm/`, ...)."""
    names = set(re.findall(r"[\w*]+\.(?:py|xml)", block))
    for line in block.splitlines():
        head = re.match(r"\s*(\S+/)(?:\s|$)", line)
        if head:
            names.add(head.group(1))
    return names


def test_design_layout_section_matches_the_tree():
    block = layout_block()
    names = documented_names(block)
    tops = {"later_read/", "sandbox/", "later_read_sandbox/"}
    assert tops <= names, f"docs/design.md's layout section lacks a package's head: {tops - names}"
    files = [p for p in modules() if p.name not in ("__init__.py", "__main__.py")]
    missing = [str(p.relative_to(ROOT)) for p in files if not any(fnmatch.fnmatch(p.name, name) for name in names)]
    assert not missing, f"modules not in docs/design.md's layout section: {missing}"
    folders = {
        p.name + "/" for package in PACKAGES for p in package.rglob("*") if p.is_dir() and p.name != "__pycache__"
    }
    stale = [name for name in names if name.endswith("/") and name not in tops and name not in folders]
    stale += [
        name for name in names if name.endswith(".py") and not any(fnmatch.fnmatch(p.name, name) for p in modules())
    ]
    assert not stale, f"docs/design.md's layout section names what the tree does not have: {stale}"
