"""Kernels before 5.17 have no `reason` in skb:kfree_skb. The same program is
built without it (ND_HAVE_REASON=0) on this kernel, and drops are classified by
location and by the ICMP error the kernel sent."""

import dataclasses
import time

from tracer.explain import classify
from tracer.kernel import decode, loader
from tracer.kernel.facts import Kallsyms, find_tracefs, probe_kernel
from tracer.kernel.filters import Filters
from tracer.lab.cases import CASES
from tracer.lab.topology import OVERLAY_MTU


def test_classification_by_location_and_icmp(node):
    facts = probe_kernel(find_tracefs())
    old = dataclasses.replace(facts, has_reason=False, reasons={})
    inodes = node.netns_inodes()
    watched = frozenset({inodes[node.node1], inodes[node.pods["db"].netns]})
    with loader.Tracer(old, Filters(netns=watched)) as tracer:
        CASES["mtu"].play(node, 3)
        CASES["udp-closed"].play(node, 3)
        time.sleep(0.3)
        raws = tracer.poll(100)
        counts = tracer.counts()
    dec = decode.Decoder({}, Kallsyms.load(), has_reason=False)
    drops = [dec.decode(r) for r, _packet in raws]
    assert all(d.reason is None and d.reason_raw == 0 for d in drops)
    mtu = [d for d in drops if d.dst == node.pods["api"].ipv4]
    closed = [d for d in drops if d.dst == node.pods["db"].ipv4 and d.dport == 9999]
    assert len(mtu) == 3 and len(closed) == 3
    for d in mtu:
        assert d.location == "ip_forward" and d.icmp_sent == (3, 4) and d.mtu == OVERLAY_MTU
        assert classify.classify(d).category == "mtu"
    for d in closed:
        assert d.icmp_sent == (3, 3)
        assert classify.classify(d).category == "no-socket"
    # Counters key on reason 0 then: still exact per (netns, location).
    assert all(reason == 0 for (_ns, reason, _loc, _pod, _facts) in counts)
