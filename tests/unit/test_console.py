"""The live console, rendered into a string as a user would read it."""

import json
import re
from pathlib import Path

from rich.console import Console

from tracer.explain import classify
from tracer.groups import Groups
from tracer.kernel import decode, event, facts
from tracer.kernel.loader import Hook, Stats
from tracer.sinks import console

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def golden_groups() -> Groups:
    reasons = facts.reasons_from_format((GOLDEN / "kfree_skb.format").read_text())
    dec = decode.Decoder(reasons, facts.Kallsyms.load(GOLDEN / "kallsyms"), mono_to_wall=0.0)
    groups = Groups(dec)
    counts = {}
    for n, line in enumerate((GOLDEN / "events.jsonl").read_text().splitlines()):
        raw = event.NdEvent.from_buffer_copy(bytes.fromhex(json.loads(line)["raw_hex"]))
        drop = dec.decode(raw)
        groups.add_event(drop, classify.classify(drop))
        counts[(raw.netns, raw.reason_raw, raw.location_raw, raw.pod_raw)] = 10 * (n + 1)
    groups.update_counts({k: 0 for k in counts}, now=0.0)
    groups.update_counts(counts, now=2.0)
    return groups


def render_text(groups, view, width=200) -> str:
    con = Console(record=True, width=width, color_system=None)
    con.print(console.render(groups, view))
    return con.export_text()


def test_console_shows_groups_counts_rates_and_evidence():
    groups = golden_groups()
    view = console.View(
        hooks=[Hook("tracepoint skb:kfree_skb", True), Hook("kprobe", False, "unavailable")],
        filters=["netns node1 (4026532177)"], netns_names={4026532177: "node1", 4026532461: "pod-db"},
        stats=Stats(matched=310, events=6, lost=204, sampled_out=100), elapsed=12, remaining=18)
    text = render_text(groups, view)
    # The MTU group: counted drops, rate, flow, the route's MTU and the why.
    assert "PKT_TOO_BIG" in text and "ip_forward" in text and "mtu" in text
    assert "10.244.1.10:" in text and "-> 10.244.2.10:5000 udp len 1500 mtu 1450 on cni0" in text
    assert "larger than the MTU 1450 of flannel.1" in text
    # Counts come from the counters: the 6th group has 60 drops at 30/s.
    row = next(line for line in text.splitlines() if "no-route" in line and "│" in line)
    assert "60" in row and "30" in row
    assert "node1" in text and "pod-db" in text
    assert "204 events lost" in text and "310 drops counted" in text
    assert "100 sampled out" in text
    assert "time left 18s" in text
    assert "✗ kprobe (unavailable)" in text
    assert "filters: netns node1 (4026532177)" in text
    assert "Recent drops" in text and "NETFILTER_DROP" in text
    # IPv6 endpoints are shown, not eaten as markup.
    assert re.search(r"\[fd00:200::2\]:\d+ -> \[fd00:10:244:1::b\]:9999 udp", text.split("Recent drops")[1])


def test_group_without_events_says_so():
    reasons = facts.reasons_from_format((GOLDEN / "kfree_skb.format").read_text())
    groups = Groups(decode.Decoder(reasons, facts.Kallsyms.load(GOLDEN / "kallsyms")))
    groups.update_counts({(7, 3, 0xffffffff82046290 + 0x10, 0): 5}, now=1.0)
    text = render_text(groups, console.View())
    assert "no event delivered for this group yet" in text
    assert "no-socket" in text and "__udp4_lib_rcv" in text
    assert "filters: none" in text


def test_empty_console():
    reasons = {}
    groups = Groups(decode.Decoder(reasons, facts.Kallsyms([], [])))
    assert "no drops yet" in render_text(groups, console.View())


def test_narrow_terminal_gets_the_compact_table_with_nothing_cut():
    groups = golden_groups()
    view = console.View(netns_names={4026532461: "cni-35f3813a-b731-4b9a-8e6d-b0adb9b87b4c"}, width=80)
    text = render_text(groups, view, width=80)
    assert "why · where" in text
    for word in ("PKT_TOO_BIG", "NETFILTER_DROP", "IP_INNOROUTES", "__udp6_lib_rcv", "nft_do_chain",
                 "no-socket", "30/s"):
        assert word in text, word
    assert max(len(line) for line in text.splitlines()) <= 80
