"""CounterHistory: the counters at any edge of the last while, from the changes kept."""

import gc
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.history.counts import CounterHistory
from tracer.history.recorder import Window
from tracer.kernel.loader import Count

A = (4026532001, 2, 0xFFFFFFFF81A0B0C0, 5, 0x81)
B = (4026532001, 5, 0xFFFFFFFF81A0B000, 0, 0x81)
C = (4026532002, 77, 0xFFFFFFFF81000000, 9, 0)


def window(h: CounterHistory, t: float) -> tuple[float, dict]:
    got = h.at(t)
    assert got is not None
    return got


def since(h: CounterHistory, t: float, now: dict) -> dict:
    """What a capture from t counts: the counters now less those at the edge."""
    edge, base = window(h, t)
    return Window(asked=t, start=edge, cut=edge > t, baseline=base, records=[], events_from=edge).counts(now)


def test_the_edge_is_the_latest_reading_at_or_before_t():
    h = CounterHistory(interval=5, keep=600)
    h.tick({A: Count(1, 100)}, 100.0)
    h.tick({A: Count(3, 300), B: Count(1, 60)}, 105.0)
    h.tick({A: Count(3, 300), B: Count(4, 240)}, 110.0)
    assert window(h, 105.0) == (105.0, {A: Count(3, 300), B: Count(1, 60)})
    assert window(h, 109.9) == (105.0, {A: Count(3, 300), B: Count(1, 60)})
    assert window(h, 1e9) == (110.0, {A: Count(3, 300), B: Count(4, 240)})
    assert window(h, 100.0) == (100.0, {A: Count(1, 100)})


def test_before_the_first_reading_the_window_is_cut_to_it():
    h = CounterHistory()
    assert h.at(50.0) is None
    h.tick({A: Count(7, 700)}, 100.0)
    edge, base = window(h, 40.0)
    assert edge == 100.0 > 40.0 and base == {A: Count(7, 700)}
    # What was counted before the first reading is not the capture's: only what came after.
    assert since(h, 40.0, {A: Count(9, 900)}) == {A: Count(2, 200)}


def test_a_key_first_seen_after_t_counts_in_full():
    h = CounterHistory()
    h.tick({A: Count(1, 100)}, 100.0)
    h.tick({A: Count(1, 100), C: Count(5, 500)}, 105.0)
    assert since(h, 102.0, {A: Count(2, 200), C: Count(6, 600), B: Count(3, 30)}) == {
        A: Count(1, 100), C: Count(6, 600), B: Count(3, 30)}
    assert since(h, 106.0, {A: Count(2, 200), C: Count(6, 600)}) == {A: Count(1, 100), C: Count(1, 100)}


def test_a_key_missing_from_a_reading_is_unchanged_not_gone():
    # The per-CPU slot read twice may leave a key out of one reading (Tracer._slot_counts).
    h = CounterHistory()
    h.tick({A: Count(4, 400), B: Count(1, 10)}, 100.0)
    h.tick({B: Count(2, 20)}, 105.0)
    h.tick({A: Count(6, 600), B: Count(2, 20)}, 110.0)
    assert window(h, 105.0)[1] == {A: Count(4, 400), B: Count(2, 20)}
    assert window(h, 110.0)[1] == {A: Count(6, 600), B: Count(2, 20)}


def test_edges_older_than_keep_go_but_the_one_answering_for_keep_ago_stays():
    h = CounterHistory(interval=5, keep=60)
    for i in range(100):
        h.tick({A: Count(i, i * 10)}, 1000.0 + 5 * i)     # last edge at 1495
    assert h.oldest == 1435.0 and len(h) == 13
    assert window(h, 1495.0 - 60) == (1435.0, {A: Count(87, 870)})
    assert window(h, 1000.0)[0] == 1435.0      # cut


def test_the_budget_holds_and_the_oldest_edges_go_first():
    keys = [(4026532000 + k, 2, 0xFFFFFFFF81000000 + k, k, 0) for k in range(300)]
    h = CounterHistory(interval=5, keep=3600, budget=150_000)
    for i in range(200):
        h.tick({k: Count(i * (j + 1), i * (j + 1) * 64) for j, k in enumerate(keys)}, 5.0 * i)
        assert h.bytes <= 150_000
    assert 1 < len(h) < 200
    oldest = h.oldest
    assert oldest is not None and oldest > 0
    # What is kept is still exact.
    edge, base = window(h, oldest + 7)
    i = int(edge // 5)
    assert base == {k: Count(i * (j + 1), i * (j + 1) * 64) for j, k in enumerate(keys) if i}


def test_what_it_charges_is_at_least_what_python_allocates():
    def reading(i: int) -> dict:
        # Every reading's keys are objects of their own, as Tracer.counts() makes them:
        # the history keeps those of the first reading that had them.
        return {(4026532000 + k, 2, 0xFFFFFFFF81000000 + k * 64, k << 2 | 1, 0x81): Count(i * 3 + k, (i * 3 + k) * 1500)
                for k in range(2000)}

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        h = CounterHistory()
        for i in range(1, 60):
            h.tick(reading(i), 5.0 * i)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert traced <= h.bytes <= traced * 1.25, (traced, h.bytes)


@st.composite
def histories(draw):
    """Readings of monotonic counters (new keys appearing as they go) at edges
    5 s apart or more, a budget from tiny to ample, and times to start from."""
    nkeys = draw(st.integers(1, 8))
    keys = [(4026532000 + k, k % 3, 0xFFFFFFFF81000000 + k, k, 0) for k in range(nkeys)]
    truth: list[tuple[float, dict]] = []
    counts: dict = {}
    t = draw(st.floats(0, 1e6, allow_nan=False))
    for _ in range(draw(st.integers(1, 40))):
        t += draw(st.sampled_from([5.0, 5.0, 5.0, 5.001, 10.0, 37.5]))
        counts = dict(counts)
        for k in draw(st.lists(st.sampled_from(keys), max_size=nkeys)):
            was = counts.get(k, Count(0, 0))
            p = draw(st.integers(1, 2**40))
            counts[k] = Count(was.packets + p, was.bytes + p * draw(st.integers(1, 9000)))
        truth.append((t, counts))
    budget = draw(st.sampled_from([1, 2_000, 20_000, 10**9]))
    keep = draw(st.sampled_from([30.0, 300.0, 7200.0]))
    asks = draw(st.lists(st.floats(truth[0][0] - 50, t + 50, allow_nan=False), min_size=1, max_size=5))
    extra = {k: Count(c.packets + 1, c.bytes + 1) for k, c in counts.items()}
    return truth, budget, keep, asks, extra


@settings(max_examples=300, deadline=None)
@given(histories())
def test_a_windows_counts_are_the_true_counters_difference_at_its_edge(case):
    truth, budget, keep, asks, extra = case
    h = CounterHistory(interval=5, keep=keep, budget=budget)
    for t, reading in truth:
        h.tick(reading, t)
    at = dict(truth)
    now = {**truth[-1][1], **extra}
    for t in asks:
        edge, base = window(h, t)
        assert edge in at                                   # on an edge read
        assert edge <= t or edge == h.oldest                # at or before t, or the window is cut
        if edge <= t:
            assert not any(e > edge and e <= t for e in at if e >= h.oldest)   # the latest such edge kept
        assert base == {k: c for k, c in at[edge].items() if c != Count(0, 0)}
        expected = {}
        for k, c in now.items():
            b = at[edge].get(k, Count(0, 0))
            if c != b:
                expected[k] = Count(c.packets - b.packets, c.bytes - b.bytes)
        assert since(h, t, now) == expected
