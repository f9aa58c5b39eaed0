"""watch --json and events.jsonl: LineEncoder writes exactly what json.dumps
writes of drop_record(), however its memo of the unchanging parts is hit."""

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.explain import classify
from tracer.explain.verdict import Verdict
from tracer.kernel import decode, event, facts
from tracer.pods.attribute import NO_POD, Attribution, PodRef
from tracer.sinks import jsonout

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
DECODER = decode.Decoder(facts.reasons_from_format((GOLDEN / "kfree_skb.format").read_text()),
                         facts.Kallsyms.load(GOLDEN / "kallsyms"), mono_to_wall=0.0)
DROPS = [DECODER.decode(event.NdEvent.from_buffer_copy(bytes.fromhex(json.loads(line)["raw_hex"])))
         for line in (GOLDEN / "events.jsonl").read_text().splitlines()]


def dumped(drop, verdict, who=NO_POD) -> str:
    return json.dumps(jsonout.drop_record(drop, verdict, who), separators=(",", ":")) + "\n"


texts = st.text(max_size=12) | st.sampled_from(["eth0", "\x1b[2J", "\u202eevil", "\udcff", '"\\', "\x9b31m"])
maybe_text = st.none() | texts
ports = st.none() | st.integers(0, 65535)
times = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1),
                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))]) | st.none())
pods = st.none() | st.builds(PodRef, maybe_text, maybe_text, maybe_text, maybe_text, st.booleans(), st.booleans())
attributions = st.builds(Attribution, pods, st.sampled_from([None, "in-pod", "from-pod", "to-pod"]), pods,
                         st.sampled_from([None, "from-pod", "to-pod"]))
verdicts = st.builds(Verdict, st.sampled_from(["mtu", "netfilter", "no-socket"]), texts,
                     st.none() | st.dictionaries(texts, st.integers() | texts, max_size=3), st.booleans())


@st.composite
def drops(draw):
    base = draw(st.sampled_from(DROPS))
    return dataclasses.replace(
        base, time=draw(times), src=draw(maybe_text), dst=draw(maybe_text), sport=draw(ports), dport=draw(ports),
        len=draw(st.integers(0, 1 << 20)), ifname=draw(maybe_text), mtu=draw(st.none() | st.integers(0, 9000)),
        conntrack=draw(st.sampled_from([None, "none", "new", "established"])))


@settings(max_examples=300)
@given(st.lists(st.tuples(drops(), st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=20),
       st.lists(verdicts, min_size=3, max_size=3), st.lists(attributions, min_size=3, max_size=3))
def test_every_line_is_what_json_dumps_writes(stream, vs, ws):
    # One encoder for the whole stream, verdicts and attributions shared between
    # drops (as the classifier and the pod index hand them out): the memo is hit
    # with other flows, times and devices, and must never give another drop's line.
    line = jsonout.LineEncoder().line
    for drop, v, w in stream:
        assert line(drop, vs[v], ws[w]) == dumped(drop, vs[v], ws[w])


def test_a_storm_of_one_group_reuses_the_encoded_parts_and_stays_exact():
    drop, encoder = DROPS[0], jsonout.LineEncoder()
    verdict, who = classify.classify(drop), Attribution(PodRef("shop", "db-0", "u1", "n1"), "in-pod")
    t0 = datetime(2026, 11, 22, 8, 0, 59, 999_999, tzinfo=UTC)
    for i in range(3000):
        d = dataclasses.replace(drop, time=t0 + timedelta(microseconds=i * 7), sport=1024 + i, len=100 + i % 5)
        assert encoder.line(d, verdict, who) == dumped(d, verdict, who)
    assert len(encoder._parts) == 1 and len(encoder._seconds) == 2


def test_the_memo_stays_bounded():
    encoder = jsonout.LineEncoder()
    for i in range(jsonout._MEMO_ENTRIES + 10):
        d = dataclasses.replace(DROPS[0], netns=i, time=datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=i))
        encoder.line(d, Verdict("x", "y"))
    assert len(encoder._parts) <= jsonout._MEMO_ENTRIES and len(encoder._seconds) <= jsonout._MEMO_ENTRIES
