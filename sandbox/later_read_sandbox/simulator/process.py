"""SimulatorProcess: the simulator in its own OS process, plus a standard-library control client.

A separate process keeps the simulator's CPU off the code under test (a benchmark measures the client,
not the fake) and is exactly what the demo runs. The control client uses urllib only, so tests need no
extra package to read counters or change knobs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from later_read.core.value import CachedValue
from later_read_sandbox.servers import death_signal_setter, python_env
from later_read_sandbox.simulator.knobs import KnobError, SimulatorKnobs
from later_read_sandbox.simulator.oracle import Oracle

START_TIMEOUT_SECONDS = 15.0
LISTENING = "simulator listening on "


class SimulatorError(RuntimeError):
    """A control call was answered with an error status (kept in `status`)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class SimulatorProcess:
    """`python -m later_read_sandbox.simulator` in a child process; use as a context manager."""

    def __init__(self, knobs: SimulatorKnobs | None = None, port: int = 0, cpu: int | None = None) -> None:
        self.knobs = knobs if knobs is not None else SimulatorKnobs()
        self.port = port
        self.cpu = cpu
        self.url = ""
        self.process: subprocess.Popen | None = None
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 - the child's output for its life; stop() closes it

    # Lifecycle -----------------------------------------------------------------------------------
    def command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "later_read_sandbox.simulator",
            "--port",
            str(self.port),
            "--config-json",
            json.dumps(self.knobs.to_dict()),
        ]
        return command + (["--cpu", str(self.cpu)] if self.cpu is not None else [])

    def start(self) -> SimulatorProcess:
        """Start the child and wait until it answers; RuntimeError (with its output) if it does not."""
        env = python_env()
        # Dies with us (even after kill -9 of a test run), as the real servers do.
        main = threading.current_thread() is threading.main_thread()
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=death_signal_setter() if main else None,  # noqa: PLW1509 - set in the main thread only
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"exited with code {self.process.returncode} before listening")
            if not self.url:
                self.url = self._announced_url()
            if self.url and self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        self._fail(f"did not answer within {START_TIMEOUT_SECONDS:g} s")
        raise AssertionError("unreachable")

    def _announced_url(self) -> str:
        for line in self.output().splitlines():
            if line.startswith(LISTENING):
                return line[len(LISTENING) :].strip()
        return ""

    def _answers(self) -> bool:
        try:
            self._request("GET", "/_sim/health", timeout=1)
        except (OSError, RuntimeError):
            return False
        return True

    def _fail(self, what: str) -> None:
        raise RuntimeError(
            f"simulator process ({' '.join(self.command()[:3])}) {what}; "
            f"its output:\n{self.output()[-4000:] or '(none)'}"
        )

    def output(self) -> str:
        """Everything the child printed so far (stdout and stderr)."""
        self._output.seek(0)
        return self._output.read().decode(errors="replace")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the simulator process has used so far (Linux /proc)."""
        assert self.process is not None, "the simulator is not running"
        return process_cpu_seconds(self.process.pid)

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
        self._output.close()

    # Control client ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return self._request("GET", "/_sim/stats")

    def calls(self, endpoint: str) -> dict[str, int]:
        return self._request("GET", f"/_sim/calls?endpoint={endpoint}")

    def reset(self) -> None:
        self._request("POST", "/_sim/reset", {})

    def configure(self, **changes: Any) -> None:
        """Partial update, e.g. configure(ab={"error_5xx_rate": 0.3}, in_experiment_ratio=0.5).

        Raises KnobError (a ValueError) naming the knob when the simulator rejects the change.
        """
        try:
            config = self._request("POST", "/_sim/config", changes)
        except SimulatorError as exc:
            if exc.status == 400:
                raise KnobError(str(exc)) from None
            raise
        self.knobs = SimulatorKnobs.from_dict(config)

    def config(self) -> dict[str, Any]:
        return self._request("GET", "/_sim/config")

    def expected(self, uid: str, default: str = "0") -> dict[str, Any]:
        """What the simulator answers for uid under its current knobs, computed locally."""
        return Oracle(self.knobs).expected(uid, default)

    def expected_value(self, uid: str, date: str) -> CachedValue:
        """The value a prewarm of `date` must store for uid under the current knobs."""
        return Oracle(self.knobs).expected_value(uid, date)

    def _request(self, method: str, path: str, payload: Any = None, timeout: float = 10) -> Any:
        if not self.url:
            raise RuntimeError("the simulator process is not started")
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            message = f"simulator {method} {path} -> {exc.code}: {exc.read().decode(errors='replace')}"
            raise SimulatorError(message, exc.code) from None


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a running process, from /proc/<pid>/stat (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
