"""FlightRecorder: a capture's window, events and counts starting at the same counter edge; serve's flags."""

import pytest

from tracer.cli import parse
from tracer.errors import UserError
from tracer.history.recorder import FlightRecorder
from tracer.kernel.loader import Count

from .records import now_ns, record

S = 1_000_000_000
A = (4026532001, 2, 0xFFFFFFFF81A0B0C0, 5, 0x81)


def test_a_window_starts_at_the_edge_with_its_counters_and_the_events_from_there():
    fr = FlightRecorder(mono_to_wall=1_000_000.0)
    t0 = now_ns()
    wall = fr.mono_to_wall + t0 / S
    fr.tick({A: Count(10, 1000)}, wall)
    early = [record(t0 + 1 * S), record(t0 + 2 * S)]
    fr.record(early)
    fr.tick({A: Count(12, 1200)}, wall + 5)
    late = [record(t0 + 6 * S), record(t0 + 9 * S)]
    fr.record(late)
    w = fr.window(wall + 7)
    assert w is not None
    assert (w.start, w.cut) == (wall + 5, False)
    assert w.records == late and w.events_from == w.start
    assert w.counts({A: Count(15, 1500)}) == {A: Count(3, 300)}
    # Before the first edge: cut to it; the events before it are not the window's.
    w = fr.window(wall - 60)
    assert w is not None and w.cut and w.start == wall and w.records == early + late


def test_a_window_reaching_back_before_the_load_counts_every_drop_since_the_load():
    """serve's agent just started: drops made before its first reading are the capture's too (the
    counters were all zero at the load), not hidden in the baseline of its first edge."""
    fr = FlightRecorder(mono_to_wall=1_000_000.0, loaded=100.0)
    fr.tick({A: Count(6, 600)}, 1_000_100.3)        # the first reading, 6 drops after the load
    w = fr.window(1_000_040.0)                       # a capture created now, since 1m
    assert w is not None and w.cut and w.start == 1_000_100.0
    assert w.counts({A: Count(9, 900)}) == {A: Count(9, 900)}
    # Without the load's time the first reading is the first edge: its 6 drops are lost.
    old = FlightRecorder(mono_to_wall=1_000_000.0)
    old.tick({A: Count(6, 600)}, 1_000_100.3)
    w = old.window(1_000_040.0)
    assert w is not None and w.counts({A: Count(9, 900)}) == {A: Count(3, 300)}


def test_no_window_before_the_first_counter_reading():
    assert FlightRecorder().window(0.0) is None


def test_a_window_says_when_the_ring_had_let_events_go():
    fr = FlightRecorder(events_budget=4096, mono_to_wall=1_000_000.0)
    t0 = now_ns()
    wall = fr.mono_to_wall + t0 / S
    fr.tick({}, wall)
    for i in range(100):
        fr.record([record(t0 + i * S // 10)])
    w = fr.window(wall)
    assert w is not None and w.start == wall
    assert w.events_from > w.start and fr.events.evicted > 0
    assert w.records == fr.events.since(w.events_from)


def test_the_recorder_keeps_two_hours_at_most():
    with pytest.raises(ValueError):
        FlightRecorder(keep=2 * 3600.0 + 1)


def test_serves_recorder_flags():
    opts = parse(["serve", "--record-rate", "500", "--record-budget", "8", "--history", "1h"])
    assert (opts.recorder.rate, opts.recorder.budget, opts.recorder.history) == (500, 8 << 20, 3600.0)
    opts = parse(["serve"])
    assert (opts.recorder.rate, opts.recorder.budget, opts.recorder.history) == (200, 32 << 20, 1800.0)
    for bad in (["--history", "121m"], ["--record-budget", "0"], ["--record-rate", "0"], ["--history", "x"]):
        with pytest.raises(UserError):
            parse(["serve", *bad])
