"""capturescale: what a cluster capture of many nodes costs the API server.

    .venv/bin/python scripts/capturescale.py [--nodes 1000] [--duration 30] [--processes 4] [--markdown]

No root, no kernel. One lab API server (tracer/lab/api.py: RBAC from
deploy/rbac.yaml, the CRDs' validation, etcd's size limit) in a process of its
own; --nodes simulated agents in --processes processes, each agent with its own
KubeClient (the real kubernetes client, the agent's token) and its own
ReportWriter (tracer/agent/captures.py: its thread, its retries), driven at the
controller's cadence (report_due: a Recording report when it starts and at most
every REPORT_SECONDS, then one Done report at the capture's end); the Recording
and Done reports are the product's own (from_summary, and report.recording()
for what a Recording report carries) from a summary of the maximum realistic
size: 20 groups of 20 pods with the registry's real verdicts and hints (the
longest the golden events give), 10 flows. The agents' capture watch is not
simulated: every agent gets the capture's object once.

The plugin is `kubectl netdrop capture`'s following code (kubectl/capture.py
follow(): every node's state until all are final), as a netdrop-capturer user,
through a TCP relay that counts the bytes it reads. Measured: writes per second
(total, per node, the busiest second), requests in flight at once, the largest
object of each kind, the capture object's size, the bytes the plugin reads per
poll and in all, the API server process's CPU (/proc/PID/stat), and the time
from the last Done report written to the plugin seeing every node final.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracer.agent.captures import ReportWriter, report_due  # noqa: E402
from tracer.captures.api import CaptureClient  # noqa: E402
from tracer.captures.report import REPORT_PLURAL, FileEntry, Report, from_summary, recording, \
    report_object  # noqa: E402
from tracer.captures.spec import AGENTS_NAMESPACE, PLURAL, CaptureSpec, NodeSelection, capture_object, \
    parse_capture  # noqa: E402
from tracer.env import Environment  # noqa: E402
from tracer.lab import api as labapi  # noqa: E402
from tracer.pods.kube import KubeClient  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
GROUP = "netdrop.io"
# The real API server's limits the numbers compare to (docs/performance.md cites their sources).
ETCD_LIMIT = int(1.5 * 1024 * 1024)
REQUEST_LIMIT = 3 * 1024 * 1024
INFLIGHT = 400
MUTATING_INFLIGHT = 200


def cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# -- the API server's process --

def serve(nodes: list[str], conn: Any) -> None:
    api = labapi.KubeAPI(responder=False)
    for i, node in enumerate(nodes):
        api.add_node(labapi.node_object(node, [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"]))
    api.start()
    token = api.add_user("responder")
    api.bind_cluster_role("responder", "netdrop-capturer")    # node captures: the agents' namespace
    conn.send((api.url, api.token, token))
    conn.recv()
    conn.send((api.writes(), api.largest_object(), len(api.requests)))
    api.stop()


# -- the reports' content --

def real_texts() -> list[tuple[str, str, str]]:
    """(category, verdict, hint) for each category the golden events reach, longest hints first."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tracer.explain.categories import BY_NAME
    from unit.helpers import golden_groups

    out = {}
    for g in golden_groups().groups.values():
        out.setdefault(g.category, (g.category, BY_NAME[g.category].verdict, g.hint or ""))
    return sorted(out.values(), key=lambda t: -len(t[2]))


def big_summary(node: str, texts: list[tuple[str, str, str]]) -> dict[str, Any]:
    """A node's summary at the report's caps: 20 groups (and more, omitted), 20 pods, 10 flows."""
    groups = []
    for i in range(30):
        cat, verdict, hint = texts[i % len(texts)]
        groups.append({"pod": {"namespace": "shop", "name": f"web-{i % 25}-7d9f8c6b5-x{i:03d}"}, "category": cat,
                       "reason": "SKB_DROP_REASON_NETFILTER_DROP", "location": "nf_hook_slow+0x9c",
                       "count": 1000 - i, "hint": hint})
    return {"totals": {"drops": sum(g["count"] for g in groups), "events_delivered": 4000, "events_lost": 0},
            "groups": groups, "verdicts": [{"category": c, "verdict": v, "hint": h} for c, v, h in texts],
            "top_flows": [{"proto": "tcp", "src": f"10.244.{i}.17", "sport": 40000 + i, "dst": "10.96.120.33",
                           "dport": 8443, "pod": f"shop/web-{i}-7d9f8c6b5-x{i:03d}", "category": texts[0][0],
                           "events": 400 - i} for i in range(10)],
            "node": {"kubernetes_node": node}}


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the agents' processes --

def agents(nodes: list[str], kubeconfig: str, cap_obj: dict[str, Any], conn: Any) -> None:
    capture = parse_capture(cap_obj)
    texts = real_texts()
    writes: list[tuple[float, float, str, int]] = []     # (start, end, node, bytes) of each write, monotonic
    lock = threading.Lock()

    class Timed(CaptureClient):
        def write_report(self, capture: Any, report: Report, rv: str | None = None) -> str | None:
            size = len(json.dumps(report_object(capture, report)))
            t0 = time.monotonic()
            try:
                return super().write_report(capture, report, rv)
            finally:
                with lock:
                    writes.append((t0, time.monotonic(), report.node, size))

    writers = {}
    for node in nodes:
        w = ReportWriter(Timed(KubeClient(kubeconfig)), lambda: "https://10.0.0.1:10303", lambda: "ab" * 32)
        w.start()
        writers[node] = w
    start = time.time()
    summaries = {n: big_summary(n, texts) for n in nodes}
    last: dict[str, float] = {}
    done: set[str] = set()
    while len(done) < len(nodes):
        wall = time.time()
        for node in nodes:
            if node in done:
                continue
            base = Report(capture.name, capture.uid, node, "Recording", window_from=rfc3339(start),
                          updated=rfc3339(wall))
            if wall >= capture.ends_at():
                final = from_summary(Report(capture.name, capture.uid, node, "Done", "duration reached",
                                            rfc3339(start), rfc3339(wall), rfc3339(wall)), summaries[node],
                                     (FileEntry("summary.json", 48_000), FileEntry("events.jsonl", 1_600_000)))
                writers[node].put(capture, final)
                done.add(node)
            elif node not in last or report_due(last[node], wall):
                writers[node].put(capture, recording(from_summary(base, summaries[node], ())))
                last[node] = wall
        time.sleep(0.1)
    for w in writers.values():
        w.flush(120)
    for w in writers.values():
        w.close()
    conn.send(writes)


# -- the plugin's side --

class Relay:
    """127.0.0.1 TCP relay to the API server, counting the bytes the server sends back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.received = 0
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if count:
                    with self.lock:
                        self.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def kubeconfig(path: Path, url: str, token: str) -> str:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": url}}], "users": [{"name": "lab", "user": {"token": token}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab", "namespace": AGENTS_NAMESPACE}}]}))
    path.chmod(0o600)
    return str(path)


def measure(n: int, duration: float, processes: int, tmp: Path) -> dict[str, Any]:
    import io

    from tracer.kubectl import capture as plugin
    from tracer.kubectl.kubeapi import Target, connect
    from tracer.kubectl.wiring import GRACE_SECONDS, Wiring

    ctx = mp.get_context("fork")
    nodes = [f"node-{i:04d}" for i in range(n)]
    here, there = ctx.Pipe()
    server = ctx.Process(target=serve, args=(nodes, there), daemon=True)
    server.start()
    url, agent_token, user_token = here.recv()
    port = int(url.rsplit(":", 1)[1])
    relay = Relay(("127.0.0.1", port))
    agent_kc = kubeconfig(tmp / "agent.kubeconfig", url, agent_token)
    user_kc = kubeconfig(tmp / "user.kubeconfig", f"http://127.0.0.1:{relay.port}", user_token)

    polls: list[tuple[float, int]] = []

    def sleep(seconds: float) -> None:
        with relay.lock:
            polls.append((time.monotonic(), relay.received))
        time.sleep(seconds)

    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), stdout_tty=False, stderr_tty=False, color=False,
                      width=120, columns=120)
    w = Wiring(env=env, connect=lambda t: connect(t, {"HOME": str(tmp)}), sleep=sleep)
    api = w.connect(Target(kubeconfig=user_kc))
    spec = CaptureSpec(None, NodeSelection((), True), duration)
    created = api.create_capture(AGENTS_NAMESPACE, capture_object(AGENTS_NAMESPACE, spec, name="scale"))
    cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
    parts = [nodes[i::processes] for i in range(processes)]
    pipes, workers = [], []
    for part in parts:
        a, b = ctx.Pipe()
        p = ctx.Process(target=agents, args=(part, agent_kc, created, b), daemon=True)
        p.start()
        pipes.append(a)
        workers.append(p)
    uid = created["metadata"]["uid"]
    outcome = plugin.follow(w, api, AGENTS_NAMESPACE, "scale", uid, set(nodes), duration + GRACE_SECONDS)
    seen_all = time.monotonic()
    writes = [x for a in pipes for x in a.recv()]
    for p in workers:
        p.join(30)
    cpu = cpu_seconds(server.pid) - cpu0
    elapsed = time.monotonic() - t0
    here.send("stop")
    counts, largest, requests = here.recv()
    server.join(10)
    plugin_bytes = relay.received
    per_poll = [b - a for (_, a), (_, b) in zip(polls, polls[1:], strict=False)]

    ends = sorted(e for _, e, _, _ in writes)
    seconds = Counter(int(e - t0) for e in ends)
    by_node: dict[str, list[float]] = {}
    for s, _, node, _ in sorted(writes):
        by_node.setdefault(node, []).append(s)
    gaps = [b - a for ts in by_node.values() for a, b in zip(ts, ts[1:], strict=False)]
    events = sorted([(s, 1) for s, _, _, _ in writes] + [(e, -1) for _, e, _, _ in writes])
    inflight = peak = 0
    for _, d in events:
        inflight += d
        peak = max(peak, inflight)
    agent_writes = sum(v for (user, verb), v in counts.items() if user == labapi.AGENT_USER)
    done = sum(r.state == "Done" for r in outcome.reports.values())
    return {
        "nodes": n, "duration_s": duration, "elapsed_s": round(elapsed, 1),
        "writes": agent_writes, "writes_per_s": round(agent_writes / elapsed, 1),
        "writes_per_node_per_s": round(agent_writes / elapsed / n, 3),
        "busiest_second_writes": max(seconds.values(), default=0),
        "min_gap_between_a_nodes_writes_s": round(min(gaps, default=0.0), 2),
        "peak_writes_in_flight": peak,
        "write_latency_p50_ms": round(statistics.median(e - s for s, e, _, _ in writes) * 1000, 1),
        "write_latency_max_ms": round(max(e - s for s, e, _, _ in writes) * 1000, 1),
        "report_bytes_written": sum(b for _, _, _, b in writes),
        "largest_report_bytes": largest.get(f"{GROUP}/{REPORT_PLURAL}", 0),
        "capture_object_bytes": largest.get(f"{GROUP}/{PLURAL}", 0),
        "plugin_polls": len(polls), "plugin_bytes": plugin_bytes,
        "plugin_bytes_per_poll_max": max(per_poll, default=0),
        "plugin_bytes_per_poll_median": int(statistics.median(per_poll)) if per_poll else 0,
        "api_cpu_s": round(cpu, 1), "api_cpu_percent": round(100 * cpu / elapsed, 1),
        "api_requests": requests,
        "plugin_saw_all_final_after_last_write_s": round(seen_all - ends[-1], 2) if ends else None,
        "plugin_done_nodes": done,
        "plugin_said": sorted({line for line in env.stderr.getvalue().splitlines()  # type: ignore[attr-defined]
                               if "asking again" in line})[:5],
    }


def markdown(r: dict[str, Any]) -> str:
    rows = [
        ("reports written (agents)", f"{r['writes']:,} in {r['elapsed_s']} s"),
        ("writes per second, total / per node", f"{r['writes_per_s']} / {r['writes_per_node_per_s']}"),
        ("busiest second", f"{r['busiest_second_writes']} writes"),
        ("shortest gap between one node's writes", f"{r['min_gap_between_a_nodes_writes_s']} s"),
        ("writes in flight at once (peak)", f"{r['peak_writes_in_flight']} (limit {MUTATING_INFLIGHT} mutating)"),
        ("write latency median / max", f"{r['write_latency_p50_ms']} / {r['write_latency_max_ms']} ms"),
        ("report bytes written (agents)", f"{r['report_bytes_written']:,} B"),
        ("largest report", f"{r['largest_report_bytes']:,} B (etcd {ETCD_LIMIT:,} B)"),
        ("capture object", f"{r['capture_object_bytes']:,} B"),
        ("plugin: polls, bytes read in all", f"{r['plugin_polls']}, {r['plugin_bytes']:,} B"),
        ("plugin: bytes per poll median / max",
         f"{r['plugin_bytes_per_poll_median']:,} / {r['plugin_bytes_per_poll_max']:,} B"),
        ("API server CPU", f"{r['api_cpu_s']} s ({r['api_cpu_percent']} % of one core)"),
        ("plugin sees all final after the last write", f"{r['plugin_saw_all_final_after_last_write_s']} s"),
        ("nodes Done as the plugin saw them", f"{r['plugin_done_nodes']} of {r['nodes']}"),
    ]
    return "| measure | value |\n| --- | --- |\n" + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--duration", type=float, default=30.0, help="the capture's duration, seconds (1..600)")
    p.add_argument("--processes", type=int, default=4, help="agent processes")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    if not 1 <= args.nodes <= 5000 or not 1 <= args.duration <= 600 or not 1 <= args.processes <= 64:
        print("capturescale: --nodes 1..5000, --duration 1..600, --processes 1..64", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.nodes, args.duration, args.processes, Path(tmp))
    print(markdown(result) if args.markdown else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
