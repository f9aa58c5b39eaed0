"""Benign drops on the real kernel: a capture of a namespace pair this test makes, where real
benign drops (IPv6 multicast nobody joined, a UDP broadcast nobody listens for, a neighbour
solicitation for another host, a netlink socket's queue purged on close) happen beside their
near misses at the same places (unicast UDP to the receiver's own address that its inbound IPsec
policy refuses, a packet socket's queue of copies of unicast to our own address) and a real
problem (UDP to a port nobody listens on). events.jsonl and summary.json mark them, and
`netdrop summary` sets the benign ones aside unless --all."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracer import cli
from tracer.env import Environment
from tracer.explain.benign import BENIGN
from tracer.kernel import facts
from tracer.lab.shell import in_netns

from ..helpers import ip, main_while_tracing, nstat, veth_pair

N = 5
SENDER = f"""
import socket, time
idx = socket.if_nametoindex("{{dev}}")
m = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
m.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
# A neighbour solicitation sent to the receiver's own address for another host's (fd01::2).
ns = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
ns.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
solicit = bytes([135, 0, 0, 0, 0, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, "fd01::2")
for _ in range({N}):
    m.sendto(b"benign", ("ff02::1234", 5003, 0, idx))     # a group nobody on the other side joined
    m.sendto(b"benign", ("ff02::1", 5005, 0, idx))        # all nodes: joined, nobody listens on the port
    u.sendto(b"real", ("192.0.2.2", 9999))                 # a port nobody listens on
    u.sendto(b"benign", ("192.0.2.255", 5004))             # the subnet's broadcast: nobody listens
    u.sendto(b"refused", ("192.0.2.2", 7001))              # the receiver's own address, its policy blocks
    u6.sendto(b"refused", ("fd00::2", 7001))               # the same in IPv6
    ns.sendto(solicit, ("fd00::2", 0))
    time.sleep(0.05)
"""
# On the simulated node: the multicast and the closed port only.
SIM_SENDER = "\n".join(line for line in SENDER.splitlines()
                       if not any(x in line for x in ("192.0.2.255", "7001", "ff02::1\"", "ns.", "ns =", "solicit")))
# A netlink socket subscribed to link and address notifications, closed with them unread:
# netlink_sock_destruct() purges its queue (QUEUE_PURGE at skb_queue_purge_reason: benign).
# A packet socket (as tcpdump's) closed with the frames it was sent unread: packet_release()
# purges copies of unicast to our own address (the same place: not benign).
LO = 3
PURGE = """
import socket, subprocess, time
n = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
n.bind((0, 0x1 | 0x10))                                    # RTMGRP_LINK | RTMGRP_IPV4_IFADDR
subprocess.run(["ip", "addr", "add", "198.51.100.7/32", "dev", "lo"], check=True)
subprocess.run(["ip", "link", "set", "lo", "mtu", "60000"], check=True)
p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
p.bind(("lo", 0))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 7000))
for _ in range(3):
    u.sendto(b"q", ("127.0.0.1", 7000))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
for _ in range({LO}):
    b.sendto(b"lo", ("127.255.255.255", 5006))        # lo's broadcast nobody listens for: benign
time.sleep(0.1)
p.close()
n.close()
"""
# The receiver's inbound IPsec policy: unicast UDP to its own address, port 7001, is refused.
BLOCK = ("proto", "udp", "dport", "7001", "dir", "in", "action", "block")


@pytest.fixture
def pair() -> Iterator[tuple[str, str, str]]:
    """(sender, receiver, sender's device): two namespaces of this test, on one veth pair;
    the receiver has fd00::2, the sender fd00::1 and an on-link route to fd01::/64."""
    tag = f"ndb{os.getpid() % 100000}"
    a, b, dev = f"{tag}a", f"{tag}b", f"{tag}v"
    with veth_pair(a, b, dev, f"{tag}w"):
        ip("route", "add", "fd01::/64", "dev", dev, ns=a)
        ip("xfrm", "policy", "add", "src", "192.0.2.1/32", "dst", "192.0.2.2/32", *BLOCK, ns=b)
        ip("xfrm", "policy", "add", "src", "fd00::1/128", "dst", "fd00::2/128", *BLOCK, ns=b)
        yield a, b, dev


def play(sender: str, receiver: str, dev: str) -> None:
    subprocess.run([*in_netns(sender), sys.executable, "-c", SENDER.replace("{dev}", dev)],
                   check=True, timeout=30)
    # fd01::2 ends in the same 24 bits as fd00::2: the receiver gets the solicitations for it.
    subprocess.run([*in_netns(sender), "ping", "-6", "-c", "1", "-W", "3", "fd01::2"],
                   capture_output=True, timeout=30)
    subprocess.run([*in_netns(receiver), sys.executable, "-c", PURGE.replace("{LO}", str(LO))],
                   check=True, timeout=30)


def capture(receiver: str, out_dir: Path, sender: str, dev: str, *extra: str) -> str:
    """netdrop capture of the receiver's namespace, in this process, while the traffic plays."""
    return main_while_tracing(["capture", "--netns", receiver, "--duration", "8", "--output", str(out_dir), *extra],
                              lambda: play(sender, receiver, dev))


def summary_of(out_dir: Path, *extra: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["summary", str(out_dir), *extra], Environment(stdout=out, stderr=err, width=200)) == 0
    assert err.getvalue() == ""
    return out.getvalue()


@pytest.mark.parametrize("form", [(), ("--classic-tracepoints",)], ids=["tp_btf", "classic"])
def test_real_benign_drops_are_marked_in_the_capture_and_set_aside_by_summary(pair, tmp_path, form):
    """The same with either attach form: the packet facts are read from the skb both ways."""
    sender, receiver, dev = pair
    no_ports, ignored = nstat(receiver, "UdpNoPorts"), nstat(receiver, "UdpIgnoredMulti")
    capture(receiver, tmp_path / "cap", sender, dev, *form)
    no_ports, ignored = nstat(receiver, "UdpNoPorts") - no_ports, nstat(receiver, "UdpIgnoredMulti") - ignored
    events = [json.loads(x) for x in (tmp_path / "cap" / "events.jsonl").read_text().splitlines()]
    s = json.loads((tmp_path / "cap" / "summary.json").read_text())

    def groups(reason: str, location: str, benign: bool | None = None) -> list[dict]:
        return [g for g in s["groups"] if (g["reason"], g["location"]) == (reason, location)
                and benign in (None, g["benign"])]

    def count(reason: str, location: str, benign: bool | None = None) -> int:
        return sum(g["count"] for g in groups(reason, location, benign))

    # The real problem: exact, as the kernel counts it, and not benign.
    assert count("NO_SOCKET", "__udp4_lib_rcv") == count("NO_SOCKET", "__udp4_lib_rcv", False) == no_ports == N
    # One place, two packets: the broadcasts nobody wants (the kernel's InIgnoredMulti; on lo in
    # frames to lo's own MAC) are benign, the unicast to our own address the IPsec policy refused
    # is listed, as its own group.
    assert count("NOT_SPECIFIED", "__udp4_lib_rcv", True) == ignored == N + LO
    refused = groups("NOT_SPECIFIED", "__udp4_lib_rcv", False)
    assert sum(g["count"] for g in refused) == N and {g["category"] for g in refused} == {"ipsec"}
    # IPv6: multicast to a joined group nobody listens on (ff02::1) benign; unicast to our address
    # refused by the policy not (__udp6_lib_rcv says NO_SOCKET for it: tests/kernel/explain/test_ipsec.py).
    assert count("NOT_SPECIFIED", "__udp6_lib_rcv") == count("NOT_SPECIFIED", "__udp6_lib_rcv", True) == N
    assert count("NO_SOCKET", "__udp6_lib_rcv") == count("NO_SOCKET", "__udp6_lib_rcv", False) == N
    # Real benign drops: marked, counted.
    assert count("NOT_SPECIFIED", "ip6_mc_input") == count("NOT_SPECIFIED", "ip6_mc_input", True) >= N
    # A solicitation for another host: to the shared solicited-node group benign, to our own
    # address (the sender asked us for fd01::2) not.
    assert count("IPV6_NDISC_NS_OTHERHOST", "icmpv6_rcv", True) >= 1
    assert count("IPV6_NDISC_NS_OTHERHOST", "icmpv6_rcv", False) == N
    # The queue purges: the netlink socket's benign, the packet socket's copies of unicast to us not.
    assert count("QUEUE_PURGE", "skb_queue_purge_reason", True) >= 2
    assert count("QUEUE_PURGE", "skb_queue_purge_reason", False) >= 3
    netlink = [e for e in events if e["reason"] == "QUEUE_PURGE" and e["benign"]]
    assert netlink and all(e["src"] is None and e["dst"] is None for e in netlink)     # no IP header made up
    assert s["totals"]["benign_drops"] == sum(g["count"] for g in s["groups"] if g["benign"])
    assert s["totals"]["drops"] == sum(g["count"] for g in s["groups"])       # counts stay exact
    # events.jsonl: each delivered event says whether it is benign, by its packet.
    by_kind = {(e["reason"], e["location"], e["dst"], e["benign"]) for e in events}
    assert ("NO_SOCKET", "__udp4_lib_rcv", "192.0.2.2", False) in by_kind
    assert ("NOT_SPECIFIED", "__udp4_lib_rcv", "192.0.2.255", True) in by_kind
    assert ("NOT_SPECIFIED", "__udp4_lib_rcv", "127.255.255.255", True) in by_kind
    assert ("NOT_SPECIFIED", "ip6_mc_input", "ff02::1234", True) in by_kind
    to_us = [e for e in events if e["dst"] in ("192.0.2.2", "fd00::2") and e["dport"] == 7001]
    assert len(to_us) == 2 * N and not any(e["benign"] for e in to_us)
    assert {e["category"] for e in to_us if e["dst"] == "192.0.2.2"} == {"ipsec"}
    assert not any(e["benign"] for e in events if e["reason"] == "NO_SOCKET")
    # Verdicts: the real problems first, benign drops in one verdict of their own, last.
    assert s["verdicts"][-1]["benign"] is True and s["verdicts"][0]["benign"] is False
    assert [v["category"] for v in s["verdicts"] if not v["benign"]][:2] == ["ipsec", "no-socket"]

    hidden = summary_of(tmp_path / "cap")
    assert f"{s['totals']['benign_drops']:,} benign drops not listed (--all to list them)" in hidden
    assert "NO_SOCKET" in hidden and "ipsec" in hidden and "QUEUE_PURGE" in hidden    # the packet socket's
    assert "ip6_mc_input" not in hidden and "IPV6_NDISC_NS_OTHERHOST" in hidden    # the unicast one
    listed = summary_of(tmp_path / "cap", "--all")
    assert "benign drops not listed" not in listed
    for name in ("ip6_mc_input", "QUEUE_PURGE", "IPV6_NDISC_NS_OTHERHOST", "NO_SOCKET"):
        assert name in listed, name


def test_every_benign_entry_names_what_the_running_kernel_has():
    """The list is matched by name: a reason or function our kernel does not have would never match."""
    tracefs = facts.find_tracefs()
    reasons = set(facts.reasons_from_format((tracefs / "events/skb/kfree_skb/format").read_text()).values())
    symbols = {line.split()[2] for line in Path("/proc/kallsyms").read_text().splitlines()}
    for entry in BENIGN:
        assert set(entry.reasons) <= reasons, entry
        exact = [name for name in entry.locations if "*" not in name]
        # Each entry has a function of this kernel; others are for kernels that do not inline them.
        assert any(name in symbols for name in exact), entry


def test_benign_on_the_simulated_node(netdrop, node):
    """On the simulated node (pods made as a CNI makes them, watched with -A):
    IPv6 multicast web sends to a group nobody joined reaches db over the bridge
    and is dropped there benign, named as db's; web's UDP to db's closed port
    beside it is not benign."""
    web, db = node.pods["web"], node.pods["db"]
    nd = netdrop("watch", "--json", "--duration", "60", "--kubeconfig", str(node.kubeconfig),
                 "--node-netns", node.node1, "-A").wait_ready()
    subprocess.run(["ip", "netns", "exec", web.netns, sys.executable, "-c",
                    SIM_SENDER.replace("{dev}", "eth0").replace("192.0.2.2", db.ipv4)], check=True, timeout=30)
    nd.stop()
    assert nd.proc.returncode == 0 and "Traceback" not in nd.stderr, nd.stderr
    in_db = [r for r in nd.records() if r["pod"] and r["pod"]["name"] == db.name]
    multicast = [r for r in in_db if r["location"] == "ip6_mc_input" and r["dst"] == "ff02::1234"]
    closed = [r for r in in_db if r["dport"] == 9999 and r["src"] == web.ipv4]
    assert len(multicast) == N and all(r["benign"] for r in multicast), in_db
    assert len(closed) == N and not any(r["benign"] for r in closed), in_db
