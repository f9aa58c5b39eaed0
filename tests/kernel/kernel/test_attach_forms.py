"""The drop program attached as a BTF-typed tracepoint (tp_btf, where the
kernel's BTF names the tracepoint) and as a classic tracepoint (the fallback)
must count and report the same drops alike."""

import pytest

from tracer.kernel import decode, loader, pktfacts
from tracer.kernel.facts import Kallsyms, btf_tracepoint_ids, find_tracefs, probe_kernel
from tracer.kernel.filters import Filters

from ..helpers import nstat

SENT = 300


def storm(node, tp_btf: bool):
    db = node.pods["db"]
    facts = probe_kernel(find_tracefs())
    ino = node.netns_inodes()[db.netns]
    before = nstat(db.netns, "UdpNoPorts")
    with loader.Tracer(facts, Filters(netns=frozenset({ino})),
                       loader.TracerSettings(max_event_rate=0, tp_btf=tp_btf)) as tracer:
        sent = node.traffic(db.netns, "udp", "--dst", "127.0.0.1", "--port", "9999", "--size", "100",
                            "--count", str(SENT), "--seconds", "10")
        counts = tracer.counts()
        decoder = decode.Decoder(facts.reasons, Kallsyms.load())
        events = [decoder.decode_record(r) for r in tracer.poll_records(300)]
        form = tracer.attach_form
        hooks = [h.name for h in tracer.hooks if h.attached]
    assert sent == SENT == nstat(db.netns, "UdpNoPorts") - before
    return ino, form, hooks, counts, events


def test_tp_btf_and_classic_tracepoint_count_and_report_alike(node):
    if "kfree_skb" not in btf_tracepoint_ids(["kfree_skb"]):
        pytest.skip("this kernel's BTF has no btf_trace_kfree_skb: only the classic tracepoint exists")
    seen = {}
    for tp_btf in (True, False):
        ino, form, hooks, counts, events = storm(node, tp_btf)
        assert form == ("tp_btf" if tp_btf else "tracepoint")
        assert f"{form} skb:kfree_skb" in hooks and f"{form} icmp:icmp_send" in hooks
        # The pod's namespace may drop a packet of its own meanwhile (IPv6 multicast): the storm's key only.
        no_socket = next(n for n, name in probe_kernel(find_tracefs()).reasons.items() if name == "NO_SOCKET")
        ours = {k: c for k, c in counts.items() if k[0] == ino and k[1] == no_socket}
        assert sum(c.packets for c in ours.values()) == SENT
        assert sum(c.bytes for c in ours.values()) == SENT * 128      # IP length: 20 + 8 + 100
        events = [e for e in events if e.dport == 9999]
        assert len(events) == SENT
        # What a user reads of each drop: where, why, the flow, and the
        # port-unreachable the kernel answered with (the icmp_send program's note).
        # And the packet facts benign is decided by (kernel/pktfacts.py), in the events and the counter key.
        seen[form] = {(e.netns, e.reason, e.location, e.proto, e.dst, e.dport, e.len, e.icmp_sent, e.ifname, e.facts)
                      for e in events}
        assert len(seen[form]) == 1
        assert next(iter(seen[form]))[3:] == ("udp", "127.0.0.1", 9999, 128, (3, 3), "lo",
                                              pktfacts.make(pktfacts.PACKET_HOST))
        assert {k[4] for k in ours} == {pktfacts.make(pktfacts.PACKET_HOST)}
    assert seen["tp_btf"] == seen["tracepoint"]


def test_a_tp_btf_program_the_kernel_refuses_says_why_in_one_line(node):
    from tracer.kernel import btfprog

    facts = probe_kernel(find_tracefs())
    with loader.Tracer(facts) as tracer:
        if tracer.attach_form != "tp_btf":
            pytest.skip("tp_btf is not used on this kernel")
        # BTF type 1 is no btf_trace_* typedef: the kernel refuses the attach target.
        with pytest.raises(btfprog.Refused) as refused:
            btfprog.load_tracing(*tracer._program("nd_kfree_skb"), "nd_kfree_skb", "tp_btf", 1)
        assert "\n" not in str(refused.value) and str(refused.value)


def test_the_direct_ring_reader_and_libbpfs_deliver_the_same_records(node):
    # netdrop reads the ring buffer through its own mappings (x86-64), else
    # through bcc (libbpf): both must hand over every record whole, here with
    # packet bytes behind each (records of a size that needs padding) and
    # batches cut at max_events.
    db = node.pods["db"]
    facts = probe_kernel(find_tracefs())
    ino = node.netns_inodes()[db.netns]
    decoder = decode.Decoder(facts.reasons, Kallsyms.load())
    seen = {}
    for direct in (True, False):
        with loader.Tracer(facts, Filters(netns=frozenset({ino})),
                           loader.TracerSettings(max_event_rate=0, snaplen=64, direct_ring=direct)) as tracer:
            sent = node.traffic(db.netns, "udp", "--dst", "127.0.0.1", "--port", "9995", "--size", "100",
                                "--count", str(SENT), "--seconds", "10")
            batches = []
            while batch := tracer.poll_records(300, 64):
                batches.append(batch)
        records = [r for b in batches for r in b]
        assert max(len(b) for b in batches) == 64
        drops = [d for d in map(decoder.decode_record, records) if d.dport == 9995]   # the storm's: see above
        assert sent == SENT == len(drops)
        # The IP and UDP headers (headers only: no payload), 28 bytes, behind every record.
        assert {len(d.packet) for d in drops} == {28}
        seen[direct] = [(d.dport, d.len, d.packet[9], d.packet[22:24]) for d in drops]
        assert seen[direct][0] == (9995, 128, 17, (9995).to_bytes(2, "big"))
    assert seen[True] == seen[False]
