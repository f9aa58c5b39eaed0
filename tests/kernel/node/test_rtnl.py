"""rtnetlink through pyroute2 (tracer.pods.rtnl) against the real kernel: two namespaces
this test makes, a "node" and a "pod" wired by a veth, with what a pod workload may put
in its own namespace (an interface name that is not UTF-8, other kinds of links,
addresses of every scope)."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from tracer.lab.shell import run
from tracer.node import rtnl
from tracer.node.events import NodeEvents

HOSTILE = b"p\xff\xfe\x01x"     # an interface name may be any bytes but '/', ':' and whitespace (dev_valid_name)


@pytest.fixture
def pair():
    node, pod = f"ndrn{os.getpid()}", f"ndrp{os.getpid()}"
    for ns in (node, pod):
        run("ip", "netns", "add", ns)
    try:
        run("ip", "-n", node, "link", "add", "vethhost", "type", "veth", "peer", "eth0", "netns", pod)
        for ns, dev in ((node, "vethhost"), (pod, "eth0"), (pod, "lo")):
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", pod, "addr", "add", "10.250.0.2/24", "dev", "eth0")
        run("ip", "-n", pod, "addr", "add", "fd00:250::2/64", "dev", "eth0", "nodad")
        run("ip", "-n", pod, "addr", "add", "169.254.7.7/16", "dev", "eth0")
        # What the workload adds: a veth of its own with a name that is not text, a bridge.
        subprocess.run([b"ip", b"-n", pod.encode(), b"link", b"add", HOSTILE, b"type", b"veth", b"peer", b"inner"],
                       check=True, capture_output=True, timeout=10)
        run("ip", "-n", pod, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", pod, "addr", "add", "10.99.0.1/32", "dev", "br0")
        yield f"/run/netns/{node}", f"/run/netns/{pod}"
    finally:
        for ns in (node, pod):
            run("ip", "netns", "del", ns, check=False)


def test_a_namespace_reads_as_its_veths_and_global_addresses(pair):
    node_path, pod_path = pair
    got = rtnl.read_netns(pod_path)
    assert got is not None
    ips, veths = got
    assert ips == ("10.250.0.2", "10.99.0.1", "fd00:250::2")        # no 127/8, ::1, 169.254/16, fe80::
    by_name = {v[0]: (i, v) for i, v in veths.items()}
    assert set(by_name) == {"eth0", "inner", HOSTILE.decode("utf-8", "replace")}   # veths only: no lo, no br0
    with rtnl.Rtnl(node_path) as node:
        nsid = node.nsid(pod_path)
        node_veths = rtnl.veths_of(node.links("veth"))
    assert nsid is not None and nsid >= 0
    eth0_index, (_, peer, peer_nsid) = by_name["eth0"]
    assert node_veths[peer][0] == "vethhost" and node_veths[peer][1] == eth0_index
    assert node_veths[peer][2] == nsid and peer_nsid is not None


def test_a_namespace_gone_reads_as_none(pair):
    _, pod_path = pair
    assert rtnl.read_netns(pod_path + "-never-made") is None


def test_node_events_name_the_veth_that_came_and_went(pair):
    node_path, pod_path = pair
    events = NodeEvents(node_path, run_dir=Path("/run/netns"))
    try:
        node_ns, pod_ns = node_path.rsplit("/", 1)[1], pod_path.rsplit("/", 1)[1]
        run("ip", "-n", node_ns, "link", "add", "vethnew", "type", "veth", "peer", "eth1", "netns", pod_ns)
        with rtnl.Rtnl(node_path) as node:
            nsid = node.nsid(pod_path)
            index = next(i for i, v in rtnl.veths_of(node.links("veth")).items() if v[0] == "vethnew")
        deadline = time.monotonic() + 5
        changes = events.drain()
        while index not in changes.links and time.monotonic() < deadline:
            events.wait(0.2)
            more = events.drain()
            changes.links.update(more.links)
        assert changes.links[index] is not None and changes.links[index][0] == "vethnew"
        assert changes.links[index][2] == nsid
        run("ip", "-n", node_ns, "link", "del", "vethnew")
        changes = events.drain()
        while index not in changes.links and time.monotonic() < deadline:
            events.wait(0.2)
            changes.links.update(events.drain().links)
        assert changes.links[index] is None
    finally:
        events.close()


def test_each_scan_finds_the_veths_that_came_and_went(pair):
    """Between the scans that decode every veth whole, a scan decodes only the new ones:
    those still count, with the namespace they lead into."""
    from tracer.node.scan import NodeScanner
    node_path, pod_path = pair
    node_ns, pod_ns = node_path.rsplit("/", 1)[1], pod_path.rsplit("/", 1)[1]
    scanner = NodeScanner(node_path)
    try:
        scanner.scan()
        before = dict(scanner.table.node_veths)
        assert [v[0] for v in before.values()] == ["vethhost"]
        run("ip", "-n", node_ns, "link", "add", "vethmore", "type", "veth", "peer", "eth1", "netns", pod_ns)
        scanner.scan()
        with rtnl.Rtnl(node_path) as node:
            nsid = node.nsid(pod_path)
        assert {v[0]: v[2] for v in scanner.table.node_veths.values()} == {"vethhost": nsid, "vethmore": nsid}
        run("ip", "-n", node_ns, "link", "del", "vethmore")
        scanner.scan()
        assert scanner.table.node_veths == before
    finally:
        scanner.close()
