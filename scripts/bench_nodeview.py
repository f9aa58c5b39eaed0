"""Node-view benchmark: what reading the node's namespaces through rtnetlink costs.

Run as root: scripts/bench_nodeview [--pods 250] [--rounds 5] [--source DIR ...]

One simulated node (tracer.lab) grown to --pods bulk pods; then, for this
checkout and each --source (a `git worktree` of another commit, e.g. main's
hand-written parser), a child process measures, best of --rounds:

  - scan: a first full scan (every pod namespace found and read: NodeScanner.scan),
    and rescan: the next one (the safety net every 30 s: /proc walked, the node's
    links and addresses dumped);
  - read: one pod namespace read (socket made inside it, addresses and veths
    dumped and decoded: read_netns), median and 90th percentile; cold: its
    messages never seen before (a new pod), else as read again (rtnl keeps what
    messages said by their bytes; main's parser has no such memory);
  - node: the node namespace's links and addresses dumped and decoded, as
    each full scan does, cold and again;
  - decode: the node's whole link dump's bytes (every link, with statistics, as
    the kernel sends them unasked), decoded only, per link message;
  - churn: --churn pods replaced one at a time, each looked up as the pod source
    does (the node's notifications drained, NodeScanner.refresh): CPU per pod.

CPU time of the child's thread (time.thread_time) besides wall time, so
other load on the machine barely moves it. Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def child(node_path: str, pod_paths: list[str], rounds: int) -> dict[str, Any]:
    """Runs with PYTHONPATH at the checkout measured: its own rtnl and NodeScanner."""
    try:
        from tracer.node import rtnl
        from tracer.node.nsexec import socket_in
        from tracer.node.scan import NodeScanner
    except ImportError:                 # a checkout from before tracer/node/
        from tracer.nsexec import socket_in  # type: ignore[import-not-found,no-redef]
        from tracer.pods import rtnl  # type: ignore[attr-defined,no-redef]
        from tracer.pods.nodescan import NodeScanner  # type: ignore[import-not-found,no-redef]

    def read(path: str) -> Any:
        return rtnl.read_netns(path)

    def node_dump() -> Any:
        with rtnl.Rtnl(node_path) as rt:
            return rtnl.global_ips(rt.addresses()), rtnl.veths_of(rt.links("veth"))

    def kinds(data: bytes) -> list[int]:
        return [rtnl.kind(m) for m in rtnl.decode(data)]

    def raw_dump() -> list[bytes]:
        """The node's whole link dump as the kernel sends it to a bare request."""
        sock = socket_in(node_path, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        assert sock is not None
        out = []
        with sock:
            sock.send(struct.pack("=IHHII", 32, 18, 0x301, 1, 0) + bytes(16))     # RTM_GETLINK dump
            while not out or 3 not in kinds(out[-1]):                          # NLMSG_DONE
                out.append(sock.recv(1 << 16))
        return out

    def decode(chunks: list[bytes]) -> int:
        return len(rtnl.veths_of([m for c in chunks for m in rtnl.decode(c)]))

    def timed(fn: Any, *args: Any) -> tuple[float, float, Any]:
        w, c = time.perf_counter(), time.thread_time()
        got = fn(*args)
        return time.perf_counter() - w, time.thread_time() - c, got

    def forget() -> None:
        rtnl.forget()

    def reads() -> tuple[float, float, float]:
        walls, cpus = [], []
        for p in pod_paths:
            w, c, got = timed(read, p)
            assert got is not None and got[0], f"nothing read in {p}"
            walls.append(w)
            cpus.append(c)
        walls.sort()
        return statistics.median(walls) * 1e3, walls[len(walls) * 9 // 10] * 1e3, statistics.median(cpus) * 1e3

    read(pod_paths[0])          # imports, the thread machinery
    forget()
    scanner = NodeScanner(node_path)
    w, c, snap = timed(scanner.scan)
    out: dict[str, Any] = {"pyroute2": rtnl is not None, "scan_ms": round(w * 1e3, 1),
                           "scan_cpu_ms": round(c * 1e3, 1), "scan_pods": len(snap.pod_like())}
    w, c, _ = timed(scanner.scan)
    out["rescan_ms"], out["rescan_cpu_ms"] = round(w * 1e3, 1), round(c * 1e3, 1)
    best: dict[str, float] = {}
    for _ in range(rounds):
        forget()
        row = dict(zip(("read_cold_ms", "read_cold_p90_ms", "read_cold_cpu_ms"), reads(), strict=True))
        row.update(zip(("read_ms", "read_p90_ms", "read_cpu_ms"), reads(), strict=True))
        forget()
        w, c, _ = timed(node_dump)
        row["node_cold_ms"], row["node_cold_cpu_ms"] = w * 1e3, c * 1e3
        w, c, _ = timed(node_dump)
        row["node_ms"], row["node_cpu_ms"] = w * 1e3, c * 1e3
        chunks = raw_dump()
        forget()
        w, c, n = timed(decode, chunks)
        row["decode_cold_us_per_link"] = c * 1e6 / max(1, n)
        w, c, n = timed(decode, chunks)
        row["decode_us_per_link"] = c * 1e6 / max(1, n)
        row["veths"] = n
        for k, v in row.items():
            best[k] = min(v, best.get(k, v))
    out.update({k: round(v, 3) for k, v in best.items()})
    out["veths"] = int(best["veths"])
    return out


def child_churn(node_path: str) -> dict[str, Any]:
    """The node followed as the pod source does (NodeEvents, NodeScanner.refresh) while the
    parent replaces pods: one "go" line on stdin after each, "ok" back once it is looked up."""
    try:
        from tracer.node.events import NodeEvents
        from tracer.node.scan import NodeScanner
    except ImportError:
        from tracer.pods.nodeevents import NodeEvents    # type: ignore[no-redef]    # a tree before tracer/node/
        from tracer.pods.nodescan import NodeScanner    # type: ignore[no-redef]
    scanner = NodeScanner(node_path)
    scanner.keep_open = True
    scanner.scan()
    for ino in scanner.table.first_seen:      # as after a while: none of them found lately
        scanner.table.first_seen[ino] -= 60
    events = NodeEvents(node_path, scanner.run_dir)
    time.sleep(0.3)
    events.drain()
    print("ready", flush=True)
    cpu, n = 0.0, 0
    for line in sys.stdin:
        if line.strip() != "go":
            break
        time.sleep(0.2)           # the pod source lets a burst settle as long (SETTLE_SECONDS)
        c = time.thread_time()
        scanner.refresh(events.drain())
        cpu += time.thread_time() - c
        n += 1
        print("ok", flush=True)
    events.close()
    scanner.close()
    return {"churn_pods": n, "churn_cpu_ms_per_pod": round(cpu * 1e3 / max(1, n), 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pods", type=int, default=250)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--churn", type=int, default=50, help="pods replaced one at a time, each looked up")
    p.add_argument("--source", action="append", default=[], help="also measure this checkout")
    p.add_argument("--prefix", default=f"nvb{os.getpid() % 10000}")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        spec = json.loads(a.child)
        print(json.dumps(child(spec["node"], spec["pods"], a.rounds)), flush=True)
        print(json.dumps(child_churn(spec["node"])), flush=True)
        return 0
    sys.path.insert(0, str(ROOT))
    if os.geteuid() != 0:
        print("bench_nodeview: run as root", file=sys.stderr)
        return 2

    from tracer.lab.bulk import MAX_PODS, Pods
    from tracer.lab.node import SimNode
    from tracer.lab.ownership import NETNS_DIR
    if not 1 <= a.pods <= MAX_PODS:
        print(f"bench_nodeview: 1 to {MAX_PODS} pods", file=sys.stderr)
        return 2

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    node = SimNode.create(prefix=a.prefix, with_api=False)
    try:
        bulk = Pods(node)
        t = time.monotonic()
        while len(bulk.pods) < a.pods:
            bulk.add()
        print(f"# {a.pods} bulk pods ready ({time.monotonic() - t:.1f} s)", file=sys.stderr, flush=True)
        for source in [str(ROOT), *a.source]:
            spec = json.dumps({"node": str(NETNS_DIR / node.node1),      # the pods as the last churn left them
                               "pods": [str(NETNS_DIR / b.sandbox.netns) for b in bulk.pods.values()]})
            env = dict(os.environ, PYTHONPATH=source)
            proc = subprocess.Popen([sys.executable, __file__, "--rounds", str(a.rounds), "--child", spec],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=source)
            assert proc.stdin is not None and proc.stdout is not None
            try:
                row = json.loads(proc.stdout.readline() or "{}")
                if proc.stdout.readline().strip() == "ready":
                    pods = list(bulk.pods.values())
                    for i in range(a.churn):
                        pods[i % len(pods)] = bulk.replace(pods[i % len(pods)])
                        proc.stdin.write("go\n")
                        proc.stdin.flush()
                        proc.stdout.readline()
                    proc.stdin.write("end\n")
                    proc.stdin.flush()
                    row.update(json.loads(proc.stdout.readline() or "{}"))
            finally:
                proc.stdin.close()
                if proc.wait(timeout=60) != 0:
                    print(f"# {source}: failed", file=sys.stderr)
            row["source"] = source
            print(json.dumps(row), flush=True)
    finally:
        node.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
