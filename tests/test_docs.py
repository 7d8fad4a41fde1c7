"""The docs stay true to the code: the README's size and minimal config, every relative link, the runbook's
coverage of every alert the code can emit and every rule deploy/alerts defines, and the benchmarks README's
coverage of every benchmark script. (The README's command and exit-code tables: tests/test_cli_help.py.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from later_read.config.settings import load_settings
from later_read.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUNBOOK = ROOT / "docs" / "runbook.md"
BENCHMARKS = ROOT / "benchmarks"
DOCS = [
    README,
    ROOT / "CHANGELOG.md",
    BENCHMARKS / "README.md",
    ROOT / "deploy" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
JOBS = ("prewarm", "push")  # the commands jobs/lifecycle.run_job runs: `f"{job.name}.report_failed"` etc.


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# README ---------------------------------------------------------------------------------------------
def test_the_readme_is_at_most_150_lines():
    lines = len(text(README).splitlines())
    assert lines <= 150, f"README.md has {lines} lines; it is for the person installing later-read"


def minimal_config() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", text(README).split("\n## Configure\n", 1)[1], re.DOTALL)
    assert blocks, "README.md's Configure section has no ```toml block"
    return blocks[0]


def test_the_readme_minimal_config_loads_and_every_line_of_it_is_needed(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(minimal_config(), encoding="utf-8")
    settings = load_settings(config, environ={"LATER_READ__STARROCKS__PASSWORD": "from-the-environment"})
    assert settings.starrocks.password == "from-the-environment"
    lines = minimal_config().splitlines()
    for i, line in enumerate(lines):
        if "=" not in line:
            continue
        config.write_text("\n".join(lines[:i] + lines[i + 1 :]), encoding="utf-8")
        with pytest.raises(ConfigError, match="missing"):
            load_settings(config, environ={})


# Links ----------------------------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but - and _ dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    body = re.sub(r"```.*?```", "", text(path), flags=re.DOTALL)
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", body, re.MULTILINE)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text(doc), flags=re.DOTALL)):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)}: links to nothing: {broken}"


# The runbook ----------------------------------------------------------------------------------------
def _loop_values(function: ast.AST, name: str) -> list[str]:
    """The strings a `for (..., name, ...) in ((...), ...)` loop in `function` binds to `name`."""
    found = []
    for loop in (n for n in ast.walk(function) if isinstance(n, ast.For)):
        targets = loop.target.elts if isinstance(loop.target, ast.Tuple) else [loop.target]
        index = next((i for i, t in enumerate(targets) if isinstance(t, ast.Name) and t.id == name), None)
        if index is None or not isinstance(loop.iter, (ast.Tuple, ast.List)):
            continue
        for item in loop.iter.elts:
            value = item.elts[index] if isinstance(item, ast.Tuple) else item
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.append(value.value)
    return found


def _names(arg: ast.expr, function: ast.AST, limiters: list[str]) -> list[str] | None:
    """The alert names an `alert(log, <arg>, ...)` call can write; None when the test cannot tell."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.JoinedStr) and len(arg.values) == 2 and isinstance(arg.values[1], ast.Constant):
        suffix = arg.values[1].value
        if suffix.startswith("."):  # f"{job.name}.report_failed": the two jobs
            return [job + suffix for job in JOBS]
        if suffix.startswith("_"):  # f"{self.name}_suppressed" in AlertLimiter
            return [name + suffix for name in limiters]
    if isinstance(arg, ast.Attribute) and arg.attr == "name":  # AlertLimiter's self.name
        return list(limiters)
    if isinstance(arg, ast.Name):
        return _loop_values(function, arg.id) or None
    return None


def alert_names() -> set[str]:
    """Every event name an `alert(...)` call in later_read/ can write (AlertLimiter names included)."""
    trees = {path: ast.parse(text(path)) for path in sorted((ROOT / "later_read").rglob("*.py"))}
    limiters = [
        call.args[0].value
        for tree in trees.values()
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "AlertLimiter"
        and isinstance(call.args[0], ast.Constant)
    ]
    names, unresolved = set(), []
    for path, tree in trees.items():
        for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for call in ast.walk(function):
                if not (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Name)
                    and call.func.id == "alert"
                    and len(call.args) >= 2
                ):
                    continue
                found = _names(call.args[1], function, limiters)
                if found is None:
                    unresolved.append(f"{path.relative_to(ROOT)}:{call.lineno}")
                else:
                    names.update(found)
    assert not unresolved, f"alert calls whose name this test cannot work out (teach _names): {unresolved}"
    return names


def test_the_alert_walk_finds_every_kind_of_call():
    names = alert_names()
    assert {
        "push.cache_miss",
        "push.cache_miss_suppressed",
        "push.misses",
        "push.unservable",
        "prewarm.report_failed",
        "push.uids_file_failed",
        "lock.lost",
        "push.hour_expired",
    } <= names


def rule_names() -> set[str]:
    """Every Prometheus and Loki alert deploy/alerts defines."""
    names = set()
    for path in (ROOT / "deploy" / "alerts").glob("later-read.*.yml"):
        groups = yaml.safe_load(text(path))["groups"]
        names |= {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    return names


def test_the_runbook_says_what_to_do_for_every_alert_the_code_emits_and_every_rule():
    runbook = text(RUNBOOK)
    missing = sorted(
        name for name in alert_names() | rule_names() if not re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", runbook)
    )
    assert not missing, f"docs/runbook.md has no entry for {missing}"


def test_alerting_md_sends_the_reader_to_the_runbook():
    assert "(runbook.md" in text(ROOT / "docs" / "alerting.md")


# benchmarks/README.md -------------------------------------------------------------------------------
@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_every_benchmark_script_has_its_method_and_command(script):
    doc = text(BENCHMARKS / "README.md")
    assert re.search(rf"^### .*`{re.escape(script)}`", doc, re.MULTILINE), f"no section for {script}"
    assert f"python benchmarks/{script} " in doc or f"python benchmarks/{script}\n" in doc, f"no command for {script}"


def test_the_benchmark_figures_are_one_table_with_a_date_and_a_machine_per_row():
    figures = text(BENCHMARKS / "README.md").split("\n## Figures\n", 1)[1]
    rows = [line for line in figures.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert {"date", "machine"} <= set(header)
    date, machine = header.index("date"), header.index("machine")
    for row in rows[2:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip("|"))]
        assert re.match(r"\d{4}-\d{2}-\d{2}", cells[date]) and cells[machine], f"row without date/machine: {row}"
    assert figures.count("\n| benchmark |") == 1, "the figures are one table"
