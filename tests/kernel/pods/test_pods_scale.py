"""Pods at node scale: a simulated node with many pods, followed by events.

The node is this module's own (not the session's shared one): 120 bulk pods on
node1's bridge, each a CNI-style sandbox with its Pod object in the lab's API.
Drops are made inside a pod (UDP to a port nobody listens on, from a socket made
in its namespace) and must come out of `netdrop watch -A --json` with that pod's
name and uid: for the last pod made before netdrop started, for one made while
it watches, and for one deleted and made again under the same name.
"""

import json
import os
import socket
import time

import pytest

from tracer.lab.node import SimNode

from tracer.lab.ownership import NETNS_DIR
from tracer.lab.bulk import Pods
from tracer.node.nsexec import socket_in

PODS = 120
SENT = 5


@pytest.fixture(scope="module")
def big():
    sim = SimNode.create(prefix=f"ndp{os.getpid()}")
    try:
        bulk = Pods(sim)
        for _ in range(PODS):
            bulk.add()
        yield sim, bulk
    finally:
        sim.destroy()


def sender(pod):
    sock = socket_in(str(NETNS_DIR / pod.sandbox.netns), socket.AF_INET, socket.SOCK_DGRAM)
    assert sock is not None
    return sock


def uid_of(node, pod):
    return node.api.pods[("bulk", pod.name)]["metadata"]["uid"]


def named(nd, uid):
    """Records of nd so far that name the pod with this uid."""
    records = (json.loads(line) for line in list(nd.out_lines))
    return [r for r in records if r["pod"] and r["pod"]["uid"] == uid]


def drop_until_named(nd, node, pod, bound: float = 15.0):
    """Datagrams to a closed port of the pod's own address, from inside it, until a
    drop carries its uid; then SENT more. The bound only ends a broken test."""
    uid = uid_of(node, pod)
    with sender(pod) as sock:
        deadline = time.monotonic() + bound
        while not [r for r in named(nd, uid) if r["dport"] == 9]:
            assert time.monotonic() < deadline, f"{pod.name} never named: {''.join(nd.err_lines)}"
            sock.sendto(b"x", (pod.ipv4, 9))
            time.sleep(0.05)
        for _ in range(SENT):
            sock.sendto(b"x", (pod.ipv4, 9))


def check(records, node, pod):
    uid = uid_of(node, pod)
    inode = os.stat(NETNS_DIR / pod.sandbox.netns).st_ino
    mine = [r for r in records if r["pod"] and r["pod"]["uid"] == uid]
    # Events are sampled (the exact counts are the kernel's): at least one of them, and every one right.
    assert [r for r in mine if r["reason"] == "NO_SOCKET" and r["dport"] == 9]
    assert all(r["pod"] == {"namespace": "bulk", "name": pod.name, "uid": uid, "node": "sim-node1"} for r in mine)
    assert all(r["direction"] == "in-pod" and r["netns"] == inode for r in mine if r["dport"] == 9)
    return uid


def test_the_last_pod_one_made_while_watching_and_one_made_again_are_named(netdrop, big):
    node, bulk = big
    last = list(bulk.pods.values())[-1]
    nd = netdrop("watch", "--json", "--duration", "120", "--kubeconfig", str(node.kubeconfig),
                 "--node-netns", node.node1, "-A").wait_ready()
    drop_until_named(nd, node, last)
    new = bulk.add()                       # made while watching
    drop_until_named(nd, node, new)
    first = list(bulk.pods.values())[0]
    old_uid = uid_of(node, first)
    again = bulk.recreate(first)           # same name: a new uid, namespace and veth
    drop_until_named(nd, node, again)
    nd.stop()
    assert nd.proc.returncode == 0, nd.stderr
    records = nd.records()
    check(records, node, last)
    check(records, node, new)
    assert check(records, node, again) != old_uid
    assert f"{PODS + 3} pods on node sim-node1" in nd.stderr     # the seed pods too, hostNetwork left out
