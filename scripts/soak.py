"""Soak benchmark: a long capture under a storm of ever-new flows plus pod churn.

Run as root: scripts/soak [--minutes 10] [--markdown]

On a simulated node (tracer.lab) it runs `netdrop capture -A` for the whole
window while
  - a sender inside pod db's namespace sends UDP datagrams to a closed port of
    the pod's own address, each from a new source port (a raw socket writes the
    headers, so every datagram is a new flow and a NO_SOCKET drop that the
    kernel also counts in the namespace's UdpNoPorts), and
  - pod web is deleted and re-created every few seconds (new namespace, veth,
    address and uid; the API sees DELETED and ADDED), as a crash-looping pod is.
Every 10 s it samples netdrop's resident memory and CPU. At the end it stops
the capture with SIGINT and compares summary.json with UdpNoPorts.

With --serve the agent (`netdrop serve`) runs instead of the capture, scraped
every 10 s as Prometheus would; its netdrop_drops_total for the pod's
NO_SOCKET drops is compared with UdpNoPorts.

Not a test: it takes minutes and prints figures for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracer.lab.node import SimNode  # noqa: E402
from tracer.lab.shell import in_netns, run  # noqa: E402

NETDROP = [str(Path(sys.executable).with_name("netdrop"))]
SAMPLE_SECONDS = 10.0
CHURN_SECONDS = 5.0
CLOSED_PORT = 9


def storm(dst: str, seconds: float, count: int) -> int:
    """UDP to dst:9, each datagram from the next source port (1024..65535, round
    and round): a new flow per datagram for every flow table keyed by ports.
    Bounded by count and time. Runs inside the pod's namespace."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)   # IP_HDRINCL implied
    daddr = socket.inet_aton(dst)
    # The kernel fills in the IPv4 total length, id and checksum of a raw packet
    # (raw_send_hdrinc); a UDP checksum of 0 means "none" in IPv4.
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, socket.IPPROTO_UDP, 0, daddr, daddr)
    deadline = time.monotonic() + seconds
    sent = 0
    if not count:
        time.sleep(seconds)
    while sent < count:
        if sent % 4096 == 0 and time.monotonic() > deadline:
            break
        sport = 1024 + sent % 64512
        s.sendto(ip + struct.pack("!HHHH", sport, CLOSED_PORT, 8 + 4, 0) + b"soak", (dst, 0))
        sent += 1
    s.close()
    return sent


def status(pid: int) -> tuple[float, float]:
    """(resident MiB, CPU seconds) of a process."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss / 1024, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_no_ports(ns: str) -> int:
    out = run("nstat", "-asz", "UdpNoPorts", ns=ns)
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("UdpNoPorts")))


def churn(node: SimNode, stop: threading.Event, done: list[int]) -> None:
    hosts = (10, 20)
    while not stop.wait(CHURN_SECONDS):
        node.recreate_pod("web", hosts[(len(done) + 1) % 2])
        done.append(1)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def served_no_socket(text: str, pod: str) -> int:
    """netdrop_drops_total of the pod's NO_SOCKET series, from the exposition text."""
    total = 0
    for line in text.splitlines():
        if line.startswith("netdrop_drops_total{") and f'pod="{pod}"' in line and 'reason="NO_SOCKET"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def soak(minutes: float, storm_on: bool = True, churn_on: bool = True, serve: bool = False) -> dict:
    seconds = minutes * 60
    node = SimNode.create(f"ndsoak{os.getpid() % 10000}")
    outdir = Path(tempfile.mkdtemp(prefix="netdrop-soak-")) / "capture"
    db = node.pods["db"]
    port = 19500 + os.getpid() % 400
    try:
        if serve:
            cmd = ["serve", "--listen", f"127.0.0.1:{port}"]
        else:
            cmd = ["capture", "--duration", f"{seconds + 60:.0f}", "--output", str(outdir), "-A"]
        proc = subprocess.Popen([*NETDROP, *cmd, "--kubeconfig", str(node.kubeconfig), "--node-netns", node.node1],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if line.startswith("netdrop: tracing") or (serve and "serving" in line):
                break
        else:
            raise RuntimeError(f"netdrop {cmd[0]} did not start")
        threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()   # keep the pipe drained
        k0 = udp_no_ports(db.netns)
        count = 1_000_000_000 if storm_on else 0     # without the storm the sender only waits out the time
        sender = subprocess.Popen([*in_netns(db.netns), sys.executable, __file__, "--storm", db.ipv4,
                                   "--seconds", str(seconds), "--count", str(count)], stdout=subprocess.PIPE, text=True)
        stop, churned = threading.Event(), []
        churner = threading.Thread(target=churn, args=(node, stop, churned), daemon=True)
        if churn_on:
            churner.start()
        samples = []
        t0 = time.monotonic()
        rss0, cpu_prev = status(proc.pid)
        t_prev = t0
        while sender.poll() is None:
            time.sleep(SAMPLE_SECONDS - (time.monotonic() - t0) % SAMPLE_SECONDS)
            if sender.poll() is not None:
                break
            if serve:
                scrape(port)        # as Prometheus does: what a scrape keeps is part of the memory
            rss, cpu = status(proc.pid)
            now = time.monotonic()
            samples.append({"t": round(now - t0), "rss_mib": round(rss, 1),
                            "cpu_pct": round(100 * (cpu - cpu_prev) / (now - t_prev), 1)})
            print(f"soak: {samples[-1]}", file=sys.stderr, flush=True)
            cpu_prev, t_prev = cpu, now
        sent = int(sender.communicate()[0].split()[-1])
        stop.set()
        if churn_on:
            churner.join()
        time.sleep(1.0)
        kernel = udp_no_ports(db.netns) - k0
        served = served_no_socket(scrape(port), db.name) if serve else 0
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        summary = None if serve else json.loads((outdir / "summary.json").read_text())
    finally:
        node.destroy()
        shutil.rmtree(outdir.parent, ignore_errors=True)     # events.jsonl grows by gigabytes
    if summary is None:     # the agent: its counter since it started (the storm began after)
        counted = served
        summary = {"totals": {k: 0 for k in ("events_delivered", "events_lost", "events_sampled_out",
                                             "events_written")}}
    else:
        counted = sum(g["count"] for g in summary["groups"]
                      if g["reason"] == "NO_SOCKET" and (g["pod"] or {}).get("name") == db.name)
    at_minute = next((s["rss_mib"] for s in samples if s["t"] >= 60), samples[0]["rss_mib"] if samples else 0)
    return {"mode": "serve" if serve else "capture", "minutes": minutes, "sent": sent,
            "kernel_udp_no_ports": kernel, "netdrop_counted": counted,
            "exact": counted == kernel, "rate_per_s": round(sent / seconds), "pods_recreated": len(churned),
            "events_delivered": summary["totals"]["events_delivered"],
            "events_lost": summary["totals"]["events_lost"],
            "events_sampled_out": summary["totals"]["events_sampled_out"],
            "events_written": summary["totals"]["events_written"],
            "top_flows_exact": summary.get("top_flows_exact"),
            "rss_start_mib": round(rss0, 1), "rss_at_1min_mib": at_minute,
            "rss_end_mib": samples[-1]["rss_mib"] if samples else None,
            "rss_max_mib": max((s["rss_mib"] for s in samples), default=None),
            "cpu_pct_mean": round(sum(s["cpu_pct"] for s in samples) / max(len(samples), 1), 1),
            "samples": samples}


def markdown(r: dict) -> str:
    growth = r["rss_end_mib"] / r["rss_at_1min_mib"] if r["rss_at_1min_mib"] else float("nan")
    return "\n".join([
        f"| soak of {r['mode']} ({r['minutes']:g} min) | value |", "|---|---|",
        f"| datagrams sent (each a new flow) | {r['sent']:,} ({r['rate_per_s']:,}/s) |",
        f"| UdpNoPorts in the pod (kernel) | {r['kernel_udp_no_ports']:,} |",
        f"| counted by netdrop for the pod | {r['netdrop_counted']:,} ({'exact' if r['exact'] else 'NOT exact'}) |",
        f"| events delivered / lost / sampled out | {r['events_delivered']:,} / {r['events_lost']:,} / "
        f"{r['events_sampled_out']:,} |",
        f"| pods re-created | {r['pods_recreated']} |",
        f"| resident memory: start, 1 min, end, max | {r['rss_start_mib']}, {r['rss_at_1min_mib']}, "
        f"{r['rss_end_mib']}, {r['rss_max_mib']} MiB (end / 1 min = {growth:.2f}) |",
        f"| CPU of netdrop (mean over 10 s samples) | {r['cpu_pct_mean']} % of a core |",
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--no-storm", action="store_true", help="pod churn only (to tell where memory goes)")
    p.add_argument("--no-churn", action="store_true", help="the storm only")
    p.add_argument("--serve", action="store_true", help="the agent (netdrop serve, scraped every 10 s) "
                                                        "instead of a capture")
    p.add_argument("--storm", metavar="DST", help=argparse.SUPPRESS)   # the sender, inside the pod
    p.add_argument("--seconds", type=float, default=600.0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=1_000_000_000, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.storm:
        print(storm(a.storm, a.seconds, count=a.count))
        return 0
    if os.geteuid() != 0:
        print("scripts/soak: run as root", file=sys.stderr)
        return 1
    # SIGTERM (timeout(1), an operator) unwinds like Ctrl-C: the simulated node is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    r = soak(a.minutes, storm_on=not a.no_storm, churn_on=not a.no_churn, serve=a.serve)
    print(markdown(r) if a.markdown else json.dumps(r, indent=2))
    return 0 if r["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
