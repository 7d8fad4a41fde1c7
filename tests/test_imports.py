"""The import graph of later_read/, read from the source (ast): every import statement, at module level or
inside a function, but not under `if TYPE_CHECKING:` (never run). Importing `a.b.c` also runs the packages
`a` and `a.b`, so those count as imported too (except the importer's own packages, already running).

Rules: no cycle; no client imports the store; the domain core reaches no I/O library, not even through
another module; the production package imports the sandbox nowhere: its one mention is the lazy command's
name in `later_read.cli.LAZY_COMMANDS`, imported by name only when `later-read sandbox` runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

from later_read.cli import LAZY_COMMANDS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "later_read"
SANDBOX = "later_read_sandbox"
IO_LIBRARIES = {
    "redis",
    "pymysql",
    "confluent_kafka",
    "anyio",
    "asyncio",
    "uvloop",
    "httpx",
    "httptools",
    "aiohttp",
    "requests",
    "urllib3",
    "socket",
    "ssl",
    "limits",
    "prometheus_client",
    "stamina",
}


def module_files() -> dict[str, Path]:
    """later_read's modules by dotted name (a package by its own name, from its __init__.py)."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = module_files()


def is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of the tree, wherever it sits, skipping `if TYPE_CHECKING:` bodies."""
    found, pending = [], [tree]
    while pending:
        node = pending.pop()
        if is_type_checking(node):
            pending.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return found


def imported_names(module: str, path: Path) -> set[str]:
    """The dotted names the module imports: `from a import b` gives `a.b` when that is a module of
    later_read, else `a`; relative imports resolved against the module's package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *filter(None, [base])])
        names.add(base)
        names.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return names


def with_packages(module: str, names: set[str]) -> set[str]:
    """The names plus the packages above each (run first by the import system), minus the importer's own
    packages and itself."""
    own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
    out = set()
    for name in names:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out - own


def graph() -> dict[str, set[str]]:
    """Each later_read module -> every name it imports (inside or outside later_read)."""
    return {module: with_packages(module, imported_names(module, path)) for module, path in MODULES.items()}


GRAPH = graph()


def internal(module: str) -> set[str]:
    return {name for name in GRAPH[module] if name in MODULES}


def find_cycle() -> list[str] | None:
    """One import cycle of later_read's modules (first module repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the stack, "done" after
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(internal(module)):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(MODULES):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def reachable(module: str) -> set[str]:
    """Every name imported by the module or by the later_read modules it reaches."""
    seen, pending, names = {module}, [module], set()
    while pending:
        current = pending.pop()
        names |= GRAPH[current]
        for target in internal(current) - seen:
            seen.add(target)
            pending.append(target)
    return names


def test_the_graph_is_read():
    """The walk sees module-level, function-level and relative imports (guards the rules below)."""
    assert "later_read.core.value" in GRAPH["later_read.core.message"] | reachable("later_read.core.message")
    assert "later_read.jobs.lifecycle" in GRAPH["later_read.jobs.prewarm.job"]
    assert "later_read.config.settings" in GRAPH["later_read.cli"]  # at module level
    assert "later_read.jobs.prewarm.job" in GRAPH["later_read.cli"]  # inside the prewarm command
    assert "later_read.jobs.prewarm" in GRAPH["later_read.cli"]  # the packages above it run first
    assert len(MODULES) > 60


def test_imports_under_type_checking_are_left_out_and_function_level_ones_kept():
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import redis\nelse:\n    import json\n"
        "def f():\n    import pymysql\n"
    )
    nodes = import_nodes(ast.parse(source))
    assert sorted(alias.name for node in nodes for alias in node.names) == ["TYPE_CHECKING", "json", "pymysql"]


def test_no_import_cycle():
    cycle = find_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_client_imports_the_store():
    offenders = {
        module: sorted(reachable(module) & {n for n in MODULES if n.startswith("later_read.store")})
        for module in MODULES
        if module.startswith("later_read.clients")
    }
    offenders = {module: names for module, names in offenders.items() if names}
    assert not offenders, f"clients reaching the store: {offenders}"


def test_the_core_reaches_no_io_library():
    offenders = {}
    for module in (name for name in MODULES if name.startswith("later_read.core")):
        found = {name for name in reachable(module) if name.split(".")[0] in IO_LIBRARIES}
        if found:
            offenders[module] = sorted(found)
    assert not offenders, f"core modules reaching I/O libraries (directly or through a module): {offenders}"


def test_the_production_package_never_imports_the_sandbox():
    importers = sorted(module for module in MODULES if any(name.split(".")[0] == SANDBOX for name in GRAPH[module]))
    assert importers == [], f"later_read modules importing the sandbox: {importers}"
    mentions = [
        (module, node.value)
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SANDBOX in node.value
    ]
    assert mentions == [("later_read.cli", LAZY_COMMANDS["sandbox"])]
    assert LAZY_COMMANDS["sandbox"].split(":")[0].split(".")[0] == SANDBOX
