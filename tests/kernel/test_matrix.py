"""The seed cases on whatever kernel runs the tests: this machine's, and Debian's 5.10, 6.1
and 6.12 under QEMU (scripts/kernels runs every test marked `portable`).

One `netdrop watch --json` over the simulated node's node1 and pod db while the cases
play (compiling is the slow part under emulation: once for all of them), then per case
what a responder needs, on every kernel: the category and the why with its decisive fact
(the overlay's device and MTU, the FORWARD policy, the port, the unrouted address), the
exact count against the kernel's own counter of that drop (SNMP counters of the
namespace), and, in a guest, the function hooks attached in the form that kernel allows.
Kernels before 5.17 give no drop reason: there the category comes from the location,
the ICMP error and the ip_forward hook.
"""

import re
from pathlib import Path

import pytest

from tracer.kernel.facts import find_tracefs, probe_kernel
from tracer.lab import shell
from tracer.lab.cases import CASES
from tracer.lab.topology import CLIENT_V4, OVERLAY_MTU, UNROUTED_POD

from ..conftest import IN_GUEST

pytestmark = pytest.mark.portable

N = 5
PLAYED = ("mtu", "forward-drop", "udp-closed", "tcp-closed", "no-route")


def snmp(ns: str) -> dict[str, int]:
    """The namespace's SNMP counters (/proc/net/snmp and netstat) as {"IpFragFails": n, ...}."""
    out: dict[str, int] = {}
    lines = shell.run("cat", "/proc/net/snmp", "/proc/net/netstat", ns=ns).splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        proto, *keys = names.split()
        for key, value in zip(keys, values.split()[1:], strict=False):
            out[proto.rstrip(":") + key] = int(value)
    return out


GROUP = re.compile(r"^netdrop: counted ([\d,]+) (\S+)(?: \(benign\))? (\S+) at (\S+), netns (\d+)", re.M)


@pytest.fixture(scope="module")
def run(node, tmp_path_factory):
    """The cases played under one netdrop; what it printed and the kernel's counters."""
    from .conftest import Netdrop

    db = node.pods["db"]
    before = {ns: snmp(ns) for ns in (node.node1, db.netns)}
    nd = Netdrop("watch", "--json", "--duration", "900", "--netns", node.node1, "--netns", db.netns)
    try:
        nd.wait_ready()
        sent = {case: CASES[case].play(node, N) for case in PLAYED}
        nd.stop()
    finally:
        nd.kill()
    after = {ns: snmp(ns) for ns in (node.node1, db.netns)}
    delta = {ns: {k: after[ns][k] - before[ns].get(k, 0) for k in after[ns]} for ns in after}
    inodes = node.netns_inodes()
    groups: dict[tuple[int, str, str], tuple[int, str]] = {}
    for m in GROUP.finditer(nd.stderr):
        groups[(int(m.group(5)), m.group(3), m.group(4))] = (int(m.group(1).replace(",", "")), m.group(2))
    return nd, sent, delta, inodes, groups


def only(records, **want):
    return [r for r in records if all(r.get(k) == v for k, v in want.items())]


def kernel_facts():
    return probe_kernel(find_tracefs())


def counted(groups, netns: int, location: str) -> int:
    """netdrop's exact count of the drops at location in netns (its group lines)."""
    return sum(n for (ns, _reason, loc), (n, _cat) in groups.items() if ns == netns and loc == location)


def test_it_ran_cleanly_and_every_case_was_played(run):
    nd, sent, *_ = run
    assert nd.proc.returncode == 0, nd.stderr
    assert "Traceback" not in nd.stderr
    assert all(sent[c] == N for c in PLAYED), sent
    m = re.search(r"netdrop: ([\d,]+) drops counted, ([\d,]+) events delivered, ([\d,]+) events lost", nd.stderr)
    assert m and m.group(3) == "0", nd.stderr


def test_mtu_names_the_overlay_device_and_mtu_and_counts_what_the_kernel_counts(run, node):
    nd, _sent, delta, inodes, groups = run
    facts = kernel_facts()
    drops = only(nd.records(), src=node.pods["web"].ipv4, dst=node.pods["api"].ipv4)
    assert len(drops) == N
    for r in drops:
        assert (r["category"], r["location"]) == ("mtu", "ip_forward"), r
        assert r["reason"] == ("PKT_TOO_BIG" if facts.has_reason else None)
        assert (r["out_ifname"], r["mtu"]) == ("flannel.1", OVERLAY_MTU)
        assert "MTU 1450 of flannel.1" in r["hint"], r["hint"]
        if IN_GUEST and not facts.has_reason:
            # before 5.17 the ip_forward hook saw the packet over its route's MTU
            assert (r.get("detail") or {}).get("hook") == "ip_forward", r
    # ip_forward() counts FragFails for each DF packet over the MTU, then drops it
    assert counted(groups, inodes[node.node1], "ip_forward") == delta[node.node1]["IpFragFails"] == N


def test_forward_policy_drop_is_named(run, node):
    nd, *_ = run
    drops = only(nd.records(), src=node.pods["web"].ipv4, dst=CLIENT_V4)
    assert len(drops) == N
    for r in drops:
        assert r["category"] == "netfilter", r
        assert "FORWARD" in r["hint"] and "policy" in r["hint"], r["hint"]


def test_udp_to_a_closed_port_counts_what_the_kernel_counts(run, node):
    nd, _sent, delta, inodes, groups = run
    db = node.pods["db"]
    drops = only(nd.records(), dst=db.ipv4, dport=9999)
    assert len(drops) == N
    for r in drops:
        assert (r["category"], r["location"]) == ("no-socket", "__udp4_lib_rcv"), r
        assert f"nothing listens on UDP {db.ipv4}:9999" in r["hint"]
    assert counted(groups, inodes[db.netns], "__udp4_lib_rcv") == delta[db.netns]["UdpNoPorts"] == N


def test_tcp_to_a_closed_port(run, node):
    nd, *_ = run
    drops = only(nd.records(), dst=node.pods["db"].ipv4, dport=8080)
    assert len(drops) == N
    assert all((r["category"], r["location"], r["proto"]) == ("no-socket", "tcp_v4_rcv", "tcp") for r in drops)


def test_no_route_names_the_address_and_counts_what_the_kernel_counts(run, node):
    nd, _sent, delta, inodes, groups = run
    drops = only(nd.records(), dst=UNROUTED_POD)
    assert len(drops) == N
    for r in drops:
        assert (r["category"], r["location"]) == ("no-route", "ip_error"), r
        assert f"no route to {UNROUTED_POD}" in r["hint"]
    assert counted(groups, inodes[node.node1], "ip_error") == delta[node.node1]["IpExtInNoRoutes"] == N


def test_function_hooks_attach_in_the_form_the_kernel_allows(run):
    """In a guest every function hook attaches: fentry/fexit where the kernel has the
    function's BTF (module BTF: 5.11+), else kprobes. On this machine's kernel (no
    kprobes, fentry refused) each says why not, and tracing goes on without them."""
    nd, *_ = run
    facts = kernel_facts()
    tracing = re.search(r"^netdrop: tracing \((.*)\); filters", nd.stderr, re.M)
    assert tracing, nd.stderr
    attached = tracing.group(1).split(", ")
    # every kernel netdrop is tested on has the drop tracepoint in its BTF and takes tp_btf
    assert attached[0] == "tp_btf skb:kfree_skb"
    assert ("tp_btf icmp:icmp_send" in attached) == facts.has_icmp_tp
    if not IN_GUEST:
        unused = re.search(r"^netdrop: function hooks not used \((.*)\): working with tracepoints", nd.stderr, re.M)
        assert unused and "kretprobe __nf_conntrack_alloc: unavailable: kernel built without CONFIG_KPROBES" \
            in unused.group(1), nd.stderr
        return
    module_btf = Path("/sys/kernel/btf/nf_conntrack").exists()
    ct = "fexit" if module_btf else "kretprobe"
    assert f"{ct} __nf_conntrack_confirm" in attached and f"{ct} __nf_conntrack_alloc" in attached, attached
    if not facts.has_reason:        # 5.10: ip_forward is vmlinux's, in its BTF
        assert "fentry ip_forward" in attached, attached
    if not facts.has_icmp_tp:
        assert "fentry __icmp_send" in attached, attached
