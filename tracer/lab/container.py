"""container: a PodRun (tracer/lab/kubelet.py) run with podman, probed and stopped as the kubelet would.

The runner makes the host directories first (each emptyDir mode 0777, as the kubelet), starts
`podman run` attached (its output read here), probes the container on schedule, and stops it
as the kubelet does: SIGTERM (`podman stop -t GRACE`), SIGKILL once the grace period is over.
Whatever happens, close() leaves nothing: the container removed, the directories it made gone.

Probes go to 127.0.0.1: the kubelet sends them to the pod's IP, which for a host-network pod
is the node's own address; the agent listens on every address, loopback included.
"""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .api import KubeAPI, node_object
from .kubelet import PodRun, Probe, ServiceAccount


@dataclass(frozen=True)
class ProbeResult:
    kind: str
    at: float            # seconds since the container started
    ok: bool
    detail: str          # the status line, or why no answer came


def probe_once(probe: Probe, host: str = "127.0.0.1") -> tuple[bool, str]:
    """One HTTP GET as the kubelet's prober sends it (pkg/probe/http): 200-399 is healthy,
    anything else, no answer within the timeout included, is not. HTTPS is not verified."""
    if probe.scheme == "HTTPS":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, probe.port, timeout=probe.timeout,
                                                                       context=ctx)
    else:
        conn = http.client.HTTPConnection(host, probe.port, timeout=probe.timeout)
    headers = {"User-Agent": "kube-probe/1.31", "Accept": "*/*", **dict(probe.headers)}
    try:
        conn.request("GET", probe.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read(10240).decode(errors="replace").strip()
        return 200 <= resp.status < 400, f"{resp.status} {body}"
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


class Container:
    """One run of a PodRun; a context manager that always cleans up."""

    def __init__(self, run: PodRun, scratch: Path) -> None:
        """scratch: the run's own directory (its emptyDirs), removed whole by close()."""
        self.run = run
        self.scratch = scratch
        self.results: list[ProbeResult] = []
        self.restarts_wanted: list[str] = []     # liveness failures the kubelet would restart for
        self.out: list[str] = []
        self.err: list[str] = []
        self.started = 0.0
        self.ready_after: float | None = None
        self.stop_seconds: float | None = None
        self.exit_status: int | None = None
        self.over_limit: list[str] = []          # emptyDirs past their sizeLimit (the kubelet evicts)
        self._made: list[Path] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._started_ok = threading.Event()
        self._threads: list[threading.Thread] = []
        self.proc: subprocess.Popen[str] | None = None

    # ---- start ----

    def start(self) -> Container:
        for d in self.run.host_dirs:
            if d.path.exists():
                continue
            missing = [p for p in [d.path, *d.path.parents] if not p.exists()]
            d.path.mkdir(parents=True)
            os.chmod(d.path, d.mode)     # chmod, not mkdir's mode: the umask takes bits away (as the kubelet knows)
            if not d.path.is_relative_to(self.scratch):
                self._made += missing[::-1]
        subprocess.run(["podman", "rm", "--force", "--ignore", self.run.name], capture_output=True, timeout=60)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.run.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, errors="replace")
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            self._spawn(self._read, stream, lines)
        probes = {p.kind: p for p in self.run.probes}
        if "startupProbe" not in probes:
            self._started_ok.set()
        if "readinessProbe" not in probes:
            self._ready.set()
        for p in probes.values():
            self._spawn(self._probe_loop, p)
        return self

    def _spawn(self, target: object, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    @staticmethod
    def _read(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line)

    def _probe_loop(self, probe: Probe) -> None:
        """The kubelet's worker for one probe (pkg/kubelet/prober/worker.go): the first after
        initialDelaySeconds, then every periodSeconds; readiness and liveness wait for startup."""
        if probe.kind != "startupProbe" and not self._wait(self._started_ok):
            return
        if self._stop.wait(probe.initial_delay):
            return
        successes = failures = 0
        while not self._stop.is_set() and self.running():
            ok, detail = probe_once(probe)
            self.results.append(ProbeResult(probe.kind, time.monotonic() - self.started, ok, detail))
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if probe.kind == "startupProbe" and successes >= probe.success_threshold:
                self._started_ok.set()
                return
            if probe.kind == "readinessProbe" and successes >= probe.success_threshold and self.ready_after is None:
                self.ready_after = time.monotonic() - self.started
                self._ready.set()
            if probe.kind != "readinessProbe" and failures >= probe.failure_threshold:
                self.restarts_wanted.append(f"{probe.kind} failed {failures} times: {detail}")
                failures = 0
            # Until ready, readiness is asked at once again, not a period later: the test waits for it.
            waiting = probe.kind == "readinessProbe" and not self._ready.is_set()
            self._stop.wait(min(probe.period, 0.5) if waiting else probe.period)

    def _wait(self, event: threading.Event) -> bool:
        while not event.wait(0.2):
            if self._stop.is_set():
                return False
        return True

    # ---- while it runs ----

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> float:
        """Seconds from start to the first successful readiness probe; AssertionError with the
        container's output if it exits or is not ready in time."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.2):
            if not self.running() or time.monotonic() > deadline:
                why = "exited" if not self.running() else f"not ready within {timeout:.0f} s"
                raise AssertionError(f"{self.run.name} {why}; probes: {self.results[-3:]}\n{self.output()}")
        assert self.ready_after is not None
        return self.ready_after

    def probe_now(self, kind: str) -> tuple[bool, str]:
        (probe,) = [p for p in self.run.probes if p.kind == kind]
        return probe_once(probe)

    def output(self) -> str:
        return "".join(self.out) + "".join(self.err)

    # ---- stop ----

    def stop(self) -> float:
        """SIGTERM, then SIGKILL after the grace period (podman stop -t GRACE): seconds it took."""
        t0 = time.monotonic()
        if self.running():
            subprocess.run(["podman", "stop", "-t", str(self.run.grace_seconds), self.run.name],
                           capture_output=True, timeout=self.run.grace_seconds + 60)
        if self.proc is not None:
            try:
                self.exit_status = self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.exit_status = self.proc.wait()
        self.stop_seconds = time.monotonic() - t0
        self._stop.set()
        return self.stop_seconds

    def close(self) -> None:
        """Nothing left behind: the container (and its anonymous volumes) removed, the emptyDirs
        measured against their sizeLimit and removed, the hostPath directories made gone again."""
        self._stop.set()
        try:
            if self.running():
                self.stop()
        finally:
            subprocess.run(["podman", "rm", "--force", "--volumes", "--ignore", "--time", "0", self.run.name],
                           capture_output=True, timeout=120)
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for t in self._threads:
                t.join(5)
            for d in self.run.host_dirs:
                if d.size_limit is not None and d.path.is_dir():
                    used = _usage(d.path)
                    if used > d.size_limit:
                        self.over_limit.append(f"{d.path.name}: {used} bytes > sizeLimit {d.size_limit}")
            shutil.rmtree(self.scratch, ignore_errors=True)
            for path in reversed(self._made):
                with suppress(OSError):
                    path.rmdir()       # a hostPath directory made here, if still empty

    def __enter__(self) -> Container:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _usage(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def scratch_dir() -> Path:
    """A private directory for one run's emptyDirs (the kubelet's pods/UID/volumes)."""
    return Path(tempfile.mkdtemp(prefix="netdrop-kubelet-"))


@contextmanager
def cluster_api(node: str) -> Iterator[tuple[KubeAPI, ServiceAccount]]:
    """The lab's API server over HTTPS on 127.0.0.1 (a host-network container reaches it), with
    node as its one Node, and the service account the kubelet would give the agent's pod: a
    directory of token, ca.crt and namespace, and the API's address. Both gone afterwards."""
    api = KubeAPI()
    api.add_node(node_object(node, ["127.0.0.1"]))
    api.start(tls=True)
    home = Path(tempfile.mkdtemp(prefix="netdrop-sa-"))
    try:
        env = api.write_service_account(home / "serviceaccount")
        yield api, ServiceAccount(home / "serviceaccount", env["KUBERNETES_SERVICE_HOST"],
                                  int(env["KUBERNETES_SERVICE_PORT"]))
    finally:
        api.stop()
        shutil.rmtree(home, ignore_errors=True)
