"""Drop-storm benchmark: netdrop against the kernel's own counter and a bare bpftrace probe.

Run as root: scripts/bench [--drops N] [--generators K] [--markdown]

Inside a namespace of its own (loopback only) it sends UDP to a closed port as
fast as K processes can, so every packet is one NO_SOCKET drop that the
kernel also counts in UdpNoPorts, and one ICMP port unreachable it sends back.
Meanwhile
  - `netdrop watch --json --netns <ns>` runs the whole pipeline (BPF programs,
    ring buffer, decode, classify, JSON to /dev/null), and
  - bpftrace runs the barest probe: `tracepoint:skb:kfree_skb { @ = count(); }`.
The kernel measures each BPF program's run time (BPF_ENABLE_STATS, held by
an fd, not a sysctl). Every program a process holds (its /proc/PID/fdinfo
`prog_id:` lines) is counted: for netdrop both the skb:kfree_skb and the
icmp:icmp_send programs run for each of these drops. wait4() gives each
process's CPU time.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

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
    fd: int = libc.syscall(NR_BPF, BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_ENABLE_STATS failed")
    return fd


def bpftool(*args: str) -> Any:
    out = subprocess.run(["bpftool", *args, "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout or "[]")


def held_progs(pid: int) -> set[int]:
    """Ids of the BPF programs a process holds: the `prog_id:` line of each BPF
    program fd's /proc/PID/fdinfo entry (kernel/bpf/syscall.c, bpf_prog_show_fdinfo),
    and the programs of its perf event fds (bpftool perf: bpftrace closes its
    program fds once they are attached)."""
    ids = {p["prog_id"] for p in bpftool("perf", "show") if p.get("pid") == pid and "prog_id" in p}
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = info.read_text()
        except OSError:      # the fd was closed meanwhile
            continue
        m = re.search(r"^prog_id:\s*(\d+)", text, re.M)
        if m:
            ids.add(int(m.group(1)))
    return ids


def prog_labels(pid: int, ids: set[int]) -> dict[int, str]:
    """What each program is attached to (bpftool perf: tracepoints, kprobes), else its name."""
    labels = {p["prog_id"]: f"{p.get('fd_type', '?')} {p.get('tracepoint') or p.get('func') or ''}".strip()
              for p in bpftool("perf", "show") if p.get("pid") == pid and p.get("prog_id") in ids}
    names = {p["id"]: p.get("name", "?") for p in bpftool("prog", "show")}
    return {i: labels.get(i, names.get(i, "?")) for i in ids}


@dataclass(frozen=True)
class ProgRun:
    """One program's kernel-measured run time (ns) and run count."""
    time_ns: int
    runs: int


def prog_runs(ids: set[int]) -> dict[int, ProgRun]:
    now = {p["id"]: p for p in bpftool("prog", "show")}
    return {i: ProgRun(now[i].get("run_time_ns", 0), now[i].get("run_cnt", 0)) for i in ids if i in now}


def delta(before: dict[int, ProgRun], after: dict[int, ProgRun]) -> dict[int, ProgRun]:
    return {i: ProgRun(a.time_ns - before[i].time_ns, a.runs - before[i].runs)
            for i, a in after.items() if i in before}


def nstat(ns: str, counter: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-asz", counter],
                         capture_output=True, text=True, check=True).stdout
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith(counter)))


def proc_cpu(pid: int) -> float:
    """utime + stime of a running process, in seconds (/proc/PID/stat fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_line(stream: IO[str] | None, name: str, pattern: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    for line in stream or ():
        if pattern in line:
            return line
        if time.monotonic() > deadline:
            break
    raise RuntimeError(f"{name} did not print {pattern!r}")


def stop(proc: subprocess.Popen[str]) -> tuple[str, float]:
    """SIGINT, then the process's own CPU time (user + system) from wait4."""
    proc.send_signal(signal.SIGINT)
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    rest = (proc.stderr.read() if proc.stderr else "") + (proc.stdout.read() if proc.stdout else "")
    return rest, ru.ru_utime + ru.ru_stime


@dataclass(frozen=True)
class Prog:
    """A program netdrop attached, over the storm."""
    label: str
    time_ns: int
    runs: int


@dataclass(frozen=True)
class Result:
    sent: int
    seconds: float
    kernel_drops: int
    counted: int
    storm_counted: int
    delivered: int
    lost: int
    sampled_out: int
    max_event_rate: str
    netdrop_cpu_s: float
    netdrop_storm_cpu_s: float
    bare_cpu_s: float
    bare_count: int
    netdrop_progs: tuple[Prog, ...]
    bare: Prog
    generators: int
    pods: bool

    @property
    def drops(self) -> int:
        return max(1, self.kernel_drops)

    @property
    def netdrop_ns_per_drop(self) -> float:
        """All of netdrop's programs, per drop of the storm."""
        return sum(p.time_ns for p in self.netdrop_progs) / self.drops

    @property
    def bare_ns_per_drop(self) -> float:
        return self.bare.time_ns / self.drops


def run(drops: int, generators: int, seconds: float, max_event_rate: int | None = None,
        pods: bool = False) -> Result:
    """One storm. pods=False: in a namespace of its own, `watch --netns` it.
    pods=True: inside pod db of a simulated node with its API, `watch -A`, so
    every drop is looked up in the pod maps and attributed."""
    cleanup: Callable[[], object]
    if pods:
        from tracer.lab import node as lab
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
    procs: list[subprocess.Popen[str]] = []
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        bare = subprocess.Popen(["bpftrace", "-e", "tracepoint:skb:kfree_skb { @ = count(); }"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(bare)
        wait_line(bare.stdout, "bpftrace", "Attaching")
        bare_ids = held_progs(bare.pid)
        rate = [] if max_event_rate is None else ["--max-event-rate", str(max_event_rate)]
        nd = subprocess.Popen(NETDROP + ["watch", "--json", *watch_args, *rate], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        procs.append(nd)
        wait_line(nd.stderr, "netdrop", "netdrop: tracing")
        nd_ids = held_progs(nd.pid)
        labels = prog_labels(nd.pid, nd_ids)

        k0 = nstat(ns, "UdpNoPorts")
        b0, n0 = prog_runs(bare_ids), prog_runs(nd_ids)
        c0 = proc_cpu(nd.pid)
        per = drops // generators
        t0 = time.monotonic()
        gens = [subprocess.Popen(["ip", "netns", "exec", ns, PY, "-m", "tracer.lab.traffic", "udp", "--dst",
                                  "127.0.0.1", "--port", "9", "--count", str(per), "--seconds", str(seconds)],
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(generators)]
        sent = sum(int(g.communicate()[0].split()[-1]) for g in gens)
        gen_time = time.monotonic() - t0
        time.sleep(1.0)
        b1, n1 = prog_runs(bare_ids), prog_runs(nd_ids)
        storm_cpu = proc_cpu(nd.pid) - c0
        kernel_drops = nstat(ns, "UdpNoPorts") - k0

        nd_out, nd_cpu = stop(nd)
        bare_out, bare_cpu = stop(bare)
    finally:
        for p in procs:
            if p.returncode is None and p.poll() is None:
                p.kill()
                p.wait()
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
    bare_m = re.search(r"@: (\d+)", bare_out)
    nd_delta, bare_delta = delta(n0, n1), delta(b0, b1)
    return Result(
        sent=sent, seconds=gen_time, kernel_drops=kernel_drops,
        counted=counted, storm_counted=storm_count, delivered=delivered, lost=lost, sampled_out=sampled,
        max_event_rate="default (10000)" if max_event_rate is None else str(max_event_rate),
        netdrop_cpu_s=nd_cpu, netdrop_storm_cpu_s=storm_cpu, bare_cpu_s=bare_cpu,
        bare_count=int(bare_m.group(1)) if bare_m else 0,
        netdrop_progs=tuple(Prog(labels[i], d.time_ns, d.runs) for i, d in sorted(nd_delta.items())),
        bare=Prog("bpftrace kfree_skb", sum(d.time_ns for d in bare_delta.values()),
                  sum(d.runs for d in bare_delta.values())),
        generators=generators, pods=pods,
    )


def _prog_row(p: Prog, drops: int) -> str:
    return f"{p.time_ns / drops:.0f} ns ({p.time_ns / max(1, p.runs):.0f} ns per run, {p.runs:,} runs)"


def report(r: Result, markdown: bool) -> str:
    rate = r.sent / r.seconds
    rows = [
        ("attribution", "pods looked up and named (watch -A)" if r.pods else "off (watch --netns)"),
        ("drops generated", f"{r.sent:,} in {r.seconds:.2f} s = {rate:,.0f}/s ({r.generators} sender(s))"),
        ("kernel counter (UdpNoPorts)", f"{r.kernel_drops:,}"),
        ("netdrop counted, NO_SOCKET at __udp4_lib_rcv", f"{r.storm_counted:,} "
         f"({'exact' if r.storm_counted == r.kernel_drops else 'MISMATCH'}; all drops: {r.counted:,})"),
        ("events delivered", f"{r.delivered:,} = {r.delivered / r.seconds:,.0f}/s"),
        ("events lost: ring buffer full (counted in kernel)", f"{r.lost:,}"),
        ("events sampled out: over --max-event-rate " + r.max_event_rate, f"{r.sampled_out:,}"),
    ]
    rows += [(f"netdrop BPF program {p.label}, per drop", _prog_row(p, r.drops)) for p in r.netdrop_progs]
    rows += [
        ("netdrop BPF programs together, per drop", f"{r.netdrop_ns_per_drop:.0f} ns"),
        ("bare bpftrace probe per drop", _prog_row(r.bare, r.drops)),
        ("ratio netdrop (all programs) / bare (in kernel)",
         f"{r.netdrop_ns_per_drop / max(r.bare_ns_per_drop, 1e-9):.2f}"),
        ("netdrop process CPU, whole run", f"{r.netdrop_cpu_s:.2f} s (includes start-up: compiling the BPF program)"),
        ("netdrop process CPU during the storm", f"{r.netdrop_storm_cpu_s:.2f} s = "
         f"{r.netdrop_storm_cpu_s * 1e6 / max(1, r.delivered):.1f} µs per delivered event"),
        ("bpftrace process CPU", f"{r.bare_cpu_s:.2f} s"),
    ]
    # Drops elsewhere on the node also run the probes: then the per-drop figures include them.
    if r.bare.runs > r.kernel_drops * 1.01:
        rows.append(("note", f"the probes also ran for {r.bare.runs - r.kernel_drops:,} drops outside the storm"))
    if markdown:
        return "| measure | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench", description=(__doc__ or "").splitlines()[0])
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
    return 0 if r.storm_counted == r.kernel_drops else 1


if __name__ == "__main__":
    sys.exit(main())
