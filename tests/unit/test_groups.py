from tracer.groups import Groups
from tracer.kernel import decode, event, facts, pktfacts


def groups() -> Groups:
    return Groups(decode.Decoder({3: "NO_SOCKET"}, facts.Kallsyms([0x1000], ["__udp4_lib_rcv"])))


def test_counts_are_the_kernels_and_rates_average_over_the_window():
    g = groups()
    key = (7, 3, 0x1010, 0, 0)
    g.update_counts({key: 0}, now=0.0)
    for t in range(1, 11):                      # 100 drops/s for 10 s
        g.update_counts({key: 100 * t}, now=float(t))
    row = g.rows()[0]
    assert row.count == 1000 and row.rate == 100.0
    assert (row.reason, row.location, row.category) == ("NO_SOCKET", "__udp4_lib_rcv", "no-socket")
    for t in range(11, 17):                     # then nothing for 6 s
        g.update_counts({key: 1000}, now=float(t))
    assert g.rows()[0].rate == 0.0 and g.total == 1000


def test_rows_sort_by_count():
    g = groups()
    g.update_counts({(1, 3, 0x1000, 0, 0): 5, (2, 3, 0x1000, 0, 0): 50}, now=1.0)
    assert [r.netns for r in g.rows()] == [2, 1]


def test_rows_rank_by_recent_rate_then_count():
    g = groups()
    a, b, c = (1, 3, 0x1000, 0, 0), (2, 3, 0x1000, 0, 0), (3, 3, 0x1000, 0, 0)
    g.update_counts({a: 1000, b: 10, c: 5}, now=0.0)
    g.update_counts({a: 1000, b: 30, c: 25}, now=2.0)         # a: most drops, none lately; b, c: 10/s
    assert [r.netns for r in g.rows()] == [2, 3, 1]
    assert [r.netns for r in g.rows("count")] == [1, 2, 3]


def test_counter_only_groups_are_benign_by_reason_location_and_packet():
    """Kernel keys differing only in facts that do not change the answer add into one group;
    one place with a benign and a real packet is two groups, and only they."""
    g = Groups(decode.Decoder({2: "NOT_SPECIFIED", 3: "NO_SOCKET", 77: "QUEUE_PURGE"},
                              facts.Kallsyms([0x1000, 0x2000], ["__udp4_lib_rcv", "skb_queue_purge_reason"])))
    netlink = pktfacts.make(pktfacts.PACKET_HOST, event.ND_DST_NOT_IP)
    bcast = pktfacts.make(pktfacts.PACKET_BROADCAST, event.ND_DST_BROADCAST)
    mcast = pktfacts.make(pktfacts.PACKET_MULTICAST, event.ND_DST_MULTICAST)
    ours = pktfacts.make(pktfacts.PACKET_HOST)
    g.update_counts({(1, 77, 0x2000, 0, netlink): 4, (1, 3, 0x1000, 0, ours): 4, (1, 3, 0x1000, 0, bcast): 1,
                     (1, 2, 0x1010, 0, bcast): 5, (1, 2, 0x1010, 0, mcast): 6, (1, 2, 0x1010, 0, ours): 25,
                     (1, 2, 0x1010, 0, 0): 2}, now=1.0)
    rows = {(r.reason, r.benign): r.count for r in g.rows()}
    assert rows == {("QUEUE_PURGE", True): 4, ("NO_SOCKET", False): 5,
                    ("NOT_SPECIFIED", True): 11, ("NOT_SPECIFIED", False): 27}
    # Unicast to our address at UDP's no-socket path, no event yet: an IPsec refusal.
    assert {(r.reason, r.benign): r.category for r in g.rows()}[("NOT_SPECIFIED", False)] == "ipsec"


def test_snapshot_is_a_copy_the_event_loop_does_not_change():
    g = groups()
    key = (1, 3, 0x1010, 0, 0)
    g.update_counts({key: 5}, now=1.0)
    snap = g.snapshot()
    g.update_counts({key: 50}, now=2.0)
    assert snap[0].count == 5 and g.groups[key].count == 50 and snap[0].key == key
