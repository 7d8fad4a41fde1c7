"""The process layer under every local server: free ports, child processes in their own group that die
with their parent, waiting until a server answers, and `LocalServer`, the base of each server class.

Why real servers: everything that crosses a process boundary is tested against the real thing
(docs/design.md, "Tests"). Each server class is a context manager. A managed server gets a free loopback
port, its own temporary directory and its own process group; `start()` returns only once the server
really answers, and `stop()` kills the process group and removes the directory. Children also get
PR_SET_PDEATHSIG so that a test run killed with SIGKILL leaves no daemon behind, and an atexit hook covers
ordinary exits. A server that cannot start raises `ServerUnavailable` with one line saying what is missing
and what to install or run. Nothing here ever skips.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import re
import shutil
import signal
import site
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REDIS_ENV = "LATER_READ_TEST_REDIS_URL"
MYSQL_ENV = "LATER_READ_TEST_MYSQL"
KAFKA_ENV = "LATER_READ_TEST_KAFKA"

#: Where Debian keeps daemons (`mariadbd`); not always on a non-root user's PATH.
SBIN_DIRS: tuple[str, ...] = ("/usr/sbin", "/usr/local/sbin")

_OWNER = "owner.pid"
SERVER_RECORD = "server.json"  # in a managed server's folder: kind, address, pid (see started_servers)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOG_ERROR = re.compile(r"ERROR|FATAL|Exception|[Ee]rror:|in use|[Ff]ailed")


class ServerUnavailable(RuntimeError):
    """A test server could not be started or reached; the message is one line saying what to do."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it; a tiny race remains, see _retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_program(name: str) -> str | None:
    """`shutil.which`, falling back to the sbin folders where Debian installs daemons."""
    found = shutil.which(name)
    if found:
        return found
    return shutil.which(name, path=os.pathsep.join(SBIN_DIRS)) if SBIN_DIRS else None


def require_program(name: str, install: str, env: str) -> str:
    """The program's path, or ServerUnavailable saying which package to install."""
    path = find_program(name)
    if path is None:
        raise ServerUnavailable(f"{name} not found: run `{install}` (or set {env})")
    return path


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _one_line(text: str, limit: int = 240) -> str:
    """Squeeze a log excerpt or error into one line, so ServerUnavailable stays one line."""
    text = _ANSI.sub("", text)
    text = " | ".join(part.strip() for part in text.splitlines() if part.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------
# Child processes


def python_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: ours) with PYTHONPATH led by the folders `later_read` and `later_read_sandbox` were
    imported from, so that a child `python -m later_read...` runs this very code: a checkout's or a
    worktree's, even beside another install. Site-packages folders are left out (a child finds them)."""
    import later_read
    import later_read_sandbox

    site_dirs = {Path(folder).resolve() for folder in [*site.getsitepackages(), site.getusersitepackages()]}
    roots = [Path(str(module.__file__)).resolve().parents[1] for module in (later_read, later_read_sandbox)]
    env = dict(os.environ if env is None else env)
    paths = [str(root) for root in roots if root not in site_dirs] + [env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(filter(None, paths)))
    return env


def death_signal_setter():
    """A function for the forked child: prctl(PR_SET_PDEATHSIG, SIGKILL), so it dies with us.

    prctl is looked up here, in the parent: the child between fork and exec should run as little as
    possible (no dlopen), since other threads (librdkafka's) may hold locks at fork time.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class ChildProcess:
    """One server process in its own process group, logging to a file, killed with its group.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, so it is set only when the
    child is started from the main thread; otherwise only the process group and atexit protect us.
    """

    def __init__(self, argv: list[str], log_path: Path, cwd: Path) -> None:
        self.argv, self.log_path, self.cwd = argv, log_path, cwd
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        main = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=death_signal_setter() if main else None,  # noqa: PLW1509 - see there
            )
        atexit.register(self.kill)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, graceful: bool = True, timeout: float = 15.0) -> None:
        """SIGTERM the group and wait (graceful), then SIGKILL whatever is left."""
        if self.popen is None:
            return
        if graceful and self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group at once; safe to call twice (also the atexit hook)."""
        if self.popen is None:
            return
        self._signal(signal.SIGKILL)
        self.popen.wait()
        self.popen = None
        atexit.unregister(self.kill)

    def _signal(self, sig: int) -> None:
        assert self.popen is not None, "signalled before its start"
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def log_tail(self) -> str:
        """The log's first error lines and its last line, as one line, for error messages.

        The last lines alone are often a stack trace or shutdown chatter (Kafka); the first error
        line usually says what went wrong ("Address already in use", a bad option).
        """
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        errors = [ln for ln in lines if _LOG_ERROR.search(ln)][:2]
        picked = list(dict.fromkeys([*errors, *lines[-1:]]))
        return _one_line("\n".join(picked), 500) or f"(empty log {self.log_path})"


def wait_until(ready, child: ChildProcess, timeout: float, what: str) -> None:
    """Poll `ready()` until it is true; fail early with the log tail when the child exits."""
    deadline = time.monotonic() + timeout
    while True:
        if not child.alive():
            code = child.popen.returncode if child.popen else None
            raise ServerUnavailable(f"{what} exited (code {code}) while starting: {child.log_tail()}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"{what} did not answer within {timeout:.0f} s: {child.log_tail()}")
        time.sleep(0.05)


def _sweep_orphans() -> None:
    """Remove server folders left by a test run that was SIGKILLed (its children died with it).

    Each folder names the Python process that owns it; a folder whose owner is gone is garbage.
    """
    for folder in Path(tempfile.gettempdir()).glob("later-read-*-*"):
        try:
            owner = int((folder / _OWNER).read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError):
            continue


def started_servers(kind: str) -> list[dict]:
    """The servers of `kind` the sandbox started (here or in another process) that still run, from the
    record each managed server keeps in its folder: [{"kind", "address", "pid"}, ...]. What sandbox
    commands that write may act on (`sandbox/guard.py`)."""
    found = []
    for path in Path(tempfile.gettempdir()).glob(f"later-read-{kind}-*/{SERVER_RECORD}"):
        try:
            record = json.loads(path.read_text())
            os.kill(int(record["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # gone (or being written): not a running server of ours
        found.append(record)
    return found


# --------------------------------------------------------------------------------------------------
# Lifecycle shared by the three kinds


class LocalServer:
    """Start/stop/restart shared by the three servers; subclasses say how to prepare, run and probe.

    `external` is the address of an already-running server; then nothing is started or stopped.
    """

    kind = "server"
    env = ""

    def __init__(self, external: str | None = None, start_timeout: float = 30.0) -> None:
        self.external = external
        self.start_timeout = start_timeout
        self.tempdir: Path | None = None
        self.child: ChildProcess | None = None
        self.startup_seconds: float | None = None

    @property
    def workdir(self) -> Path:
        """The temporary directory, from the start until stop() (only a started server has one)."""
        assert self.tempdir is not None, "not started"
        return self.tempdir

    @property
    def managed(self) -> bool:
        """True when this object started (and so owns) the server process."""
        return self.external is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.external if not self.managed else f"pid {self.child.pid if self.child else None}"
        return f"<{type(self).__name__} {self.address()} ({where})>"

    def start(self):
        """Start the server (or check the external one answers); returns self. Idempotent."""
        if self.tempdir is not None:
            return self
        began = time.monotonic()
        if self.managed:
            self._retry(self._start_managed)
        else:
            self._check_external()
        self.startup_seconds = time.monotonic() - began
        return self

    def _retry(self, attempt, tries: int = 3) -> None:
        """free_port() can race with another process; pick new ports when a bind failed."""
        for left in range(tries - 1, -1, -1):
            try:
                attempt()
                return
            except ServerUnavailable as error:
                self._discard()
                if left == 0 or "in use" not in str(error).lower():
                    raise

    def _start_managed(self) -> None:
        _sweep_orphans()
        self.tempdir = Path(tempfile.mkdtemp(prefix=f"later-read-{self.kind}-"))
        (self.tempdir / _OWNER).write_text(f"{os.getpid()}\n")
        self._prepare()
        self._run()
        self._after_first_start()

    def _run(self) -> None:
        self.child = ChildProcess(self._argv(), self.workdir / f"{self.kind}.log", self.workdir)
        self.child.start()
        wait_until(self._answers, self.child, self.start_timeout, self.kind)
        record = {"kind": self.kind, "address": self.address(), "pid": self.child.pid}
        (self.workdir / SERVER_RECORD).write_text(json.dumps(record))

    def stop(self) -> None:
        """Kill the server and remove its directory; does nothing to an external server."""
        if self.managed:
            self._discard()

    def _discard(self) -> None:
        if self.child is not None:
            self.child.kill()
            self.child = None
        if self.tempdir is not None:
            shutil.rmtree(self.tempdir, ignore_errors=True)
            self.tempdir = None

    def stop_process(self, graceful: bool = True) -> None:
        """Stop only the process (same ports, same directory) so a test can see the server down."""
        self._require_managed("stop")
        if self.child is not None:
            self.child.stop(graceful=graceful)

    def restart(self) -> None:
        """Start the process again on the same ports and directory (after stop_process or a crash)."""
        self._require_managed("restart")
        if self.child is not None and self.child.alive():
            self.child.stop()
        self._run()

    def _require_managed(self, action: str) -> None:
        if not self.managed:
            raise ServerUnavailable(
                f"cannot {action} the external {self.kind} named by {self.env}; unset it to let the tests run their own"
            )
        if self.tempdir is None:
            raise ServerUnavailable(f"cannot {action} {self.kind}: it was never started")

    # Subclass hooks
    def address(self) -> str:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Find programs, pick ports, initialise the data directory."""

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _answers(self) -> bool:
        raise NotImplementedError

    def _after_first_start(self) -> None:
        """One-time setup once the server answers (users, databases)."""

    def _check_external(self) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------
# Redis
