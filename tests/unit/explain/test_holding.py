"""A group's first events wait for their namespace's evidence (explain/holding.py):
the holding queue on plain data, then the event pipeline with it (watch.Pipeline),
with drops, evidence and reads made here: no kernel, no commands."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.explain import evidence as E
from tracer.explain.classify import classify, reads_evidence
from tracer.explain.holding import Holding
from tracer.groups import Groups
from tracer.kernel import decode, event
from tracer.sinks.jsonout import JsonLines
from tracer.watch import Pipeline

from ..helpers import KALLSYMS, REASONS, RECORDS, Collect, drop, record

POD_NS, SERVER_NS = 4026532001, 4026532002


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Reads:
    """The evidence reader as the holding queue and the classifier see it:
    what was asked, which reads are done (a read begins at the clock's time
    when read() is called), and the evidence each found."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.asked: list[tuple[int, float]] = []
        self.began: dict[int, float] = {}
        self.known: dict[int, E.Evidence] = {}

    def ask(self, netns: int, since: float) -> None:
        self.asked.append((netns, since))

    def answered(self, netns: int, since: float) -> bool:
        return self.began.get(netns, float("-inf")) >= since

    def read(self, netns: int, ev: E.Evidence | None = None) -> None:
        self.began[netns] = self.clock()
        if ev is not None:
            self.known[netns] = ev

    def __call__(self, d):
        return self.known.get(d.netns)


def queue(**kw: float) -> tuple[Clock, Reads, Holding[str, str]]:
    """A holding queue (kw: its bounds) on a clock and reads of the test's own."""
    clock = Clock()
    reads = Reads(clock)
    return clock, reads, Holding(reads, clock=clock, **kw)


# -- the queue ------------------------------------------------------------------

def test_held_until_the_namespace_is_read_then_out_in_order():
    clock, reads, q = queue(hold_seconds=0.5)
    assert q.hold("g", 7, "g1") == [] and q.hold("g", 7, "g2") == []
    assert reads.asked == [(7, 100.0)]            # one read asked per group, begun after its first event
    assert q.waiting("g") and q.held == 2 and "g" not in q.settled
    clock.now += 0.1
    assert q.due() == []                          # nothing read yet, the bound not reached
    reads.began[7] = 99.9                         # a read begun before the event cannot explain it
    assert q.due() == []
    reads.read(7)
    assert q.due() == ["g1", "g2"]
    assert q.held == 0 and "g" in q.settled and not q.waiting("g")
    assert q.revised() == []                      # it went out with its evidence: nothing to revise


def test_the_bound_lets_a_group_out_and_its_verdict_is_revised_once_read():
    clock, reads, q = queue(hold_seconds=0.5)
    q.hold("slow", 7, "s1")
    clock.now += 0.3
    q.hold("other", 8, "o1")
    clock.now += 0.2
    assert q.due() == ["s1"]                      # the bound, for the group waiting since 100.0 only
    assert q.waiting("other")
    clock.now += 0.29
    assert q.due() == []
    clock.now += 0.02
    assert q.due() == ["o1"]                      # its own bound: 0.5 s after 100.3
    assert q.revised() == []                      # still unread
    reads.read(7)
    assert q.revised() == ["slow"] and q.revised() == []


def test_other_groups_are_not_held_behind_a_waiting_one():
    clock, reads, q = queue()
    q.hold("a", 1, "a1")
    q.hold("b", 2, "b1")
    reads.read(2)
    assert q.due() == ["b1"] and q.waiting("a")


def test_a_full_queue_lets_the_group_waiting_longest_out():
    clock, reads, q = queue(max_held=3)
    q.hold("a", 1, "a1")
    q.hold("b", 2, "b1")
    q.hold("a", 1, "a2")
    assert q.hold("b", 2, "b2") == ["a1", "a2"]   # a's order kept; b keeps waiting
    assert q.held == 2 and "a" in q.settled
    assert q.hold("b", 2, "b3") == []
    assert q.hold("b", 2, "b4") == ["b1", "b2", "b3", "b4"]    # the newest item goes out with its own group
    reads.read(1)
    reads.read(2)
    assert sorted(q.revised()) == ["a", "b"]


def test_flush_lets_everything_out():
    clock, reads, q = queue()
    q.hold("a", 1, "a1")
    q.hold("b", 2, "b1")
    q.hold("a", 1, "a2")
    reads.read(2)
    assert q.flush() == ["a1", "a2", "b1"] and q.held == 0 and q.due() == []
    reads.read(1)
    assert q.revised() == ["a"]                   # b went out with its read; a without


def test_settled_groups_are_bounded():
    q: Holding[int, str] = Holding(Reads(Clock()), max_groups=4)
    for key in range(10):
        q.settle(key)
        assert len(q.settled) <= 4


# -- the pipeline ---------------------------------------------------------------

class Decoder:
    """Records: 8 bytes of time, then a number naming a Drop made here (as
    the kernel's records differ past their timestamp, each drop's differs
    from the one before); names for the groups the counters make."""

    def __init__(self) -> None:
        self.drops: dict[bytes, object] = {}

    def record(self, d) -> bytes:
        rec = bytes(8) + str(len(self.drops)).encode()
        self.drops[rec] = d
        return rec

    def decode_record(self, rec):
        return self.drops[rec]

    decode_again = decode_record

    def reason_name(self, raw):
        return {5: "QDISC_DROP", 3: "NO_SOCKET"}[raw]

    def location_name(self, raw):
        return {9: "__dev_queue_xmit", 8: "__udp4_lib_rcv"}[raw]


class Lines:
    def __init__(self) -> None:
        self.text: list[str] = []
        self.json = JsonLines(self)     # type: ignore[arg-type]   # a stream: write() and flush()

    def write(self, s: str) -> None:
        self.text.append(s)

    def flush(self) -> None:
        pass

    def records(self) -> list[dict]:
        return [json.loads(x) for x in self.text]


def queue_drop(n: int):
    """A packet a0 sends to a veth whose peer is down: the noop qdisc drops it."""
    return drop(reason="QDISC_DROP", reason_raw=5, location="__dev_queue_xmit", location_raw=9, netns=POD_NS,
                ifname="a0", ifindex=2, sport=40000 + n)


def no_socket_drop(n: int):
    return drop(reason="NO_SOCKET", reason_raw=3, location="__udp4_lib_rcv", location_raw=8, netns=SERVER_NS,
                ifname="b0", ifindex=3, sport=50000 + n)


PEER_DOWN = E.Evidence(POD_NS, (E.Device(2, "a0", "veth", True, False, "LOWERLAYERDOWN", peer_ifindex=3,
                                         peer_netns="pod-b"),), None, (), None)


def pipeline(clock: Clock):
    reads = Reads(clock)
    out = Lines()
    dec = Decoder()
    p = Pipeline(dec, Groups(dec), [out.json], evidence=reads, reads=reads)  # type: ignore[arg-type]
    p.holding.clock = clock
    return p, reads, out


def records(p, *drops) -> list[bytes]:
    return [p.decoder.record(d) for d in drops]


def test_the_first_line_of_a_group_carries_the_evidence():
    clock = Clock()
    p, reads, out = pipeline(clock)
    p.deliver(records(p, queue_drop(1), no_socket_drop(1), queue_drop(2)))
    # The queue drops wait for POD_NS's read; NO_SOCKET reads no evidence and passes at once.
    assert [r["reason"] for r in out.records()] == ["NO_SOCKET"]
    assert reads.asked == [(POD_NS, clock.now)]
    clock.now += 0.03
    reads.read(POD_NS, PEER_DOWN)
    p.deliver(records(p, no_socket_drop(2)))
    recs = out.records()
    assert [(r["reason"], r["sport"]) for r in recs] == [("NO_SOCKET", 50001), ("NO_SOCKET", 50002),
                                                         ("QDISC_DROP", 40001), ("QDISC_DROP", 40002)]
    first = recs[2]
    assert "a0 is UP, no carrier" in first["hint"] and "its peer, ifindex 3 in pod-b, is down" in first["hint"]
    # Later events of the group pass at once, with the same settled why.
    p.deliver(records(p, queue_drop(3)))
    assert out.records()[-1]["sport"] == 40003 and out.records()[-1]["hint"] == first["hint"]
    (g,) = [g for g in p.groups.groups.values() if g.reason == "QDISC_DROP"]
    assert g.hint == first["hint"] and g.events == 3


def test_a_group_out_by_the_bound_has_its_verdict_revised_for_the_views():
    clock = Clock()
    p, reads, out = pipeline(clock)
    p.deliver(records(p, queue_drop(1)))
    assert p.held == 1 and out.records() == []
    clock.now += 0.5                               # the namespace's read is slower than the hold
    p.deliver([])
    (line,) = out.records()
    assert "no carrier" not in line["hint"]         # what the event alone tells
    (g,) = p.groups.groups.values()
    assert g.hint == line["hint"]
    clock.now += 0.2
    reads.read(POD_NS, PEER_DOWN)
    p.revise()                                     # on the next tick
    assert "a0 is UP, no carrier" in g.hint        # the console and the summary settle on the evidence


def test_a_group_where_only_some_drops_read_evidence_holds_the_first_of_those():
    """UDP NO_SOCKET: to a closed port the event says it all; to a VXLAN port the
    hint names the VXLAN devices here. One kernel group has both."""
    clock = Clock()
    p, reads, out = pipeline(clock)

    def udp(n: int, dport: int):
        return drop(reason="NO_SOCKET", reason_raw=3, location="__udp4_lib_rcv", location_raw=8, netns=SERVER_NS,
                    dport=dport, sport=50000 + n, icmp_sent=(3, 3))

    p.deliver(records(p, udp(1, 53), udp(2, 4789), udp(3, 53)))
    assert [r["dport"] for r in out.records()] == [53]       # the overlay one waits, the next one behind it
    vx = E.Device(5, "flannel.1", "vxlan", True, True, "UNKNOWN", vxlan=E.Vxlan(1, 8472, None, None, "eth0"))
    reads.read(SERVER_NS, E.Evidence(SERVER_NS, (vx,), None, (), None))
    p.deliver(records(p, udp(4, 4789)))
    recs = out.records()
    assert [r["dport"] for r in recs] == [53, 4789, 53, 4789]
    assert "flannel.1 VNI 1 port 8472" in recs[1]["hint"] and "nodes disagree" in recs[1]["hint"]


def test_flush_at_the_end_writes_what_still_waits():
    clock = Clock()
    p, reads, out = pipeline(clock)
    p.deliver(records(p, queue_drop(1), queue_drop(2)))
    p.flush_held()
    assert [r["sport"] for r in out.records()] == [40001, 40002] and p.held == 0


def test_without_an_evidence_reader_nothing_waits():
    out = Lines()
    dec = Decoder()
    p = Pipeline(dec, Groups(dec), [out.json])    # type: ignore[arg-type]
    p.deliver(records(p, queue_drop(1)))
    assert len(out.records()) == 1 and p.held == 0


# -- the pipeline on recorded kernel records, with the storm shortcut ------------

class AnswersWhenTold:
    """A read that is done when the test says so; no evidence found (verdicts
    are then what classify() alone says, so the property compares them)."""

    def __init__(self) -> None:
        self.done = False

    def ask(self, netns: int, since: float) -> None:
        pass

    def answered(self, netns: int, since: float) -> bool:
        return self.done

    def __call__(self, d):
        return None


def _group(d) -> tuple[int, ...]:
    return (d.netns, d.reason_raw, d.location_raw, d.pod_raw)


OVERLAY = 4789      # NO_SOCKET to a VXLAN port: the one no-socket drop whose hint reads evidence

held_runs = st.lists(st.tuples(st.integers(0, len(RECORDS) - 1), st.booleans(),
                               st.sampled_from([0, 1 << 2 | event.ND_DIR_IN_POD]), st.integers(1, 5)),
                     min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(held_runs, st.integers(1, 7), st.sampled_from([1, 2, 5, 4096]), st.integers(0, 6))
def test_held_records_all_go_out_once_in_order_within_their_group(spec, batch, max_held, read_after):
    records, ts, overlay_at = [], 10**9, []
    for base, overlay, pod, repeat in spec:
        for _ in range(repeat):
            ts += 1_000_003
            raw = event.NdEvent.from_buffer_copy(record(base, ts, None, pod))
            if overlay and base == 2:           # the UDP NO_SOCKET record, to the overlay port
                raw.dport = OVERLAY
                overlay_at.append(len(records))
            records.append(bytes(raw))
    alone = decode.Decoder(REASONS, KALLSYMS, mono_to_wall=0.0)
    expected = [alone.decode_record(rec) for rec in records]
    dec = decode.Decoder(REASONS, KALLSYMS, mono_to_wall=0.0)
    reads = AnswersWhenTold()
    sink = Collect()
    p = Pipeline(dec, Groups(dec), [sink], evidence=reads, reads=reads)
    p.holding = Holding(reads, max_held=max_held, clock=lambda: 0.0)     # the bound never passes
    for n, i in enumerate(range(0, len(records), batch)):
        reads.done = n >= read_after
        p.deliver(records[i:i + batch])
        if overlay_at and i <= overlay_at[0] < i + batch and not reads.done and max_held >= len(records):
            # The first overlay drop waits for its namespace's read; what reads no evidence did not
            # (unless an earlier event of its group did: a group's order holds).
            def waited(j: int) -> bool:
                key = _group(expected[j])
                return any(reads_evidence(expected[k]) for k in range(j + 1) if _group(expected[k]) == key)

            assert expected[overlay_at[0]] not in [d for d, _, _ in sink.got]
            assert all(expected[j] in [d for d, _, _ in sink.got] for j in range(i) if not waited(j))
    p.flush_held()

    got = sorted(sink.got, key=lambda x: x[0].time)
    assert [d for d, _, _ in got] == expected                      # each once, none lost
    assert all(v == classify(d) for d, v, _ in got)
    by_group: dict[tuple[int, ...], list[object]] = {}
    for d, _, _ in sink.got:
        by_group.setdefault(_group(d), []).append(d.time)
    assert all(times == sorted(times) for times in by_group.values())
    assert p.held == 0 and p.groups.events == len(records)
