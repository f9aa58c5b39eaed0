"""Drop-storm benchmark: netdrop against the kernel's own counter and a bare bpftrace probe.

Run as root: scripts/bench [--drops N] [--generators K] [--markdown]
             scripts/bench --stop ROUNDS    # how long a signal takes to end each command in a storm

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


def settled_progs(pid: int, timeout: float = 120) -> set[int]:
    """held_progs once the same for a second: bpftrace says "Attaching" before it
    attaches (slow under emulation, in the kernel matrix's guests)."""
    deadline = time.monotonic() + timeout
    ids = held_progs(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        again = held_progs(pid)
        if again and again == ids:
            return ids
        ids = again
    return ids


def prog_labels(pid: int, ids: set[int]) -> dict[int, str]:
    """What each program is attached to (bpftool perf: tracepoints, kprobes), else its name.
    A BTF-typed tracepoint shows in bpftool perf as a raw_tracepoint of a program of type tracing."""
    progs = {p["id"]: p for p in bpftool("prog", "show")}

    def form(p: dict[str, Any]) -> str:
        kind = p.get("fd_type", "?")
        return "tp_btf" if kind == "raw_tracepoint" and progs.get(p["prog_id"], {}).get("type") == "tracing" else kind

    labels = {p["prog_id"]: f"{form(p)} {p.get('tracepoint') or p.get('func') or ''}".strip()
              for p in bpftool("perf", "show") if p.get("pid") == pid and p.get("prog_id") in ids}
    names = {i: p.get("name", "?") for i, p in progs.items()}
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


def wait_line(stream: IO[str] | None, name: str, pattern: str, timeout: float = 300) -> str:
    """Until the process prints pattern (5 minutes: under QEMU's emulation, in the kernel
    matrix's guests, compiling takes a minute)."""
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
    netdrop_progs: tuple[Prog, ...]
    bare: Prog
    generators: int
    pods: bool
    json_sink: bool = True
    stacks: bool | None = None

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
        pods: bool = False, json_sink: bool = True, classic: bool = False, conntrack: bool = False,
        stacks: bool | None = None) -> Result:
    """One storm. pods=False: in a namespace of its own, `watch --netns` it.
    pods=True: inside pod db of a simulated node with its API, `watch -A`, so
    every drop is looked up in the pod maps and attributed. json_sink=False:
    the console view (to /dev/null, redrawn on its tick) instead of a JSON
    line per event: the pipeline's own cost per event, without a sink's.
    classic=True: netdrop attaches the classic tracepoints, not tp_btf.
    stacks: --stacks (True) or --no-stacks (False) for watch; None: its default.
    conntrack=True: the namespace tracks connections and each drop is a new
    flow (a port of its own), so the conntrack hooks run for every drop: an
    allocation and a confirmation each (where the kernel lets them attach)."""
    cleanup: Callable[[], object]
    if pods:
        from tracer.lab.node import SimNode
        node = SimNode.create(f"ndbench{os.getpid()}")
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
        if conntrack:
            subprocess.run(["ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-m", "conntrack",
                            "--ctstate", "INVALID", "-j", "DROP"], check=True)
        bare = subprocess.Popen(["bpftrace", "-e", "tracepoint:skb:kfree_skb { @ = count(); }"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(bare)
        wait_line(bare.stdout, "bpftrace", "Attaching")
        bare_ids = settled_progs(bare.pid)
        rate = [] if max_event_rate is None else ["--max-event-rate", str(max_event_rate)]
        rate += ["--classic-tracepoints"] if classic else []
        rate += [] if stacks is None else ["--stacks" if stacks else "--no-stacks"]
        nd = subprocess.Popen(NETDROP + ["watch", *(["--json"] if json_sink else []), *watch_args, *rate],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        procs.append(nd)
        wait_line(nd.stderr, "netdrop", "netdrop: tracing")
        nd_ids = held_progs(nd.pid)
        labels = prog_labels(nd.pid, nd_ids)

        k0 = nstat(ns, "UdpNoPorts")
        b0, n0 = prog_runs(bare_ids), prog_runs(nd_ids)
        c0 = proc_cpu(nd.pid)
        per = drops // generators
        span = 64000 // generators      # --conntrack: each sender's own ports, a new flow per drop
        t0 = time.monotonic()
        gens = [subprocess.Popen(["ip", "netns", "exec", ns, PY, "-m", "tracer.lab.traffic", "udp", "--dst",
                                  "127.0.0.1", "--port", str(1024 + i * span if conntrack else 9),
                                  "--ports", str(min(per, span) if conntrack else 1),
                                  "--count", str(per), "--seconds", str(seconds)],
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT) for i in range(generators)]
        sent = sum(int(g.communicate()[0].split()[-1]) for g in gens)
        gen_time = time.monotonic() - t0
        time.sleep(1.0)
        b1, n1 = prog_runs(bare_ids), prog_runs(nd_ids)
        storm_cpu = proc_cpu(nd.pid) - c0
        kernel_drops = nstat(ns, "UdpNoPorts") - k0

        nd_out, nd_cpu = stop(nd)
        _, bare_cpu = stop(bare)
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
    storm = re.search(r"counted ([\d,]+) no-socket (?:NO_SOCKET|-) at __udp4_lib_rcv", nd_out)   # -: no reasons (5.10)
    # Without --json netdrop prints no group lines: then every drop it counted stands for the storm's.
    storm_count = int(storm.group(1).replace(",", "")) if storm else 0 if json_sink else counted
    nd_delta, bare_delta = delta(n0, n1), delta(b0, b1)
    return Result(
        sent=sent, seconds=gen_time, kernel_drops=kernel_drops,
        counted=counted, storm_counted=storm_count, delivered=delivered, lost=lost, sampled_out=sampled,
        max_event_rate="default (10000)" if max_event_rate is None else str(max_event_rate),
        netdrop_cpu_s=nd_cpu, netdrop_storm_cpu_s=storm_cpu, bare_cpu_s=bare_cpu,
        netdrop_progs=tuple(Prog(labels[i], d.time_ns, d.runs) for i, d in sorted(nd_delta.items())),
        bare=Prog("bpftrace kfree_skb", sum(d.time_ns for d in bare_delta.values()),
                  sum(d.runs for d in bare_delta.values())),
        generators=generators, pods=pods, json_sink=json_sink, stacks=stacks,
    )


def _prog_row(p: Prog, drops: int) -> str:
    return f"{p.time_ns / drops:.0f} ns ({p.time_ns / max(1, p.runs):.0f} ns per run, {p.runs:,} runs)"


def report(r: Result, markdown: bool) -> str:
    rate = r.sent / r.seconds
    rows = [
        ("attribution", "pods looked up and named (watch -A)" if r.pods else "off (watch --netns)"),
        ("sink", "JSON lines to /dev/null (--json)" if r.json_sink else "console to /dev/null: no per-event sink"),
        ("kernel stacks", {None: "watch's default", True: "taken per event (--stacks)",
                           False: "off (--no-stacks)"}[r.stacks]),
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


# ------------------------------------------------------------------ replay: the Python side alone

GOLDEN = ROOT / "tests" / "golden"
REPLAY_NETNS = 4026532999     # the replay's pod sandbox
NODE_NETNS = 4026532177       # the namespace of the recorded netfilter drop
SERVICES_NET = "10.96"


def kube_proxy_rules(n: int) -> str:
    """iptables-save -c text of a node with n Services without endpoints, as
    kube-proxy writes them (one REJECT per Service port in filter/KUBE-SERVICES),
    plus its INVALID rule and a FORWARD policy DROP."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":KUBE-FORWARD - [0:0]", ":KUBE-SERVICES - [0:0]",
             "[0:0] -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD",
             "[0:0] -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"]
    for i in range(n):
        lines.append(f"[0:0] -A KUBE-SERVICES -d {service_ip(i)}/32 -p tcp -m tcp --dport {service_port(i)} "
                     f"-m comment --comment \"ns{i % 50}/svc-{i}:http has no endpoints\" "
                     f"-j REJECT --reject-with icmp-port-unreachable")
    return "\n".join([*lines, "COMMIT", ""])


def service_ip(i: int) -> str:
    return f"{SERVICES_NET}.{i // 250}.{i % 250 + 1}"


def service_port(i: int) -> int:
    return 8000 + i % 100


@dataclass(frozen=True)
class ReplayResult:
    scenario: str
    events: int
    seconds: float          # best of the repeats, for all events

    @property
    def us_per_event(self) -> float:
        return self.seconds * 1e6 / self.events

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


def replay_records(scenario: str, events: int) -> list[bytes]:
    """Raw ring buffer records (struct nd_event bytes) recorded from the real
    kernel (tests/golden/events.jsonl), varied as the scenario says, each with
    its own timestamp and the pod tag of pod 1 (in-pod), as a storm delivers them:
      one-flow   UDP to a closed port from one socket (scripts/bench's storm)
      new-ports  the same from a new source port each time
      mixed      the six recorded drops in turn (MTU, netfilter, UDP/UDP6/TCP no socket, no route), new ports
      rules      NETFILTER_DROP of TCP to another Service each time (see kube_proxy_rules)"""
    from tracer.kernel import event as ev
    cases = [json.loads(line) for line in (GOLDEN / "events.jsonl").read_text().splitlines()]
    golden = {c["expected"]["location"]: bytes.fromhex(c["raw_hex"]) for c in cases}
    base = golden["nft_do_chain"] if scenario == "rules" else golden["__udp4_lib_rcv"]
    rotate = list(golden.values())
    out = []
    for i in range(events):
        raw = ev.NdEvent.from_buffer_copy(rotate[i % len(rotate)] if scenario == "mixed" else base)
        raw.ts_ns_raw += i * 1000
        raw.pod_raw = 1 << 2 | ev.ND_DIR_IN_POD
        if scenario != "one-flow":
            raw.sport = 1024 + i % 64000
        if scenario == "rules":
            j = i % 5000
            raw.daddr_raw[0:4] = tuple(int(x) for x in service_ip(j).split("."))
            raw.dport, raw.l4proto_raw = service_port(j), 6
        out.append(bytes(raw))
    return out


def replay_pipeline(scenario: str, rules: int) -> Any:
    """The real pipeline (tracer.watch.Pipeline: decode, classify, attribute,
    groups; no sink), with the golden kernel's reason names and symbols, a pod
    index that names pod 1, and for `rules` an explainer whose view of the
    namespace holds the kube-proxy ruleset."""
    from tracer.explain.explainer import Explainer, Ruleset
    from tracer.explain.iptables import parse_iptables_save
    from tracer.groups import Groups
    from tracer.kernel.decode import Decoder
    from tracer.kernel.facts import Kallsyms, reasons_from_format
    from tracer.pods.attribute import PodIds, PodIndex
    from tracer.node.table import HostVeth, NetnsInfo, NodeSnapshot
    from tracer.watch import Pipeline

    decoder = Decoder(reasons_from_format((GOLDEN / "kfree_skb.format").read_text()),
                      Kallsyms.load(GOLDEN / "kallsyms"), mono_to_wall=0.0)
    snapshot = NodeSnapshot(1, ("192.168.1.5",), {
        REPLAY_NETNS: NetnsInfo(REPLAY_NETNS, ("cni-bench",), (), ("10.244.1.11",), HostVeth(7, "vethbench"))})
    index = PodIndex(snapshot, None, "bench-node", PodIds())
    explainer = None
    if scenario == "rules":
        points = parse_iptables_save(kube_proxy_rules(rules), "iptables-nft", "ipv4").value
        explainer = Explainer({NODE_NETNS: "/bench"}, NODE_NETNS, sample=lambda path, read: (Ruleset(points), None))
        explainer.sample_now()      # its view, as the background thread would have it; no thread runs
    return Pipeline(decoder, Groups(decoder), [], lambda: index, explainer)


def replay(scenario: str, events: int, repeats: int, rules: int = 5000) -> ReplayResult:
    """Records through a fresh pipeline, BATCH_EVENTS at a time as the event
    loop takes them; the best of `repeats` runs (the machine is shared)."""
    from tracer.watch import BATCH_EVENTS
    records = replay_records(scenario, events)
    batches = [records[i:i + BATCH_EVENTS] for i in range(0, len(records), BATCH_EVENTS)]
    best = float("inf")
    for _ in range(repeats):
        pipeline = replay_pipeline(scenario, rules)
        t0 = time.perf_counter()
        for batch in batches:
            pipeline.deliver(batch)
        best = min(best, time.perf_counter() - t0)
        if pipeline.groups.events != events:
            raise RuntimeError(f"replay: {pipeline.groups.events} of {events} events reached the groups")
    return ReplayResult(scenario, events, best)


def new_flow_match(rules: int, flows: int, repeats: int) -> tuple[float, float]:
    """The first drop of a new flow against the ruleset: microseconds of
    likely_points (rule matching, no memo hit) per flow, median and max of the
    best run."""
    from tracer.kernel.event import NdEvent
    pipeline = replay_pipeline("rules", rules)
    view = pipeline.explainer.view(NODE_NETNS)
    drops = [pipeline.decoder.decode(NdEvent.from_buffer_copy(r)) for r in replay_records("rules", flows)]
    best: list[float] = []
    for _ in range(repeats):
        times = []
        for d in drops:
            view._memo.clear()
            t0 = time.perf_counter()
            view.likely_points(d)
            times.append(time.perf_counter() - t0)
        times.sort()
        if not best or times[len(times) // 2] < best[len(best) // 2]:
            best = times
    return best[len(best) // 2] * 1e6, best[-1] * 1e6


def replay_report(events: int, repeats: int, rules: int, rules_events: int) -> str:
    rows = [("scenario", "events", "µs per event", "events/s (one core)")]
    for scenario in ("one-flow", "new-ports", "mixed", "rules"):
        n = events if scenario != "rules" else min(events, rules_events)
        r = replay(scenario, n, repeats, rules)
        rows.append((scenario, f"{r.events:,}", f"{r.us_per_event:.2f}", f"{r.per_second:,.0f}"))
    median, worst = new_flow_match(rules, 200, repeats)
    load = os.getloadavg()
    out = "| " + " | ".join(rows[0]) + " |\n|" + " --- |" * len(rows[0]) + "\n"
    out += "\n".join("| " + " | ".join(r) + " |" for r in rows[1:])
    out += (f"\n\nfirst drop of a new flow against {rules:,} rules (likely_points): median {median:.0f} µs, "
            f"max {worst:.0f} µs\nbest of {repeats}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            f"on {os.cpu_count()} CPUs")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--drops", type=int, default=2_000_000)
    p.add_argument("--generators", type=int, default=1)
    p.add_argument("--seconds", type=float, default=30.0, help="upper bound for the storm")
    p.add_argument("--max-event-rate", type=int, default=None, help="passed to netdrop watch (0: no limit)")
    p.add_argument("--pods", action="store_true", help="storm inside a simulated pod, watched with -A")
    p.add_argument("--classic", action="store_true",
                   help="netdrop attaches the classic tracepoints (--classic-tracepoints), not tp_btf")
    p.add_argument("--conntrack", action="store_true",
                   help="the namespace tracks connections and every drop is a new flow: the conntrack hooks run "
                        "for each (at most 64,000 drops in all: one port per flow)")
    p.add_argument("--stacks", action=argparse.BooleanOptionalAction, default=None,
                   help="netdrop takes each event's kernel stack (--stacks) or not (--no-stacks); "
                        "default: watch's own default")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--no-json", action="store_true", help="watch's console instead of --json: no per-event sink")
    p.add_argument("--replay", type=int, metavar="EVENTS", default=None,
                   help="no kernel: replay EVENTS recorded raw events per scenario through the pipeline in-process")
    p.add_argument("--repeats", type=int, default=5, help="with --replay: runs per scenario, the best is shown")
    p.add_argument("--rules", type=int, default=5000, help="with --replay: kube-proxy-style rules for 'rules'")
    p.add_argument("--rules-events", type=int, default=20_000, help="with --replay: events of the 'rules' scenario")
    p.add_argument("--stop", type=int, metavar="ROUNDS", default=None,
                   help="instead: time SIGINT/SIGTERM/SIGHUP ending watch, capture and serve in a storm, ROUNDS "
                        "rounds each (scripts/bench_stop.py)")
    a = p.parse_args(argv)
    if a.replay is not None:
        sys.path.insert(0, str(ROOT))
        print(replay_report(a.replay, a.repeats, a.rules, a.rules_events))
        return 0
    if os.geteuid() != 0:
        print("scripts/bench: run as root", file=sys.stderr)
        return 2
    if a.stop is not None:
        import bench_stop   # beside this file
        stops = bench_stop.run(a.stop, a.generators)
        print(bench_stop.report(stops, a.generators, a.markdown))
        return 0 if all(s.seconds <= bench_stop.PROMISE and s.status == 0 for s in stops) else 1
    r = run(a.drops, a.generators, a.seconds, a.max_event_rate, a.pods, not a.no_json, a.classic, a.conntrack, a.stacks)
    print(report(r, a.markdown))
    return 0 if r.storm_counted == r.kernel_drops else 1


if __name__ == "__main__":
    sys.exit(main())
