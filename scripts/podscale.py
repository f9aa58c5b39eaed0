"""Pod-scale benchmark: what following N pods costs netdrop.

Run as root: scripts/podscale [--pods 0,50,150,250] [--idle 30] [--churn 20] [--markdown]

On one simulated node (tracer.lab: namespaces only, its own Kubernetes API),
grown to each N in turn with bulk pods (tracer.lab.bulk: CNI-style sandboxes
on node1's bridge, each with its Pod object), a fresh `netdrop watch -A
--json` is started and measured:

  - start: from exec to the "tracing" line on stderr;
  - idle CPU: utime+stime of the netdrop process itself (/proc/PID/stat) over
    --idle seconds with nothing happening (pods are added --quiet seconds
    before: their IPv6 start-up multicast is dropped in every other pod on the
    bridge, N x N drops); other processes on a busy machine barely disturb it
    (the load average is reported beside it, and the drop events netdrop printed);
  - churn CPU: the same while pods are replaced (deleted, then made again
    under a new name at the same address) --churn-rate times a second;
  - resident memory (VmRSS) after the idle window;
  - naming: a pod is replaced, and UDP datagrams to a closed port of its own
    address are sent inside it every 20 ms until netdrop's JSON names it: the
    time from the Pod object being there to the first drop carrying its name.

The baseline row is `watch --netns <node>` (no pod source at all). Everything
is removed at the end, on Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracer.lab.bulk import MAX_PODS, BulkPod, Pods  # noqa: E402
from tracer.lab.node import SimNode  # noqa: E402
from tracer.lab.ownership import NETNS_DIR  # noqa: E402
from tracer.node.nsexec import socket_in  # noqa: E402

PY = sys.executable
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of the process (all its threads), /proc/PID/stat fields 14 and 15;
    with tid, of that thread alone (the main thread's tid is the pid)."""
    text = Path(f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Cpu:
    """CPU of a process over a window, split: its main thread (netdrop's event loop:
    ring buffer, the kernel's counters, pod map writes) and the others (pod source,
    API watch, explainer)."""

    def __init__(self, pid: int):
        self.pid, self.t0 = pid, time.monotonic()
        self.all0, self.main0 = cpu_seconds(pid), cpu_seconds(pid, pid)

    def pct(self) -> tuple[float, float, float]:
        dt = time.monotonic() - self.t0
        whole, main = cpu_seconds(self.pid) - self.all0, cpu_seconds(self.pid, self.pid) - self.main0
        return round(100 * whole / dt, 2), round(100 * main / dt, 2), round(100 * (whole - main) / dt, 2)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[0]


class Netdrop:
    """netdrop watch --json as a child; stderr and stdout read by threads."""

    def __init__(self, args: list[str], source: str | None):
        env = dict(os.environ)
        if source:
            env["PYTHONPATH"] = source
        cmd = [PY, "-c", "import sys; from tracer.cli import entry; sys.argv[0] = 'netdrop'; entry()",
               "watch", "--json", "--duration", "900", *args]
        self.started = time.monotonic()
        self.tracing_at: float | None = None
        self.named: dict[str, float] = {}      # pod name -> first drop naming it
        self.lines = 0                          # drop events printed
        self.wanted: set[str] = set()
        self.stderr: list[str] = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=source or str(ROOT))
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._err, args=(self.proc.stderr,), daemon=True).start()
        threading.Thread(target=self._out, args=(self.proc.stdout,), daemon=True).start()

    def _err(self, f: IO[str]) -> None:
        for line in f:
            self.stderr.append(line.rstrip())
            if self.tracing_at is None and "netdrop: tracing (" in line:
                self.tracing_at = time.monotonic()

    def _out(self, f: IO[str]) -> None:
        for line in f:
            self.lines += 1
            try:
                pod = json.loads(line).get("pod") or {}
            except ValueError:
                continue
            name = pod.get("name")
            if name in self.wanted and name not in self.named:
                self.named[name] = time.monotonic()

    def wait_tracing(self, limit: float = 60) -> float:
        deadline = time.monotonic() + limit
        while self.tracing_at is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("netdrop did not start tracing:\n" + "\n".join(self.stderr[-10:]))
            time.sleep(0.01)
        return self.tracing_at - self.started

    def stop(self) -> float:
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - t


def time_to_name(nd: Netdrop, bulk: Pods, pod: BulkPod, limit: float = 10.0) -> tuple[BulkPod, float | None]:
    """Replace pod; send drops inside the new one until netdrop names it."""
    new = bulk.replace(pod)
    made = time.monotonic()
    nd.wanted.add(new.name)
    sock = socket_in(str(NETNS_DIR / new.sandbox.netns), socket.AF_INET, socket.SOCK_DGRAM)
    if sock is None:
        return new, None
    with sock:
        while new.name not in nd.named and time.monotonic() - made < limit:
            sock.sendto(b"podscale", (new.ipv4, 9))       # port 9: nobody listens (in-pod NO_SOCKET)
            time.sleep(0.02)
    at = nd.named.get(new.name)
    return new, (at - made if at is not None else None)


def measure(node: SimNode, bulk: Pods, n: int, a: argparse.Namespace, baseline: bool) -> dict[str, Any]:
    assert node.kubeconfig is not None
    args = ["--netns", node.node1] if baseline else ["-A", "--kubeconfig", str(node.kubeconfig),
                                                      "--node-netns", node.node1]
    args += ["--max-event-rate", str(a.max_event_rate)]
    nd = Netdrop(args, a.source)
    row: dict[str, Any] = {"pods": n, "mode": "--netns" if baseline else "-A"}
    try:
        row["start_s"] = round(nd.wait_tracing(), 2)
        time.sleep(a.settle)
        pid = nd.proc.pid
        cpu, l0, e0, rss = Cpu(pid), load(), nd.lines, []
        end = time.monotonic() + a.idle
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            rss.append(rss_mib(pid))
        row["idle_cpu_pct"], row["idle_main_pct"], row["idle_threads_pct"] = cpu.pct()
        row["idle_events"] = nd.lines - e0
        row["load"] = f"{l0}-{load()}"
        row["rss_mib"] = round(statistics.median(rss), 1)       # it moves as freed memory is handed back
        row["rss_range_mib"] = f"{min(rss):.0f}-{max(rss):.0f}"
        if not baseline and bulk.pods:
            pods = list(bulk.pods.values())
            cpu, t0, done, i, e0 = Cpu(pid), time.monotonic(), 0, 0, nd.lines
            while time.monotonic() - t0 < a.churn:
                due = t0 + done / a.churn_rate
                if time.monotonic() < due:
                    time.sleep(due - time.monotonic())
                pods[i % len(pods)] = bulk.replace(pods[i % len(pods)])
                i += 1
                done += 1
            elapsed = time.monotonic() - t0
            row["churn_cpu_pct"], row["churn_main_pct"], row["churn_threads_pct"] = cpu.pct()
            row["churn_rate"] = round(done / elapsed, 1)
            row["churn_events_per_s"] = round((nd.lines - e0) / elapsed)
            row["rss_after_churn_mib"] = round(rss_mib(pid), 1)
    finally:
        row["stop_s"] = round(nd.stop(), 2)
    if not baseline and bulk.pods and a.names:
        row.update(naming(node, bulk, a))
    return row


def naming(node: SimNode, bulk: Pods, a: argparse.Namespace) -> dict[str, Any]:
    """Time to name new pods, with netdrop's default event budget (capped, a new pod's
    own start-up chatter would crowd out the drops that name it), once churn has settled."""
    assert node.kubeconfig is not None
    time.sleep(a.quiet)
    nd = Netdrop(["-A", "--kubeconfig", str(node.kubeconfig), "--node-netns", node.node1], a.source)
    try:
        nd.wait_tracing()
        time.sleep(a.settle)
        names = []
        for k in range(a.names):
            _, took = time_to_name(nd, bulk, list(bulk.pods.values())[k])
            names.append(took)
    finally:
        nd.stop()
    ok = [t for t in names if t is not None]
    return {"name_s_median": round(statistics.median(ok), 2) if ok else None,
            "name_s_max": round(max(ok), 2) if ok else None, "names_missed": len(names) - len(ok)}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| pods | tracing starts after | idle CPU, % of a core: all (event loop + pod threads) | "
             "churn CPU: all (event loop + pod threads), replaced/s | resident memory, median (range) | "
             "new pod named after (median, max) |", "|---|---|---|---|---|---|"]
    for r in rows:
        churn = (f"{r['churn_cpu_pct']} ({r['churn_main_pct']} + {r['churn_threads_pct']}), {r['churn_rate']}/s"
                 if "churn_cpu_pct" in r else "-")
        name = f"{r['name_s_median']} s, {r['name_s_max']} s" if r.get("name_s_median") is not None else "-"
        lines.append(f"| {r['pods']} ({r['mode']}) | {r['start_s']} s | {r['idle_cpu_pct']} ({r['idle_main_pct']} + "
                     f"{r['idle_threads_pct']}), load {r['load']} | {churn} | {r['rss_mib']} MiB "
                     f"({r['rss_range_mib']}) | {name} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pods", default="0,50,150,250", help=f"bulk pod counts (at most {MAX_PODS})")
    p.add_argument("--idle", type=float, default=30.0, help="idle window, seconds")
    p.add_argument("--churn", type=float, default=20.0, help="churn window, seconds")
    p.add_argument("--churn-rate", type=float, default=10.0, help="pods replaced per second")
    p.add_argument("--names", type=int, default=5, help="new pods timed until named")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after start before measuring")
    p.add_argument("--quiet", type=float, default=30.0,
                   help="seconds after adding pods before netdrop starts: a new pod's IPv6 start-up (router "
                        "solicitations, MLD reports) is multicast on the bridge and dropped in every other pod")
    p.add_argument("--max-event-rate", type=int, default=100,
                   help="netdrop's event budget (default 100/s): new pods' IPv6 chatter is dropped in every other "
                        "pod, thousands of events a second under churn, whose cost scripts/bench measures; capped, "
                        "the CPU figures show the pod machinery (counts stay exact in the kernel)")
    p.add_argument("--no-baseline", action="store_true", help="skip the `watch --netns` row")
    p.add_argument("--source", help="run netdrop from this checkout instead (a `git worktree` of an older commit)")
    p.add_argument("--prefix", default=f"nps{os.getpid() % 10000}")
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args()
    if os.geteuid() != 0:
        print("podscale: run as root", file=sys.stderr)
        return 2
    counts = sorted(int(x) for x in a.pods.split(","))
    if counts and counts[-1] > MAX_PODS:
        print(f"podscale: at most {MAX_PODS} pods", file=sys.stderr)
        return 2

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    rows: list[dict[str, Any]] = []
    node = SimNode.create(prefix=a.prefix)
    try:
        bulk = Pods(node)
        if not a.no_baseline:
            rows.append(measure(node, bulk, 0, a, baseline=True))
            print(json.dumps(rows[-1]), flush=True)
        for n in counts:
            t = time.monotonic()
            while len(bulk.pods) < n:
                bulk.add()
            print(f"# {n} bulk pods ready ({time.monotonic() - t:.1f} s to add)", file=sys.stderr, flush=True)
            if n:
                time.sleep(a.quiet)
            rows.append(measure(node, bulk, n, a, baseline=False))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        node.destroy()
    if a.markdown:
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
