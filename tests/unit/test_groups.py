from tracer.groups import Groups
from tracer.kernel import decode, facts


def groups() -> Groups:
    return Groups(decode.Decoder({3: "NO_SOCKET"}, facts.Kallsyms([0x1000], ["__udp4_lib_rcv"])))


def test_counts_are_the_kernels_and_rates_average_over_the_window():
    g = groups()
    key = (7, 3, 0x1010, 0)
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
    g.update_counts({(1, 3, 0x1000, 0): 5, (2, 3, 0x1000, 0): 50}, now=1.0)
    assert [r.netns for r in g.rows()] == [2, 1]
