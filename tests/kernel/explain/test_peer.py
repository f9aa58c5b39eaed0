"""Both ends of a drop on the simulated node: a packet between two pods carries
the other pod as `peer` next to `pod`, whether the node's FORWARD chain dropped
it or the receiving pod did; `--pod` keeps the filtered pod as `pod`. Real
namespaces, veths, iptables and kernel; pods from the lab's API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tracer.lab.cases import CASES

from tracer.lab.node import SimNode

from tracer.lab.shell import run

from tracer.lab.topology import CLIENT_V4

N = 3
FORWARD_PORT = 7777      # web -> db, dropped by a rule in node1's FORWARD chain
CLOSED_PORT = 9999       # web -> db, nobody listens in db


@contextlib.contextmanager
def forward_rule(node: SimNode) -> Iterator[None]:
    """A FORWARD rule in node1 (bridged pod traffic passes it: bridge-nf-call-iptables=1)
    dropping web -> db UDP FORWARD_PORT; removed whatever happens."""
    web, db = node.pods["web"], node.pods["db"]
    rule = ("FORWARD", "-s", web.ipv4, "-d", db.ipv4, "-p", "udp", "--dport", str(FORWARD_PORT), "-j", "DROP")
    run("iptables", "-I", *rule, ns=node.node1)
    try:
        yield
    finally:
        run("iptables", "-D", *rule, ns=node.node1, check=False)


def play(node: SimNode) -> None:
    web, db = node.pods["web"], node.pods["db"]
    with forward_rule(node):
        assert node.traffic(web.netns, "udp", "--dst", db.ipv4, "--port", str(FORWARD_PORT),
                            "--count", str(N)) == N
    assert node.traffic(web.netns, "udp", "--dst", db.ipv4, "--port", str(CLOSED_PORT), "--count", str(N)) == N
    CASES["udp-closed"].play(node, N)      # client -> db: the other end is no pod


def watch(netdrop, node: SimNode, *extra: str) -> list[dict]:
    nd = netdrop("watch", "--json", "--duration", "60", "--kubeconfig", str(node.kubeconfig),
                 "--node-netns", node.node1, *extra).wait_ready()
    play(node)
    nd.stop()
    assert nd.proc.returncode == 0 and "Traceback" not in nd.stderr, nd.stderr
    return nd.records()


def flows(records: list[dict], node: SimNode) -> tuple[list[dict], list[dict], list[dict]]:
    web, db = node.pods["web"], node.pods["db"]
    forward = [r for r in records if r["src"] == web.ipv4 and r["dport"] == FORWARD_PORT]
    closed = [r for r in records if r["src"] == web.ipv4 and r["dport"] == CLOSED_PORT]
    outside = [r for r in records if r["src"] == CLIENT_V4 and r["dst"] == db.ipv4]
    return forward, closed, outside


def ends(r: dict) -> tuple:
    peer = r["peer"]
    return (r["pod"]["name"], r["direction"],
            (peer["namespace"], peer["name"], peer["direction"]) if peer is not None else None)


def test_both_ends_in_forward_and_inside_the_receiving_pod(netdrop, node):
    web, db = node.pods["web"], node.pods["db"]
    forward, closed, outside = flows(watch(netdrop, node, "-A"), node)
    assert len(forward) == len(closed) == len(outside) == N
    # Dropped on the node by FORWARD: web's packet, to db.
    for r in forward:
        assert (r["reason"], r["netns"]) == ("NETFILTER_DROP", node.netns_inodes()[node.node1])
        assert ends(r) == (web.name, "from-pod", ("default", db.name, "to-pod"))
    # Dropped in db's own namespace (nothing listens): db's drop, from web.
    for r in closed:
        assert (r["reason"], r["netns"]) == ("NO_SOCKET", node.netns_inodes()[db.netns])
        assert ends(r) == (db.name, "in-pod", ("default", web.name, "from-pod"))
    # From outside the node: no pod at the other end.
    assert all(ends(r) == (db.name, "in-pod", None) for r in outside)


def test_pod_filter_keeps_the_filtered_pod_as_pod(netdrop, node):
    # The kernel tags the source first; with --pod it passes over a pod not asked
    # for (node_pod() in bpf/netdrop.c): db, the destination, is `pod`.
    web, db = node.pods["web"], node.pods["db"]
    forward, closed, outside = flows(watch(netdrop, node, "--pod", db.name), node)
    assert len(forward) == len(closed) == len(outside) == N
    assert all(ends(r) == (db.name, "to-pod", ("default", web.name, "from-pod")) for r in forward)
    assert all(ends(r) == (db.name, "in-pod", ("default", web.name, "from-pod")) for r in closed)
    # --pod web: the same FORWARD drops are web's, db at the other end; db's own drops are not web's.
    forward, closed, outside = flows(watch(netdrop, node, "--pod", web.name), node)
    assert len(forward) == N and closed == [] and outside == []
    assert all(ends(r) == (web.name, "from-pod", ("default", db.name, "to-pod")) for r in forward)
