"""Drop-storm benchmark: netdrop against the kernel's own counter and a bare bpftrace probe.

Run as root: scripts/bench [--drops N] [--generators K] [--markdown]

Inside a namespace of its own (loopback only) it sends UDP to a closed port as
fast as K processes can, so every packet is one NO_SOCKET drop that the
kernel also counts in UdpNoPorts. Meanwhile
  - `netdrop watch --json --netns <ns>` runs the whole pipeline (BPF program,
    ring buffer, decode, classify, JSON to /dev/null), and
  - bpftrace runs the barest probe: `tracepoint:skb:kfree_skb { @ = count(); }`.
The kernel measures each BPF program's run time (BPF_ENABLE_STATS, held by
an fd, not a sysctl); wait4() gives each process's CPU time.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
NETDROP = [str(Path(PY).with_name("netdrop"))]

NR_BPF = 321               # x86_64 __NR_bpf
BPF_ENABLE_STATS = 32      # enum bpf_cmd
BPF_STATS_RUN_TIME = 0


def enable_bpf_stats() -> int:
    """Kernel-side run time accounting for every BPF program while the fd is open."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 32)(BPF_STATS_RUN_TIME)
    fd = libc.syscall(NR_BPF, BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_ENABLE_STATS failed")
    return fd


def progs() -> dict[int, dict]:
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True)
    return {p["id"]: p for p in json.loads(out.stdout)}


def prog_time(ids) -> tuple[int, int]:
    now = progs()
    return (sum(now[i].get("run_time_ns", 0) for i in ids if i in now),
            sum(now[i].get("run_cnt", 0) for i in ids if i in now))


def nstat(ns: str, counter: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-asz", counter],
                         capture_output=True, text=True, check=True).stdout
    return int(next(l.split()[1] for l in out.splitlines() if l.startswith(counter)))


def proc_cpu(pid: int) -> float:
    """utime + stime of a running process, in seconds (/proc/PID/stat fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_line(proc, pattern: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    for line in proc.stderr if "netdrop" in proc.args[0] else proc.stdout:
        if pattern in line:
            return line
        if time.monotonic() > deadline:
            break
    raise RuntimeError(f"{proc.args[0]} did not print {pattern!r}")


def stop(proc) -> tuple[str, float]:
    """SIGINT, then the process's own CPU time (user + system) from wait4."""
    proc.send_signal(signal.SIGINT)
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    rest = (proc.stderr.read() if proc.stderr else "") + (proc.stdout.read() if proc.stdout else "")
    return rest, ru.ru_utime + ru.ru_stime


def run(drops: int, generators: int, seconds: float, max_event_rate: int | None = None,
        pods: bool = False) -> dict:
    """One storm. pods=False: in a namespace of its own, `watch --netns` it.
    pods=True: inside pod db of a simulated node with its API, `watch -A`, so
    every drop is looked up in the pod maps and attributed."""
    if pods:
        from tracer import lab
        node = lab.SimNode.create(f"ndbench{os.getpid()}")
        ns = node.pods["db"].netns
        watch_args = ["-A", "--kubeconfig", str(node.kubeconfig), "--node-netns", node.node1]
        cleanup = node.destroy
    else:
        ns = f"ndbench{os.getpid()}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        watch_args = ["--netns", ns]
        cleanup = lambda: subprocess.run(["ip", "netns", "del", ns], check=False)  # noqa: E731
    stats_fd = enable_bpf_stats()
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        before = set(progs())
        bare = subprocess.Popen(["bpftrace", "-e", "tracepoint:skb:kfree_skb { @ = count(); }"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        wait_line(bare, "Attaching")
        bare_ids = set(progs()) - before
        before = set(progs())
        rate = [] if max_event_rate is None else ["--max-event-rate", str(max_event_rate)]
        nd = subprocess.Popen(NETDROP + ["watch", "--json", *watch_args, *rate], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        wait_line(nd, "netdrop: tracing")
        nd_ids = set(progs()) - before
        kfree_ids = {i for i in nd_ids if "kfree" in progs()[i].get("name", "")} or nd_ids

        k0 = nstat(ns, "UdpNoPorts")
        b0, n0 = prog_time(bare_ids), prog_time(kfree_ids)
        c0 = proc_cpu(nd.pid)
        per = drops // generators
        t0 = time.monotonic()
        gens = [subprocess.Popen(["ip", "netns", "exec", ns, PY, "-m", "tracer.traffic", "udp", "--dst",
                                  "127.0.0.1", "--port", "9", "--count", str(per), "--seconds", str(seconds)],
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(generators)]
        sent = sum(int(g.communicate()[0].split()[-1]) for g in gens)
        gen_time = time.monotonic() - t0
        time.sleep(1.0)
        b1, n1 = prog_time(bare_ids), prog_time(kfree_ids)
        storm_cpu = proc_cpu(nd.pid) - c0
        kernel_drops = nstat(ns, "UdpNoPorts") - k0

        nd_out, nd_cpu = stop(nd)
        bare_out, bare_cpu = stop(bare)
    finally:
        cleanup()
        os.close(stats_fd)
    m = re.search(r"([\d,]+) drops counted, ([\d,]+) events delivered, ([\d,]+) events lost, "
                  r"([\d,]+) sampled out", nd_out)
    if not m:
        raise RuntimeError(f"netdrop summary missing: {nd_out}")
    counted, delivered, lost, sampled = (int(x.replace(",", "")) for x in m.groups())
    # The storm's own group (other drops may share the namespace: IPv6 router solicitations ...).
    storm = re.search(r"counted ([\d,]+) no-socket NO_SOCKET at __udp4_lib_rcv", nd_out)
    storm_count = int(storm.group(1).replace(",", "")) if storm else 0
    bare_count = int(re.search(r"@: (\d+)", bare_out).group(1))
    return {
        "sent": sent, "seconds": gen_time, "kernel_drops": kernel_drops,
        "counted": counted, "storm_counted": storm_count, "delivered": delivered, "lost": lost, "sampled_out": sampled,
        "max_event_rate": "default (10000)" if max_event_rate is None else max_event_rate,
        "netdrop_cpu_s": nd_cpu, "netdrop_storm_cpu_s": storm_cpu, "bare_cpu_s": bare_cpu, "bare_count": bare_count,
        "netdrop_bpf_ns": (n1[0] - n0[0]) / max(1, n1[1] - n0[1]), "netdrop_bpf_runs": n1[1] - n0[1],
        "bare_bpf_ns": (b1[0] - b0[0]) / max(1, b1[1] - b0[1]), "bare_bpf_runs": b1[1] - b0[1],
        "generators": generators, "pods": pods,
    }


def report(r: dict, markdown: bool) -> str:
    rate = r["sent"] / r["seconds"]
    rows = [
        ("attribution", "pods looked up and named (watch -A)" if r["pods"] else "off (watch --netns)"),
        ("drops generated", f"{r['sent']:,} in {r['seconds']:.2f} s = {rate:,.0f}/s ({r['generators']} sender(s))"),
        ("kernel counter (UdpNoPorts)", f"{r['kernel_drops']:,}"),
        ("netdrop counted, NO_SOCKET at __udp4_lib_rcv", f"{r['storm_counted']:,} "
         f"({'exact' if r['storm_counted'] == r['kernel_drops'] else 'MISMATCH'}; all drops: {r['counted']:,})"),
        ("events delivered", f"{r['delivered']:,} = {r['delivered'] / r['seconds']:,.0f}/s"),
        ("events lost: ring buffer full (counted in kernel)", f"{r['lost']:,}"),
        ("events sampled out: over --max-event-rate " + str(r["max_event_rate"]), f"{r['sampled_out']:,}"),
        ("netdrop BPF program per drop", f"{r['netdrop_bpf_ns']:.0f} ns ({r['netdrop_bpf_runs']:,} runs)"),
        ("bare bpftrace probe per drop", f"{r['bare_bpf_ns']:.0f} ns ({r['bare_bpf_runs']:,} runs)"),
        ("ratio netdrop / bare (in kernel)", f"{r['netdrop_bpf_ns'] / max(r['bare_bpf_ns'], 1e-9):.2f}"),
        ("netdrop process CPU, whole run", f"{r['netdrop_cpu_s']:.2f} s (includes start-up: compiling the BPF program)"),
        ("netdrop process CPU during the storm", f"{r['netdrop_storm_cpu_s']:.2f} s = "
         f"{r['netdrop_storm_cpu_s'] * 1e6 / max(1, r['delivered']):.1f} µs per delivered event"),
        ("bpftrace process CPU", f"{r['bare_cpu_s']:.2f} s"),
    ]
    if markdown:
        return "| measure | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    p.add_argument("--drops", type=int, default=2_000_000)
    p.add_argument("--generators", type=int, default=1)
    p.add_argument("--seconds", type=float, default=30.0, help="upper bound for the storm")
    p.add_argument("--max-event-rate", type=int, default=None, help="passed to netdrop watch (0: no limit)")
    p.add_argument("--pods", action="store_true", help="storm inside a simulated pod, watched with -A")
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("scripts/bench: run as root", file=sys.stderr)
        return 2
    r = run(a.drops, a.generators, a.seconds, a.max_event_rate, a.pods)
    print(report(r, a.markdown))
    return 0 if r["storm_counted"] == r["kernel_drops"] else 1


if __name__ == "__main__":
    sys.exit(main())
