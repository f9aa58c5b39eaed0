"""Golden data: raw nd_event bytes recorded from the real kernel (6.18) while
the simulated node played each case, with the decoded result a person checked."""

import json
from pathlib import Path

import pytest

from tracer.explain import classify
from tracer.kernel import decode, event, facts
from tracer.sinks import jsonout

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CASES = [json.loads(line) for line in (GOLDEN / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def decoder():
    reasons = facts.reasons_from_format((GOLDEN / "kfree_skb.format").read_text())
    return decode.Decoder(reasons, facts.Kallsyms.load(GOLDEN / "kallsyms"), mono_to_wall=0.0)


def raw(case) -> event.NdEvent:
    return event.NdEvent.from_buffer_copy(bytes.fromhex(case["raw_hex"]))


@pytest.mark.parametrize("case", CASES, ids=[c["expected"]["location"] for c in CASES])
def test_golden_event_decodes_to_checked_record(decoder, case):
    drop = decoder.decode(raw(case))
    record = jsonout.drop_record(drop, classify.classify(drop))
    hint = record.pop("hint")
    assert record.pop("pod") is None and record.pop("direction") is None and record.pop("detail") is None
    assert record == case["expected"]
    assert hint


def test_mtu_event_carries_the_route_evidence(decoder):
    case = next(c for c in CASES if c["expected"]["reason"] == "PKT_TOO_BIG")
    drop = decoder.decode(raw(case))
    assert drop.df and drop.icmp_sent == (3, 4)
    assert (drop.ifname, drop.out_ifname, drop.mtu, drop.len) == ("cni0", "flannel.1", 1450, 1500)
    hint = classify.classify(drop).hint
    for evidence in ("1500-byte", "DF", "1450", "flannel.1", "fragmentation needed"):
        assert evidence in hint


def test_kernel_without_reasons_decodes_reason_as_null(decoder):
    case = next(c for c in CASES if c["expected"]["reason"] == "PKT_TOO_BIG")
    old = decode.Decoder({}, decoder.kallsyms, has_reason=False, mono_to_wall=0.0)
    r = raw(case)
    r.reason_raw = 0
    drop = old.decode(r)
    assert drop.reason is None
    # Still an MTU drop: ip_forward plus the ICMP "fragmentation needed" it sent.
    assert classify.classify(drop).category == "mtu"


def test_unknown_reason_number_is_shown_not_guessed(decoder):
    r = raw(CASES[0])
    r.reason_raw = 4000
    assert decoder.decode(r).reason == "REASON_4000"


def test_ipv6_flow_text(decoder):
    case = next(c for c in CASES if c["expected"]["location"] == "__udp6_lib_rcv")
    assert decoder.decode(raw(case)).flow.startswith("[fd00:200::2]:")
