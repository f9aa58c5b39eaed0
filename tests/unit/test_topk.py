"""Space-Saving heavy hitters: bounded memory, exact while small, heavy keys kept with honest errors."""

import collections
import random

from hypothesis import given
from hypothesis import strategies as st

from tracer.topk import SpaceSaving


def test_exact_while_no_more_keys_than_capacity():
    ss: SpaceSaving[str, str] = SpaceSaving(capacity=3)
    for key in "abacabaa":
        ss.add(key, lambda: "v")
    assert ss.exact and len(ss) == 3
    assert [(h.key, h.count, h.error) for h in ss.top(3)] == [("a", 5, 0), ("b", 2, 0), ("c", 1, 0)]


def test_a_million_distinct_keys_stay_bounded_and_the_heavy_key_stays_on_top():
    capacity = 1000
    ss: SpaceSaving[int, None] = SpaceSaving(capacity)
    heavy, heavy_true = -1, 0
    for i in range(1_000_000):
        ss.add(i, lambda: None)             # a new source port per datagram
        if i % 20 == 0:
            ss.add(heavy, lambda: None)     # one flow carries 1 in 21 of the events
            heavy_true += 1
        if i % 100_000 == 0:
            assert len(ss) <= capacity
    assert len(ss) == capacity and not ss.exact
    top = ss.top(1)[0]
    assert top.key == heavy
    assert top.count - top.error <= heavy_true <= top.count
    # The error is bounded by the stream's length over the capacity.
    assert top.error <= (1_000_000 + heavy_true) // capacity


def test_the_value_is_made_once_per_counter_and_handed_back():
    ss: SpaceSaving[str, list[int]] = SpaceSaving(capacity=1)
    first = ss.add("a", list)
    first.append(1)
    assert ss.add("a", list) is first
    taken = ss.add("b", list)              # "b" takes over "a"'s counter with a fresh value
    assert taken == [] and "a" not in ss and "b" in ss
    (b,) = ss.top(5)
    assert (b.key, b.count, b.error) == ("b", 3, 2)


@given(st.lists(st.integers(min_value=0, max_value=40), max_size=400), st.integers(min_value=1, max_value=16))
def test_space_saving_guarantees_hold_for_any_stream(stream, capacity):
    ss: SpaceSaving[int, None] = SpaceSaving(capacity)
    for key in stream:
        ss.add(key, lambda: None)
    truth = collections.Counter(stream)
    assert len(ss) <= capacity
    assert ss.exact == (len(truth) <= capacity)
    kept = ss.top(capacity)
    assert sum(h.count for h in kept) == len(stream)       # every addition counted once
    for h in kept:
        assert h.count - h.error <= truth[h.key] <= h.count
    for key, n in truth.items():
        if n > len(stream) / capacity:
            assert key in ss                                # a frequent key is never lost
    if ss.exact:
        assert {h.key: h.count for h in kept} == dict(truth)


def test_random_order_keeps_the_top_in_order():
    rng = random.Random(8)
    stream = [k for k, n in (("x", 500), ("y", 300), ("z", 200)) for _ in range(n)]
    stream += [f"noise{i}" for i in range(5000)]
    rng.shuffle(stream)
    ss: SpaceSaving[str, None] = SpaceSaving(50)
    for key in stream:
        ss.add(key, lambda: None)
    assert [h.key for h in ss.top(3)] == ["x", "y", "z"]
