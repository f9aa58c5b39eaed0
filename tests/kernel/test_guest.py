"""What only a kernel of the test's own can show: run by scripts/kernels inside its QEMU
guests (marked `guest`: deselected anywhere else), first, before anything loads nf_conntrack.

A full conntrack table, made for real: nf_conntrack_max (a sysctl of the whole kernel,
writable only in the initial namespace) lowered, and a namespace's table filled with
established TCP connections, which conntrack never evicts to make room (early_drop()
passes over ASSURED entries, net/netfilter/nf_conntrack_core.c). Every new flow after
that fails __nf_conntrack_alloc() and is dropped: netdrop must name each as "conntrack
table full" from its alloc hook, whose module was loaded only after netdrop started, as
kube-proxy loads it on a node, and count as many drops as the kernel's own `drop`
statistic.
"""

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tracer.explain.conntrack import parse_ct_stats
from tracer.kernel.hooks import module_loaded
from tracer.node.nsexec import socket_in

pytestmark = [pytest.mark.portable, pytest.mark.guest]

CT_MAX = Path("/proc/sys/net/netfilter/nf_conntrack_max")
NEW_FLOWS = 20


def sh(*cmd: str, ns: str | None = None) -> str:
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    return subprocess.run(full, check=True, capture_output=True, text=True, timeout=60).stdout


def ct_drops(ns: str) -> int:
    return parse_ct_stats(sh("cat", "/proc/net/stat/nf_conntrack", ns=ns)).value["drop"]


@pytest.fixture
def ct_ns():
    name = f"ndg-ct-{os.getpid()}"
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    saved = CT_MAX.read_text() if CT_MAX.exists() else None
    try:
        yield name
    finally:
        if saved is not None:
            CT_MAX.write_text(saved)
        subprocess.run(["ip", "netns", "del", name], check=False)


def wait_for(what, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(step)
    return what()


def test_full_conntrack_table_named_per_flow_by_hooks_attached_when_nf_conntrack_loads(netdrop, ct_ns):
    # nf_conntrack as on a node before kube-proxy ran: not loaded when netdrop starts.
    subprocess.run(["modprobe", "-r", "nf_conntrack"], check=False, capture_output=True)
    if module_loaded("nf_conntrack"):
        pytest.fail("nf_conntrack is loaded and in use: this test must run first in a fresh guest")
    nd = netdrop("watch", "--json", "--duration", "600", "--netns", ct_ns).wait_ready()
    assert "function hooks waiting for their module" in nd.stderr_now(), nd.stderr_now()

    # A conntrack rule makes the namespace track its flows (and loads nf_conntrack).
    sh("iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP", ns=ct_ns)
    assert module_loaded("nf_conntrack")
    line = wait_for(lambda: next((x for x in nd.err_lines if x.startswith("netdrop: function hooks now:")), None), 30)
    assert line is not None, nd.stderr_now()
    assert re.search(r"(fexit|kretprobe) __nf_conntrack_alloc attached", line), line

    # Fill the namespace's table with established connections, up to a max just above
    # what it holds: the last connect()s fail once it is full (their SYNs dropped).
    server = socket_in(f"/run/netns/{ct_ns}", socket.AF_INET, socket.SOCK_STREAM)
    assert server is not None
    held: list[socket.socket] = [server]
    try:
        server.bind(("127.0.0.1", 7000))
        server.listen(256)
        CT_MAX.write_text("64\n")
        for _ in range(80):
            c = socket_in(f"/run/netns/{ct_ns}", socket.AF_INET, socket.SOCK_STREAM)
            assert c is not None
            c.settimeout(0.5)
            try:
                c.connect(("127.0.0.1", 7000))
            except OSError:                     # the table is full: the SYN was dropped
                c.close()                       # and no retransmitted SYN comes later
                break
            held += [c, server.accept()[0]]
        else:
            pytest.fail("80 connections and the table of 64 never filled")
        time.sleep(1.5)                         # a jiffy or two between the SYN's drop and what follows
        # Now every new flow is dropped: UDP to ports nobody uses, each a flow of its own.
        before = ct_drops(ct_ns)
        udp = socket_in(f"/run/netns/{ct_ns}", socket.AF_INET, socket.SOCK_DGRAM)
        assert udp is not None
        held.append(udp)
        refused = 0
        for port in range(9000, 9000 + NEW_FLOWS):
            try:
                udp.sendto(b"x", ("127.0.0.1", port))
            except PermissionError:     # dropped on the way out: netfilter's NF_DROP is EPERM to the sender
                refused += 1
            time.sleep(0.05)
        kernel_dropped = ct_drops(ct_ns) - before
    finally:
        for s in held:
            s.close()
    nd.stop()
    assert nd.proc.returncode == 0, nd.stderr

    assert kernel_dropped == refused == NEW_FLOWS, "the kernel's drop statistic counts each new flow once"
    full = [r for r in nd.records() if r["proto"] == "udp" and 9000 <= (r["dport"] or 0) < 9000 + NEW_FLOWS]
    assert sorted(r["dport"] for r in full) == list(range(9000, 9000 + NEW_FLOWS))
    unnamed = [(r["dport"], r["time"], r["hint"][:60]) for r in full
               if not r["hint"].startswith("conntrack table full")]
    assert not unnamed, f"{len(unnamed)} of {len(full)} not named by the alloc hook: {unnamed}"
    for r in full:
        assert r["category"] == "conntrack", r
        assert f"127.0.0.1:{r['sport']} -> 127.0.0.1:{r['dport']}" in r["hint"], r["hint"]
    # Exact: the drops counted where conntrack dropped them equal the kernel's statistic
    # over the whole run (the filling's last SYNs included).
    counted = [int(m.group(1).replace(",", "")) for m in
               re.finditer(r"^netdrop: counted ([\d,]+) conntrack \S+ at (\S+), netns", nd.stderr, re.M)]
    assert sum(counted) == ct_drops(ct_ns), nd.stderr


def test_nf_conntrack_unloaded_and_loaded_again_while_netdrop_runs(netdrop):
    """A kprobe hook (5.10: no module BTF) lets its module go: netdrop detaches it, says
    it waits, and attaches it again when the module is back. An fexit hook holds its
    module (the trampoline takes a reference, kernel/bpf/trampoline.c): rmmod refuses
    while netdrop runs, and succeeds after it stopped."""
    def rmmod() -> subprocess.CompletedProcess:
        return subprocess.run(["modprobe", "-r", "xt_conntrack", "nf_conntrack"], capture_output=True, text=True)

    sh("modprobe", "nf_conntrack")
    nd = netdrop("watch", "--json", "--duration", "600", "--netns", "/proc/self/ns/net").wait_ready()
    tracing = re.search(r"^netdrop: tracing \((.*)\)", nd.stderr_now(), re.M)
    assert tracing, nd.stderr_now()
    fexit = "fexit __nf_conntrack_alloc" in tracing.group(1)
    assert fexit or "kretprobe __nf_conntrack_alloc" in tracing.group(1), tracing.group(1)
    removed = rmmod()
    if fexit:
        assert removed.returncode != 0 and "in use" in removed.stderr, removed
        assert module_loaded("nf_conntrack")
    else:
        assert removed.returncode == 0, removed.stderr
        gone = wait_for(lambda: any("unloaded" in x for x in nd.err_lines if "function hooks now" in x), 30)
        assert gone, nd.stderr_now()
        sh("modprobe", "nf_conntrack")
        back = wait_for(lambda: any("kretprobe __nf_conntrack_alloc attached" in x for x in nd.err_lines
                                    if "function hooks now" in x and "unloaded" not in x), 30)
        assert back, nd.stderr_now()
    nd.stop()
    assert nd.proc.returncode == 0 and "Traceback" not in nd.stderr, nd.stderr
    if fexit:
        assert rmmod().returncode == 0, "the module goes once netdrop has stopped"
