from tracer.groups import Groups
from tracer.kernel import decode, facts


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


def test_counter_only_groups_are_benign_by_reason_and_location():
    g = Groups(decode.Decoder({3: "NO_SOCKET", 77: "QUEUE_PURGE"},
                              facts.Kallsyms([0x1000, 0x2000], ["__udp4_lib_rcv", "skb_queue_purge_reason"])))
    g.update_counts({(1, 77, 0x2000, 0, 0): 4, (1, 3, 0x1000, 0, 0): 4}, now=1.0)
    assert {r.reason: r.benign for r in g.rows()} == {"QUEUE_PURGE": True, "NO_SOCKET": False}


def test_snapshot_is_a_copy_the_event_loop_does_not_change():
    g = groups()
    key = (1, 3, 0x1010, 0, 0)
    g.update_counts({key: 5}, now=1.0)
    snap = g.snapshot()
    g.update_counts({key: 50}, now=2.0)
    assert snap[0].count == 5 and g.groups[key].count == 50 and snap[0].key == key
