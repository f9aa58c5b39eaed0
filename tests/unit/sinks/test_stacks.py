"""Kernel stacks on plain data: decoding stack_id, naming frames, checking a stack
against its event, the per-group sample, and every place a person reads them."""

import io
import json
import struct
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from tracer.explain.classify import classify
from tracer.groups import STACKS_KEPT, Groups
from tracer.kernel import decode, event, facts, stacks
from tracer.kernel.loader import Hook, Stats
from tracer.pods.attribute import NO_POD
from tracer.sinks import capture, console, jsonout, stackview
from tracer.sinks.summary import build, render, schema
from tracer.sinks.keys import UiState

# A kernel of four functions; the BPF program and bpf_trace_run4 come first on
# a real stack (tests/kernel/kernel/test_stacks.py sees them), above the free function.
KALLSYMS = facts.Kallsyms([0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x6000],
                          ["bpf_trace_run4", "sk_skb_reason_drop", "__udp4_lib_rcv", "ip_protocol_deliver_rcu",
                           "ip_local_deliver_finish", "net_rx_action"])
LOCATION = 0x3123                      # the return address into __udp4_lib_rcv: kfree_skb's location
FRAMES = (0x1040, 0x2090, LOCATION, 0x40d8, 0x5081, 0x616e)
NAMED = ("__udp4_lib_rcv+0x123", "ip_protocol_deliver_rcu+0xd8", "ip_local_deliver_finish+0x81",
         "net_rx_action+0x16e")


def test_a_stack_starts_at_the_dropping_function_and_names_each_frame_with_its_offset():
    assert stacks.symbolize(KALLSYMS, FRAMES, LOCATION) == NAMED


def test_a_stack_without_its_events_location_is_another_packets_and_is_not_used():
    # The slot was taken by another stack between the event and its reading.
    assert stacks.symbolize(KALLSYMS, (0x1040, 0x2090, 0x40d8, 0x5081), LOCATION) is None


def test_frames_kallsyms_cannot_name_are_a_question_mark_never_an_address():
    frames = (LOCATION, 0x0fff, 0x6000 + stacks.MAX_OFFSET + 1)
    assert stacks.symbolize(KALLSYMS, frames, LOCATION) == ("__udp4_lib_rcv+0x123", "?", "?")


class Reader:
    """The loader's stack_frames: what the map holds for an id, reads counted."""

    def __init__(self, slots):
        self.slots, self.reads = dict(slots), 0

    def __call__(self, stack_id):
        self.reads += 1
        return self.slots.get(stack_id)


def test_symbolizer_names_each_distinct_stack_once_and_follows_a_reused_id():
    reader = Reader({7: FRAMES})
    sym = stacks.Symbolizer(KALLSYMS, reader)
    first = sym(7, LOCATION)
    assert first == NAMED and sym(7, LOCATION) is first       # the same tuple: named once
    other = (0x1040, 0x2090, LOCATION, 0x5081)
    reader.slots[7] = other                                    # the kernel reused slot 7
    assert sym(7, LOCATION) == ("__udp4_lib_rcv+0x123", "ip_local_deliver_finish+0x81")
    reader.slots[7] = (0x1040, 0x40d8)                         # now another drop site's stack
    assert sym(7, LOCATION) is None and sym.replaced == 1
    assert sym(-14, LOCATION) is None and sym(3, LOCATION) is None    # an error id; an empty slot


def test_symbolizer_memory_is_bounded():
    sym = stacks.Symbolizer(KALLSYMS, lambda i: (LOCATION, 0x4000 + i), entries=4)
    for i in range(100):
        assert sym(i, LOCATION) == ("__udp4_lib_rcv+0x123", f"ip_protocol_deliver_rcu+{i:#x}")
    assert len(sym._named) == 4


@given(st.lists(st.integers(0, 2**64 - 1), max_size=event.ND_STACK_DEPTH), st.integers(1, 2**64 - 1))
def test_any_frames_give_a_stack_from_the_location_or_none(frames, location):
    got = stacks.symbolize(KALLSYMS, tuple(frames), location)
    if location in frames:
        assert got is not None and len(got) == len(frames) - frames.index(location)
        assert all(f == "?" or "+0x" in f for f in got)
    else:
        assert got is None


def record(stack_id: int, location: int = LOCATION) -> bytes:
    raw = event.NdEvent(location_raw=location, reason_raw=3, netns=11, stack_id=stack_id)
    return bytes(raw)


def test_decoder_reads_stack_id_from_the_record_and_asks_only_for_real_ids():
    asked = []

    def resolve(stack_id, location):
        asked.append((stack_id, location))
        return NAMED
    dec = decode.Decoder({3: "NO_SOCKET"}, KALLSYMS, mono_to_wall=0.0, stacks=resolve)
    assert dec.decode_record(record(5)).stack == NAMED
    assert dec.decode_record(record(-1)).stack is None        # none taken (over the budget)
    assert dec.decode_record(record(-17)).stack is None       # -EEXIST
    assert asked == [(5, LOCATION)]
    # stack_id is the last field, where the record's tail padding was: a record
    # of the same size whose last four bytes say -1.
    assert struct.unpack_from("=i", record(-1), event.NdEvent.stack_id.offset) == (-1,)
    plain = decode.Decoder({3: "NO_SOCKET"}, KALLSYMS, mono_to_wall=0.0)
    assert plain.decode_record(record(5)).stack is None       # stacks not asked for


def drop_with(stack, netns=11):
    dec = decode.Decoder({3: "NO_SOCKET"}, KALLSYMS, mono_to_wall=0.0, stacks=lambda i, loc: stack)
    raw = event.NdEvent(location_raw=LOCATION, reason_raw=3, netns=netns, stack_id=1 if stack else -1,
                        l3proto_raw=0x0800, l4proto_raw=17, flags_raw=event.ND_F_L4, sport=40000, dport=9, len=29)
    raw.saddr_raw[:4] = [10, 0, 0, 1]
    raw.daddr_raw[:4] = [10, 0, 0, 2]
    return dec.decode(raw)


def test_a_group_keeps_a_bounded_sample_of_distinct_stacks_with_their_events():
    groups = Groups(decode.Decoder({3: "NO_SOCKET"}, KALLSYMS))
    distinct = [NAMED[:i] for i in range(1, 6)]
    for stack, times in zip(distinct, (5, 3, 2, 4, 1), strict=True):
        for _ in range(times):
            d = drop_with(stack)
            groups.add_event(d, classify(d))
    d = drop_with(None)
    groups.add_event(d, classify(d))
    g = next(iter(groups.groups.values()))
    assert len(g.stacks) == STACKS_KEPT == 3
    assert g.stacks == {distinct[0]: 5, distinct[1]: 3, distinct[2]: 2} and g.stacks_other == 5
    assert g.events == 16
    snap = groups.snapshot()[0]
    d = drop_with(distinct[0])
    groups.add_event(d, classify(d))
    assert snap.stacks[distinct[0]] == 5                     # a copy: the view's, not the loop's


def test_watch_json_carries_the_stack_only_on_request():
    d, bare = drop_with(NAMED), drop_with(None)
    for drop in (d, bare):
        v = classify(drop)
        plain = jsonout.LineEncoder().line(drop, v, NO_POD)
        assert "stack" not in json.loads(plain)
        line = jsonout.LineEncoder(stacks=True).line(drop, v, NO_POD)
        # Byte for byte what json.dumps writes of drop_record(stacks=True), "stack" last.
        want = json.dumps(jsonout.drop_record(drop, v, NO_POD, stacks=True), separators=(",", ":")) + "\n"
        assert line == want
        assert json.loads(line)["stack"] == (list(NAMED) if drop.stack else None)
        assert list(json.loads(line))[-1] == "stack"


def groups_with_stacks():
    groups = Groups(decode.Decoder({3: "NO_SOCKET"}, KALLSYMS))
    hostile = ("__udp4_lib_rcv+0x123", "<script>x</script>|`**", "\x1b[31mred")
    for stack in (NAMED, NAMED, hostile):
        d = drop_with(stack)
        groups.add_event(d, classify(d))
    d = drop_with(None)
    groups.add_event(d, classify(d))
    key = next(iter(groups.groups))
    groups.update_counts({key: 0}, now=0.0)
    groups.update_counts({key: 40}, now=2.0)
    return groups, hostile


def built(tmp_path):
    groups, hostile = groups_with_stacks()
    rec = capture.Recorder(capture.prepare_output(str(tmp_path / "cap")))
    rec.close()
    s = build.build(groups, rec, ended=datetime(2026, 11, 21, 6, 40, tzinfo=UTC), reason_ended="duration reached",
                      stats=Stats(40, 4, 0, 36, 0), hooks=[Hook("tp_btf skb:kfree_skb", True)], filters=[],
                      pods=None, node="node-a", names={})
    return s, hostile


def test_summary_json_holds_each_groups_stacks_most_events_first_and_reads_back(tmp_path):
    s, hostile = built(tmp_path)
    g = s["groups"][0]
    assert g["stacks"] == [{"events": 2, "frames": list(NAMED)}, {"events": 1, "frames": list(hostile)}]
    assert g["stacks_other_events"] == 0 and g["events"] == 4
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(s))
    assert schema.load(path)["groups"][0]["stacks"] == g["stacks"]


def test_markdown_and_html_list_stacks_with_every_frame_escaped(tmp_path):
    s, _ = built(tmp_path)
    md = render.render(s, "markdown")
    assert "### Kernel stacks" in md and "3 of 4 events had a stack" in md
    assert "1. \\_\\_udp4_lib_rcv+0x123" in md and "2. ip_protocol_deliver_rcu+0xd8" in md
    assert "- 2 events:" in md and "- 1 event:" in md
    assert "<script>" not in md and "\x1b" not in md and "\\`" in md
    page = render.render(s, "html")
    assert '<ul id="stacks">' in page and "<code>__udp4_lib_rcv+0x123</code>" in page
    assert "<script>" not in page and "&lt;script&gt;" in page and "\x1b" not in page


def test_a_summary_without_stacks_renders_as_before(tmp_path):
    s, _ = built(tmp_path)
    for g in s["groups"]:
        g.pop("stacks"), g.pop("stacks_other_events")
    assert "Kernel stacks" not in render.render(s, "markdown") and 'id="stacks"' not in render.render(s, "html")


def test_long_stacks_are_cut_in_the_renderings_and_kept_whole_in_json():
    frames = [f"f{i}+0x1" for i in range(30)]
    group = {"reason": "NO_SOCKET", "location": "__udp4_lib_rcv", "pod_label": None, "events": 9,
             "stacks": [{"events": 9, "frames": frames}], "stacks_other_events": 0}
    md = "\n".join(stackview.markdown([group]))
    assert f"{stackview.FRAMES_SHOWN}. f{stackview.FRAMES_SHOWN - 1}+0x1" in md and "18 more frames" in md
    assert f"f{stackview.FRAMES_SHOWN}+0x1" not in md


def test_schema_refuses_stacks_of_the_wrong_shape(tmp_path):
    s, _ = built(tmp_path)
    s["groups"][0]["stacks"] = [{"events": "2", "frames": ["x"]}]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(s))
    try:
        schema.load(path)
    except Exception as exc:      # noqa: BLE001 - a UserError naming the field
        assert "groups[0].stacks[0].events" in str(exc)
    else:
        raise AssertionError("a string count was accepted")


def test_console_details_show_the_stacks_at_80_columns():
    groups, hostile = groups_with_stacks()
    g = next(iter(groups.groups.values()))
    con = Console(record=True, width=80, height=40, color_system=None, file=io.StringIO())
    con.print(console.render(groups, console.View(), UiState(selected=g.key, details=True), fill=True))
    text = con.export_text()
    flat = " ".join(text.split())
    assert "kernel stacks (3 of 4 events had one):" in flat
    assert "×2 __udp4_lib_rcv+0x123 ← ip_protocol_deliver_rcu+0xd8 ← ip_local_deliver_finish+0x81" in flat
    assert "\x1b" not in text and max(len(line) for line in text.splitlines()) <= 80


def test_stacks_are_on_for_people_and_on_request_for_json_lines():
    from tracer.cli import parse
    from tracer.pipeline.startup import wants_stacks

    def wants(*argv):
        opts = parse(list(argv))
        return wants_stacks(opts.stacks, json_lines=getattr(opts, "output", None) == "json")
    assert wants("watch") and wants("capture", "-o", "/tmp/x")
    assert not wants("watch", "--json") and wants("watch", "--json", "--stacks")
    assert not wants("watch", "--no-stacks") and not wants("capture", "-o", "/tmp/x", "--no-stacks")
