"""Each standing cause of drops (a veth whose peer is down, IPv6 disabled, an
IPsec policy without its state, an overlay mismatch, a bridge port not
forwarding, a tc or cgroup program) made for real in namespaces this test
creates, traced by netdrop's program, classified with the evidence netdrop reads from those
namespaces: the category, the reason or location, and the fact the hint names.

Each test builds two namespaces joined by a veth (a: a0 10.77.0.1, b: b0
10.77.0.2), makes one cause, and removes everything it made, also on failure.
Nothing touches the host's own namespace; the cgroup test makes (and removes)
one cgroup under a private cgroup2 mount."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tracer.explain.classify import Classifier
from tracer.explain.evidence import EvidenceCache, read_node
from tracer.explain.verdict import Verdict
from tracer.kernel import decode, loader
from tracer.kernel.decode import Drop
from tracer.kernel.facts import Kallsyms, find_tracefs, probe_kernel
from tracer.kernel.filters import Filters
from tracer.node.nsexec import socket_in

from ...timing import allowed
from .. import bpftest
from ..helpers import finish, ip, tracing, veth_pair

PREFIX = f"ndc{os.getpid()}"
BURST = 500         # datagrams sent at once into a downed veth peer
A_IP, B_IP, A_IP6, B_IP6 = "10.77.0.1", "10.77.0.2", "fd77::1", "fd77::2"
CLONE_NEWNET = 0x40000000


def run_in(ns: str, *cmd: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=20,
                          check=check)


def ping(ns: str, dst: str, count: int = 3) -> None:
    run_in(ns, "ping", "-6" if ":" in dst else "-4", "-c", str(count), "-i", "0.2", "-W", "0.3", dst)


@dataclass
class Pair:
    a: str
    b: str
    inodes: dict[str, int]
    b_mac: str

    def path(self, ns: str) -> str:
        return f"/run/netns/{ns}"


@pytest.fixture(scope="module")
def kernel() -> tuple[object, Kallsyms]:
    return probe_kernel(find_tracefs()), Kallsyms.load()


@pytest.fixture
def pair() -> Iterator[Pair]:
    a, b = f"{PREFIX}-a", f"{PREFIX}-b"
    with veth_pair(a, b, "a0", "b0", (f"{A_IP}/24", f"{A_IP6}/64"), (f"{B_IP}/24", f"{B_IP6}/64")):
        b_mac = ip("-j", "link", "show", "b0", ns=b).split('"address":"')[1].split('"')[0]
        # Static neighbours: no ARP/ND on the way, so the drop is the cause's own.
        ip("neigh", "add", B_IP, "lladdr", b_mac, "dev", "a0", "nud", "permanent", ns=a)
        ip("-6", "neigh", "add", B_IP6, "lladdr", b_mac, "dev", "a0", "nud", "permanent", ns=a)
        inodes = {ns: os.stat(f"/run/netns/{ns}").st_ino for ns in (a, b)}
        yield Pair(a, b, inodes, b_mac)


def traced(kernel: tuple[object, Kallsyms], pair: Pair, make: Callable[[], None]) -> list[tuple[Drop, Verdict]]:
    """Drops in the pair's namespaces while make() runs, each classified as
    netdrop does, with the evidence read from the namespaces after make()
    (the cause still in place)."""
    facts, kallsyms = kernel
    with loader.Tracer(facts, Filters(netns=frozenset(pair.inodes.values()))) as tracer:   # type: ignore[arg-type]
        make()
        time.sleep(0.3)
        raws = tracer.poll(200)
    dec = decode.Decoder(facts.reasons, kallsyms)    # type: ignore[attr-defined]
    drops = [dec.decode(r) for r, _packet in raws]
    cache = EvidenceCache()
    for ino in pair.inodes.values():
        assert cache.refresh(ino) is not None
    classify = Classifier(evidence=cache)
    return [(d, classify(d)) for d in drops]


def only(found: list[tuple[Drop, Verdict]], reason: str, location: str | None = None) -> list[tuple[Drop, Verdict]]:
    hits = [(d, v) for d, v in found if d.reason == reason and (location is None or d.location == location)]
    assert hits, f"no {reason}@{location}: got {sorted({(d.reason, d.location) for d, _ in found})}"
    return hits


def raw_frames(path: str, ifname: str, frames: list[bytes]) -> None:
    s = socket_in(path, socket.AF_PACKET, socket.SOCK_RAW)
    assert s is not None
    with s:
        s.bind((ifname, 0))
        for f in frames:
            s.send(f)


def ipv4_udp(src: str, dst: str, dport: int) -> bytes:
    def csum(b: bytes) -> int:
        s = sum(struct.unpack(f"!{len(b) // 2}H", b))
        s = (s >> 16) + (s & 0xFFFF)
        s += s >> 16
        return ~s & 0xFFFF
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + struct.pack("!HHHH", 40000, dport, 8, 0)


def test_veth_whose_peer_is_down(kernel, pair):
    ip("link", "set", "b0", "down", ns=pair.b)
    found = traced(kernel, pair, lambda: ping(pair.a, B_IP))
    for d, v in only(found, "QDISC_DROP"):
        assert d.ifname == "a0" and v.category == "qdisc"
        assert "a0 is UP, no carrier" in v.hint and "its peer, ifindex" in v.hint and f"in {pair.b}" in v.hint
        assert "torn down" in v.hint


def test_ipv6_disabled_in_the_pod(kernel, pair):
    run_in(pair.b, "sysctl", "-qw", "net.ipv6.conf.b0.disable_ipv6=1", check=True)
    found = traced(kernel, pair, lambda: ping(pair.a, B_IP6))
    hits = [(d, v) for d, v in only(found, "IPV6DISABLED") if d.src == A_IP6]   # (b0's own router solicitations too)
    assert len(hits) == 3
    for d, v in hits:
        assert v.category == "device" and d.netns == pair.inodes[pair.b]
        assert "IPv6 is disabled on b0 (net.ipv6.conf.b0.disable_ipv6=1)" in v.hint and A_IP6 in v.hint


def test_localnet_from_outside(kernel, pair):
    frame = bytes.fromhex(pair.b_mac.replace(":", "")) + b"\x02\0\0\0\0\x01\x08\x00" + ipv4_udp(A_IP, "127.0.0.1",
                                                                                                30080)
    found = traced(kernel, pair, lambda: raw_frames(pair.path(pair.a), "a0", [frame] * 3))
    hits = [(d, v) for d, v in only(found, "IP_LOCALNET") if d.src == A_IP]
    assert len(hits) == 3
    for d, v in hits:
        assert v.category == "device" and d.dst == "127.0.0.1"
        assert "route_localnet is 0 (net.ipv4.conf.b0.route_localnet)" in v.hint


def test_ipsec_policy_without_its_state(kernel, pair):
    tmpl = ("tmpl", "src", A_IP, "dst", B_IP, "proto", "esp", "mode", "transport")
    ip("xfrm", "policy", "add", "src", A_IP, "dst", B_IP, "dir", "in", *tmpl, ns=pair.b)
    found = traced(kernel, pair, lambda: ping(pair.a, B_IP))
    for d, v in only(found, "XFRM_POLICY"):
        assert v.category == "ipsec" and d.src == A_IP
        # The policy named from the namespace's own state, and why it refused.
        assert v.hint.startswith(f"inbound IPsec policy 'src {A_IP}/32 dst {B_IP}/32 dir in tmpl esp transport'")
        assert "has no state (SA) for it" in v.hint and "has not installed its keys" in v.hint
    # The sender's side: an outbound policy without a state routes to a blackhole.
    ip("xfrm", "policy", "flush", ns=pair.b)
    ip("xfrm", "policy", "add", "src", A_IP, "dst", B_IP, "dir", "out", *tmpl, ns=pair.a)
    found = traced(kernel, pair, lambda: ping(pair.a, B_IP))
    for d, v in only(found, "NOT_SPECIFIED", "dst_discard_out"):
        assert d.dst == B_IP and v.category == "no-route" and "1 outbound IPsec policy and no IPsec state" in v.hint


def vxlan(ns: str, vni: int, port: int, local: str, remote: str, dev: str, addr: str) -> None:
    ip("link", "add", "vx0", "type", "vxlan", "id", str(vni), "dstport", str(port), "local", local,
       "remote", remote, "dev", dev, ns=ns)
    ip("addr", "add", addr, "dev", "vx0", ns=ns)
    ip("link", "set", "vx0", "up", ns=ns)


def test_overlay_vni_mismatch(kernel, pair):
    vxlan(pair.a, 42, 4789, A_IP, B_IP, "a0", "10.78.0.1/24")
    vxlan(pair.b, 43, 4789, B_IP, A_IP, "b0", "10.78.0.2/24")
    ip("neigh", "add", "10.78.0.2", "lladdr", "02:00:00:00:00:02", "dev", "vx0", "nud", "permanent", ns=pair.a)
    found = traced(kernel, pair, lambda: ping(pair.a, "10.78.0.2"))
    hits = only(found, "VXLAN_VNI_NOT_FOUND", "vxlan_rcv")
    assert any(d.src == A_IP for d, _v in hits)
    for d, v in hits:       # both ways: b's own IPv6 solicitations reach a with VNI 43
        here = 43 if d.netns == pair.inodes[pair.b] else 42
        assert v.category == "overlay" and f"VXLAN here: vx0 VNI {here} port 4789" in v.hint


def test_overlay_port_mismatch(kernel, pair):
    vxlan(pair.a, 42, 4789, A_IP, B_IP, "a0", "10.78.0.1/24")
    vxlan(pair.b, 42, 8472, B_IP, A_IP, "b0", "10.78.0.2/24")
    ip("neigh", "add", "10.78.0.2", "lladdr", "02:00:00:00:00:02", "dev", "vx0", "nud", "permanent", ns=pair.a)
    found = traced(kernel, pair, lambda: ping(pair.a, "10.78.0.2"))
    hits = [(d, v) for d, v in only(found, "NO_SOCKET") if d.dport == 4789]
    assert hits
    for d, v in hits:
        assert d.src == A_IP and v.category == "no-socket" and "UDP port 4789" in v.hint
        assert "vx0 VNI 42 port 8472" in v.hint and "disagree on the overlay port" in v.hint


def test_bridge_port_not_forwarding(kernel, pair):
    b = pair.b
    # STP on, as on a bridge where someone enabled it: a new port listens, then
    # learns, forward_delay (20 s here) each, before it forwards (net/bridge/br_stp.c).
    # (Setting a port's state by hand does not hold without STP: br_port_state_selection.)
    ip("link", "add", "br0", "type", "bridge", "stp_state", "1", "forward_delay", "2000", ns=b)
    ip("link", "add", "p1", "type", "veth", "peer", "name", "p2", ns=b)
    ip("link", "set", "p1", "master", "br0", ns=b)
    for dev in ("br0", "p1", "p2"):
        ip("link", "set", dev, "up", ns=b)
    deadline = time.monotonic() + 5
    while "bridge_slave state listening" not in ip("-d", "link", "show", "p1", ns=b):
        assert time.monotonic() < deadline, ip("-d", "link", "show", "p1", ns=b)
        time.sleep(0.05)
    frame = b"\x02\0\0\0\0\x0a" + b"\x02\0\0\0\0\x09" + b"\x08\x00" + ipv4_udp("10.79.0.9", "10.79.0.10", 9)
    found = traced(kernel, pair, lambda: raw_frames(pair.path(b), "p2", [frame] * 3))
    hits = [(d, v) for d, v in only(found, "BRIDGE_INGRESS_STP_STATE") if d.src == "10.79.0.9"]   # (p2's own ND too)
    assert len(hits) == 3
    for d, v in hits:
        assert d.ifname == "p1" and v.category == "device"
        assert "bridge port p1 of br0 is listening, not forwarding" in v.hint


# -- BPF programs, as a CNI's or a security agent's (tests/kernel/bpftest.py) --

@contextlib.contextmanager
def in_netns_thread(path: str, fn: Callable[[], None]) -> Iterator[None]:
    """fn() run in a thread that entered the namespace at path (setns moves only that thread)."""
    err: list[BaseException] = []

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            fn()
        except BaseException as e:    # noqa: BLE001  re-raised in the test's thread
            err.append(e)
        finally:
            os.close(fd)

    t = threading.Thread(target=run)
    t.start()
    t.join(20)
    if err:
        raise err[0]
    yield


def test_tc_program_that_drops(kernel, pair):
    from bcc import BPF
    from pyroute2 import IPRoute
    prog = bpftest.program("drop_all", 2)                  # TC_ACT_SHOT
    fn = prog.load_func(b"drop_all", BPF.SCHED_CLS)

    def attach() -> None:
        # The program stays attached until the pair's namespaces go (with b0).
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname="b0")[0]
            ipr.tc("add", "clsact", idx)
            ipr.tc("add-filter", "bpf", idx, ":1", fd=fn.fd, name=fn.name, parent="ffff:fff2", classid=1,
                   direct_action=True)

    try:
        with in_netns_thread(pair.path(pair.b), attach):
            found = traced(kernel, pair, lambda: ping(pair.a, B_IP))
    finally:
        prog.cleanup()
    for d, v in only(found, "TC_INGRESS"):
        assert d.ifname == "b0" and v.category == "bpf-program"
        assert "tc ingress program 'drop_all' id" in v.hint and "on b0" in v.hint


def test_cgroup_program_that_drops_egress(kernel, pair):
    prog = bpftest.program("drop_all", 0)                  # 0: drop (cgroup skb programs)
    try:
        with bpftest.cgroup("netdrop-test") as cg, bpftest.attached_to_cgroup(prog, "drop_all", cg):
            # The sender joins the cgroup, then pings from the pair's namespace a.
            cmd = f"echo $$ > {cg}/cgroup.procs && exec ip netns exec {pair.a} ping -c 3 -i 0.2 -W 0.3 {B_IP}"
            found = traced(kernel, pair, lambda: subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=20))
            node = read_node()
    finally:
        prog.cleanup()
    assert node.cgroup_programs and any(p.name == "drop_all" for p in node.cgroup_programs)
    for d, v in only(found, "BPF_CGROUP_EGRESS"):
        assert v.category == "bpf-program" and d.dst == B_IP
        assert "cgroup_inet_egress program 'drop_all' id" in v.hint and f"netdrop-test-{os.getpid()}" in v.hint


def test_watch_names_the_evidence_from_the_first_line(netdrop, pair):
    """What a user of `netdrop watch --json` reads first, and what a log
    pipeline keeps: the first line of a drop behind a downed veth peer names
    the peer. netdrop has never read this namespace: the group's first events
    wait for that read (explain/holding.py) instead of saying "a queue or
    traffic-control rule dropped it"."""
    ip("link", "set", "b0", "down", ns=pair.b)
    nd = netdrop("watch", "--json", "--duration", "60", "--netns", pair.a, "--netns", pair.b).wait_ready()
    ping(pair.a, B_IP, count=3)
    nd.stop()
    assert nd.proc.returncode == 0 and "Traceback" not in nd.stderr, nd.stderr
    records = nd.records()
    assert records, nd.stderr
    first = records[0]
    assert (first["reason"], first["ifname"], first["category"]) == ("QDISC_DROP", "a0", "qdisc"), first
    assert "a0 is UP, no carrier" in first["hint"] and f"in {pair.b}, is down" in first["hint"], first["hint"]
    drops = [r for r in records if r["reason"] == "QDISC_DROP"]
    assert len(drops) >= 3 and {r["hint"] for r in drops} == {first["hint"]}


def test_a_stop_while_first_events_wait_for_evidence_writes_them_within_2s(netdrop, pair):
    """The signal comes right after a burst into a downed veth peer, before
    netdrop has read the namespace: the held events are written (the drain
    gives them their read) and the run still ends within 2 s."""
    ip("link", "set", "b0", "down", ns=pair.b)
    nd = netdrop("watch", "--json", "--duration", "60", "--netns", pair.a).wait_ready()
    s = socket_in(pair.path(pair.a), socket.AF_INET, socket.SOCK_DGRAM)
    assert s is not None
    with s:
        for i in range(BURST):
            s.sendto(b"x", (B_IP, 9000 + i % 16))
    t0 = time.monotonic()
    nd.stop(settle=0)
    took = time.monotonic() - t0
    assert took < allowed(2.0), f"stopped in {took:.1f} s"
    assert nd.proc.returncode == 0 and "Traceback" not in nd.stderr, nd.stderr
    drops = [r for r in nd.records() if r["reason"] == "QDISC_DROP"]
    assert drops, nd.stderr
    assert all("a0 is UP, no carrier" in r["hint"] for r in drops), drops[0]["hint"]


def test_capture_events_and_summary_agree_on_the_settled_why(pair, tmp_path):
    """A capture keeps every line: events.jsonl's first line, its others and
    summary.json's group and verdict all give the why with the evidence."""
    ip("link", "set", "b0", "down", ns=pair.b)
    out = tmp_path / "cap"
    with tracing("capture", "--duration", "60", "--output", str(out), "--netns", pair.a, "--netns", pair.b) as proc:
        ping(pair.a, B_IP, count=3)
        status, _, err = finish(proc)
    assert status == 0 and "Traceback" not in err, err
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert events and events[0]["reason"] == "QDISC_DROP", events[:1]
    why = events[0]["hint"]
    assert "a0 is UP, no carrier" in why and f"in {pair.b}, is down" in why, why
    assert {e["hint"] for e in events if e["reason"] == "QDISC_DROP"} == {why}
    (group,) = [g for g in summary["groups"] if g["reason"] == "QDISC_DROP"]
    (verdict,) = [v for v in summary["verdicts"] if v["category"] == "qdisc"]
    assert group["hint"] == verdict["hint"] == why
    assert group["events"] == len([e for e in events if e["reason"] == "QDISC_DROP"])
