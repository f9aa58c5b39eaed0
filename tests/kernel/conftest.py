"""Kernel tests: root, the real kernel, bcc, and a simulated node in namespaces
this test run creates and always removes."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tracer.lab.node import SimNode

from ..timing import TIME_SCALE

# The commands the tests start import tracer from this checkout, not from wherever the installed
# (editable) package points: a worktree's tests run the worktree's code.
REPO = Path(__file__).resolve().parents[2]
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])

NETDROP = [str(Path(sys.executable).with_name("netdrop"))]
if not Path(NETDROP[0]).exists():
    NETDROP = [sys.executable, "-m", "tracer.cli"]


@pytest.fixture(scope="session")
def node():
    sim = SimNode.create(prefix=f"ndt{os.getpid()}")
    try:
        yield sim
    finally:
        sim.destroy()


class Netdrop:
    """`netdrop ...` as a user runs it, in the background; stop() ends it with
    SIGTERM like an operator would and returns what it printed."""

    READY = "netdrop: tracing"

    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen(NETDROP + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.err_lines: list[str] = []
        self.out_lines: list[str] = []
        self.ready = threading.Event()
        self._readers = [threading.Thread(target=self._read_err, daemon=True),
                         threading.Thread(target=self._read_out, daemon=True)]
        for t in self._readers:
            t.start()

    def _read_out(self):
        for line in self.proc.stdout:
            self.out_lines.append(line)

    def _read_err(self):
        for line in self.proc.stderr:
            self.err_lines.append(line)
            if line.startswith(self.READY):
                self.ready.set()

    def stderr_now(self) -> str:
        """What it printed on stderr so far."""
        return "".join(self.err_lines)

    def wait_ready(self, timeout: float = 60) -> "Netdrop":
        deadline = time.monotonic() + timeout * TIME_SCALE
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"netdrop did not start: {''.join(self.err_lines)}")
        return self

    def stop(self, settle: float = 0.5, sig=signal.SIGTERM, timeout: float = 30):
        time.sleep(settle)  # let the last drops reach the ring buffer
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout * TIME_SCALE)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        for t in self._readers:
            t.join(5)
        self.stdout = "".join(self.out_lines)
        self.stderr = "".join(self.err_lines)
        return self

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines()]


@pytest.fixture
def netdrop():
    started: list[Netdrop] = []

    def start(*args, **kw) -> Netdrop:
        nd = Netdrop(*args, **kw)
        started.append(nd)
        return nd

    yield start
    for nd in started:
        nd.kill()
