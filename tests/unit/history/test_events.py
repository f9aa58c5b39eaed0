"""EventRing: the newest records within a byte budget, found by their own kernel time."""

import gc
import tracemalloc

from tracer.history.events import EventRing, record_bytes
from tracer.kernel.decode import Decoder
from tracer.kernel.facts import Kallsyms

from .records import TCP_HEADERS, UDP_HEADERS, now_ns, record

S = 1_000_000_000


def ring(budget: int = 1 << 20) -> EventRing:
    return EventRing(budget, mono_to_wall=1_000_000.0)


def test_since_gives_the_records_dropped_at_or_after_t_in_the_order_polled():
    r = ring()
    t0 = now_ns()
    first = [record(t0 + i * S) for i in range(3)]             # 0 s, 1 s, 2 s
    # A poll's records are in ring order, not time order: CPUs reserve their slots in any order.
    second = [record(t0 + 4 * S), record(t0 + 3 * S), record(t0 + 5 * S)]
    r.record(first)
    r.record(second)
    at = r.mono_to_wall + t0 / S
    assert r.since(at + 3) == second
    assert r.since(at + 3.5) == [second[0], second[2]]
    assert r.since(at + 2) == [first[2], *second]
    assert r.since(at) == first + second
    assert r.since(at - 100) == first + second
    assert r.since(at + 5 + 1e-6) == []
    assert len(r) == 6 and r.evicted == 0


def test_a_record_dropped_before_a_later_poll_is_found_by_its_own_time():
    # A record polled late (the reader was behind) is still before t: its time is the drop's.
    r = ring()
    t0 = now_ns()
    r.record([record(t0 + 10 * S)])
    late = record(t0 + 1 * S)
    r.record([late])
    at = r.mono_to_wall + t0 / S
    assert r.since(at + 5) == [record(t0 + 10 * S)]
    assert r.since(at) == [record(t0 + 10 * S), late]


def test_the_budget_holds_and_the_oldest_go_first():
    budget = 100_000
    r = ring(budget)
    t0 = now_ns()
    polled = [[record(t0 + (b * 10 + i) * 1000, UDP_HEADERS if i % 2 else TCP_HEADERS, i) for i in range(10)]
              for b in range(200)]
    for batch in polled:
        r.record(batch)
        assert r.bytes <= budget
    flat = [rec for batch in polled for rec in batch]
    kept = r.since(0)
    assert len(kept) == len(r) and r.evicted == len(flat) - len(kept)
    assert kept == flat[-len(kept):]             # the newest, in order
    # Nearly the whole budget is used: at most one batch's worth is left free.
    assert budget - r.bytes < 10 * max(map(record_bytes, flat)) + 200
    # From its reach on it holds everything; just before it, not.
    assert r.since(r.reach) == kept
    assert r.oldest is not None and r.oldest >= r.reach


def test_before_anything_is_let_go_it_reaches_back_to_when_it_was_made():
    r = ring()
    t0 = now_ns()
    r.record([record(t0 + S)])
    assert r.reach <= r.mono_to_wall + t0 / S


def test_one_poll_over_the_whole_budget_keeps_its_newest_records():
    batch = [record(now_ns() + i * 1000) for i in range(1000)]
    r = ring(20_000)
    r.record(batch)
    kept = r.since(0)
    assert 0 < len(kept) < 1000 and kept == batch[-len(kept):]
    assert r.bytes <= 20_000 and r.evicted == 1000 - len(kept)
    assert r.since(r.reach) == kept


def test_records_too_short_to_hold_a_time_are_left_out():
    r = ring()
    good = record(now_ns())
    r.record([b"", b"\x01\x02", good])
    assert r.since(0) == [good] and len(r) == 1


def test_what_it_charges_is_at_least_what_python_allocates_and_not_much_more():
    """tracemalloc counts the bytes asked of the allocator; the ring charges them
    rounded up as pymalloc hands them out: never less, at most ~10 % more."""
    budget = 4 << 20
    t0 = now_ns()
    # Realistic polls: 1 to 256 records (serve reads at most 256 a tick), UDP and TCP headers.
    sizes = [1, 7, 256, 64, 200, 3, 128]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        r = ring(budget)
        n = 0
        while r.evicted == 0:
            k = sizes[n % len(sizes)]
            r.record([record(t0 + n * 1000 + i, UDP_HEADERS if i % 3 else TCP_HEADERS, i) for i in range(k)])
            n += 1
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert r.bytes <= budget
    assert traced <= r.bytes <= traced * 1.10, (traced, r.bytes)


def test_the_records_kept_decode_as_the_events_they_were():
    r = ring()
    t0 = now_ns()
    r.record([record(t0, UDP_HEADERS, 3)])
    (got,) = r.since(0)
    drop = Decoder({}, Kallsyms([], []), mono_to_wall=r.mono_to_wall).decode_record(got)
    assert drop.packet == UDP_HEADERS
    assert abs(drop.time.timestamp() - (r.mono_to_wall + t0 / S)) < 1e-5
