"""What a production install is: the wheels built from this checkout (`pip wheel . ./sandbox --no-deps`),
and the main one installed, with its dependencies from pip but without the `sandbox` extra, in a fresh
venv that sees neither the system's packages nor this checkout.

The main wheel holds later_read/ alone and requires tomli-w and later-read-sandbox only under
`extra == "sandbox"`; the sandbox's wheel holds later_read_sandbox/ (with the Kafka pom). In the venv the
jobs' commands work, neither the sandbox nor tomli-w can be imported, and `later-read sandbox` says how
to install it in one line, exit 2.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PIP_TIMEOUT = 600
NOT_INSTALLED = (
    "later-read: error: the sandbox is not installed: pip install 'later-read[sandbox]' (from a "
    "checkout: pip install -e '.[sandbox]' -e ./sandbox)"
)


def clean_env() -> dict[str, str]:
    """Ours without what would put this checkout or other installs in the venv's way (the tests' PYTHONPATH,
    the user's site-packages, the project's own variables)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP") and not k.startswith("LATER_READ_")
    }
    return {**env, "PYTHONNOUSERSITE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(argv: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """Both wheels, built from a copy of the sources (pip builds in the source tree: build/, *.egg-info)."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    for name in ("later_read", "sandbox"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    done = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), ".", "./sandbox"],
        cwd=source,
        timeout=PIP_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    wheels = {path.name.split("-")[0]: path for path in (work / "dist").glob("*.whl")}
    assert sorted(wheels) == ["later_read", "later_read_sandbox"]
    return {"work": work, **wheels}


@pytest.fixture(scope="module")
def venv(built) -> Path:
    """A fresh venv (no system site-packages) with the main wheel and its dependencies, no extra."""
    folder = built["work"] / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(folder)], cwd=built["work"])
    assert made.returncode == 0, made.stderr
    done = run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(folder / "bin" / "python"),
            "install",
            "-q",
            str(built["later_read"]),
        ],
        cwd=built["work"],
        timeout=PIP_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(archive.read(name))


def requirements(wheel: Path) -> dict[str, str]:
    """Each Requires-Dist of the wheel: project name -> its marker ("" when unconditional)."""
    found = [Requirement(line) for line in metadata(wheel).get_all("Requires-Dist") or []]
    return {req.name.lower(): str(req.marker or "") for req in found}


def tops(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name.split("/")[0] for name in archive.namelist()}


def test_the_main_wheel_holds_later_read_alone(built):
    with zipfile.ZipFile(built["later_read"]) as archive:
        names = archive.namelist()
    assert tops(built["later_read"]) == {"later_read", "later_read-0.1.0.dist-info"}
    assert {"later_read/cli.py", "later_read/core/message.py", "later_read/store/__init__.py"} <= set(names)
    assert [name for name in names if "sandbox" in name or name.endswith(".xml")] == []


def test_the_main_wheel_requires_the_sandbox_and_tomli_w_only_under_its_extra(built):
    needs = requirements(built["later_read"])
    assert needs["tomli-w"] == needs["later-read-sandbox"] == 'extra == "sandbox"'
    assert {"click", "anyio", "redis", "pymysql", "confluent-kafka"} <= {n for n, m in needs.items() if not m}
    sandbox_extra = {name for name, marker in needs.items() if marker == 'extra == "sandbox"'}
    assert sandbox_extra == {"tomli-w", "later-read-sandbox"}
    assert {"sandbox", "test"} <= set(metadata(built["later_read"]).get_all("Provides-Extra"))


def test_the_sandbox_wheel_holds_the_sandbox_and_needs_later_read(built):
    with zipfile.ZipFile(built["later_read_sandbox"]) as archive:
        names = set(archive.namelist())
    assert tops(built["later_read_sandbox"]) == {"later_read_sandbox", "later_read_sandbox-0.1.0.dist-info"}
    assert {
        "later_read_sandbox/cli.py",
        "later_read_sandbox/kafka/pom.xml",
        "later_read_sandbox/simulator/__main__.py",
        "later_read_sandbox/faults/checks.py",
    } <= names
    assert requirements(built["later_read_sandbox"]) == {"later-read": "", "tomli-w": ""}


def test_a_production_install_runs_the_jobs_commands_without_the_sandbox(venv, built):
    bin_dir, elsewhere = venv / "bin", built["work"]  # not the sources' folder: nothing found by cwd
    where = run([str(bin_dir / "python"), "-c", "import later_read; print(later_read.__file__)"], cwd=elsewhere)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    top = run([str(bin_dir / "later-read"), "--help"], cwd=elsewhere)
    assert top.returncode == 0, top.stderr
    assert {"prewarm", "push", "check", "sandbox"} <= {
        line.split()[0] for line in top.stdout.split("Commands:")[1].splitlines() if line
    }
    prewarm = run([str(bin_dir / "later-read"), "prewarm", "--help"], cwd=elsewhere)
    assert prewarm.returncode == 0, prewarm.stderr
    assert "Example:" in prewarm.stdout and "later-read prewarm" in prewarm.stdout


def test_a_production_install_has_neither_the_sandbox_nor_tomli_w(venv, built):
    python = str(venv / "bin" / "python")
    for module in ("later_read_sandbox", "tomli_w", "later_read_sandbox.simulator"):
        done = run([python, "-c", f"import {module}"], cwd=built["work"])
        assert done.returncode == 1, (module, done.stdout, done.stderr)
        assert f"ModuleNotFoundError: No module named '{module.split('.')[0]}'" in done.stderr
    names = run(
        [
            python,
            "-c",
            ("import importlib.metadata as m; print(*sorted(d.metadata['Name'].lower() for d in m.distributions()))"),
        ],
        cwd=built["work"],
    )
    installed = set(names.stdout.split())
    assert "later-read" in installed and "click" in installed, names.stderr
    assert installed & {"tomli-w", "tomli_w", "later-read-sandbox"} == set()


@pytest.mark.parametrize("args", [["sandbox", "up", "--users", "5"], ["sandbox", "--help"], ["sandbox"]])
def test_the_sandbox_command_of_a_production_install_says_how_to_install_it(venv, built, args):
    done = run([str(venv / "bin" / "later-read"), *args], cwd=built["work"])
    assert (done.returncode, done.stdout, done.stderr) == (2, "", NOT_INSTALLED + "\n")
