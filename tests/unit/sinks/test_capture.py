"""Capture files on plain data: events.jsonl, drops.pcapng, summary.json and its renderings."""

import csv
import dataclasses
import errno
import io
import json
import re
import struct
from datetime import UTC, datetime

import pytest

from tracer.explain.classify import classify
from tracer.kernel import event, pktfacts
from tracer.kernel.loader import Stats
from tracer import layout, textsafe
from tracer.pods.attribute import NO_POD, Attribution, PodRef
from tracer.sinks import capture, jsonout, pcapng
from tracer.sinks.summary import build, markdown, render, views
from tracer.sinks.summary.table import HINT_LINES, VERDICT_LINES, WHERE_LINES

from ..helpers import DB, LONG_HINT, NETLINK, WEB, built_summary, golden_drops, summary_with_benign

WATCH_KEYS = ["time", "reason", "category", "benign", "hint", "location", "netns", "ifname", "ifindex", "proto",
              "src", "dst", "sport", "dport", "len", "mtu", "out_ifname", "pod", "direction", "peer", "conntrack",
              "detail"]


def test_events_file_has_the_watch_keys_and_respects_max_events(tmp_path):
    groups, drops = golden_drops()
    rec = capture.Recorder(capture.prepare_output(str(tmp_path)), max_events=4)
    db = Attribution(PodRef("default", "db-0", "uid-1", "node-a"), "in-pod")
    for d in drops:
        rec.emit(d, classify(d), db if d.dport == 9999 else NO_POD)
    rec.close()
    lines = (tmp_path / capture.EVENTS_FILE).read_text().splitlines()
    assert len(lines) == 4 and rec.delivered == len(drops) == 6
    first = json.loads(lines[0])
    assert list(first) == WATCH_KEYS
    with_pod = [json.loads(x) for x in lines if json.loads(x)["pod"]]
    assert with_pod and with_pod[0]["pod"]["name"] == "db-0" and with_pod[0]["direction"] == "in-pod"


def test_a_full_disk_leaves_whole_lines_only(tmp_path, monkeypatch):
    _, drops = golden_drops()
    rec = capture.Recorder(capture.prepare_output(str(tmp_path)))
    real_write, calls = capture.os.write, []

    def write(fd, data):
        calls.append(data)
        if len(calls) == 3:            # the third line finds the disk full after 10 bytes
            real_write(fd, data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(capture.os, "write", write)
    for d in drops:
        rec.emit(d, classify(d), NO_POD)
    rec.close()
    text = (tmp_path / capture.EVENTS_FILE).read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 2
    assert all(json.loads(x) for x in text.splitlines())
    assert rec.write_error == "events.jsonl stopped after 2 events: No space left on device"
    assert len(calls) == 3          # nothing more is tried once the disk is full


def test_pcapng_blocks_comments_and_timestamps(tmp_path):
    _, drops = golden_drops()
    d = drops[0]
    packet = bytes.fromhex("4500001c0001400040110000") + bytes(16)
    buf = io.BytesIO()
    w = pcapng.PcapngWriter(buf, 128)
    when = datetime(2026, 11, 21, 6, 38, 4, 45342, tzinfo=UTC)
    w.write(when, packet, 1500, capture.packet_comment(d, classify(d), NO_POD))
    blocks = pcapng.read_blocks(buf.getvalue())
    assert [k for k, _ in blocks] == [pcapng.SHB, pcapng.IDB, pcapng.EPB]
    assert struct.unpack_from("<I", blocks[0][1])[0] == pcapng.BYTE_ORDER_MAGIC
    assert struct.unpack_from("<HHI", blocks[1][1]) == (pcapng.LINKTYPE_RAW, 0, 128)
    iface, hi, lo, caplen, origlen = struct.unpack_from("<IIIII", blocks[2][1])
    assert (iface, caplen, origlen) == (0, len(packet), 1500)
    assert (hi << 32 | lo) == int(when.timestamp() * 1e9)
    body = blocks[2][1]
    assert body[20:20 + len(packet)] == packet
    code, length = struct.unpack_from("<HH", body, 20 + len(packet))
    comment = body[24 + len(packet): 24 + len(packet) + length].decode()
    assert code == pcapng.OPT_COMMENT
    assert comment == (f"netdrop: {d.reason} at {d.location} ({classify(d).category}); no pod; "
                       f"netns {d.netns} on {d.ifname}")


def test_summary_counts_verdicts_and_timeline(tmp_path):
    s = built_summary(tmp_path)
    assert s["totals"]["drops"] == 210 and s["totals"]["events_sampled_out"] == 204
    assert sum(g["count"] for g in s["groups"]) == 210          # the kernel counters, not the events
    assert s["by_category"] == {"mtu": 10, "netfilter": 20, "no-socket": 120, "no-route": 60}
    # By impact: the path's refusals (most drops first) before 120 drops at a port nobody listens on.
    assert [v["category"] for v in s["verdicts"]] == ["no-route", "netfilter", "mtu", "no-socket"]
    mtu = next(v for v in s["verdicts"] if v["category"] == "mtu")
    assert "MTU 1450 of flannel.1" in mtu["hint"] and mtu["where"] == "PKT_TOO_BIG at ip_forward"
    assert s["timeline"] == [{"second": "2026-11-21T06:38:05.000Z", "mtu": 10, "netfilter": 20,
                              "no-socket": 120, "no-route": 60}]
    assert s["top_flows"][0]["events"] == 1 and s["totals"]["pcap_packets"] == 0


@pytest.mark.parametrize("fmt", render.FORMATS)
def test_every_format_tells_the_story(tmp_path, fmt):
    s = built_summary(tmp_path)
    out = render.render(s, fmt)
    if fmt == "json":
        assert json.loads(out) == s
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert {r["reason"]: int(r["drops"]) for r in rows}["PKT_TOO_BIG"] == 10
        assert len(rows) == 6
    else:
        for text in ("PKT_TOO_BIG", "ip_forward", "MTU 1450 of flannel.1", "no-socket", "210 drops"):
            assert text in out, (fmt, text)
    if fmt == "markdown":
        assert "| pod | direction | netns |" in out and "### What to check first" in out
    if fmt == "html":
        assert "<svg" in out and 'id="groups"' in out and 'id="flows"' in out
        assert out.count('class="bar"') == 4
        # Self-contained: nothing to fetch, no scripts.
        assert not re.search(r"(src|href)=", out) and "<script" not in out


def test_a_storm_of_new_flows_keeps_flow_memory_bounded_and_says_top_flows_are_approximate(tmp_path, monkeypatch):
    import dataclasses

    monkeypatch.setattr(capture, "FLOW_CAPACITY", 50)
    groups, drops = golden_drops()
    rec = capture.Recorder(capture.prepare_output(str(tmp_path / "cap")))
    heavy = drops[0]
    for port in range(5000):                       # a new source port per datagram, one steady flow among them
        rec.emit(dataclasses.replace(heavy, sport=10_000 + port), classify(heavy), NO_POD)
        if port % 10 == 0:
            rec.emit(heavy, classify(heavy), NO_POD)
    rec.close()
    assert len(rec.flows) == 50 and rec.delivered == 5500
    s = build.build(groups, rec, ended=datetime(2026, 11, 21, 6, 40, tzinfo=UTC),
                      reason_ended="duration reached", stats=Stats(210, 5500, 0, 0, 0), hooks=[], filters=[],
                      pods=None, node="node-a", names={})
    top = s["top_flows"][0]
    assert (top["sport"], top["dport"]) == (heavy.sport, heavy.dport)
    assert top["events"] - top["events_error"] <= 500 <= top["events"]
    assert s["top_flows_exact"] is False and s["top_flows_capacity"] == 50
    assert sum(g["count"] for g in s["groups"]) == 210             # group counts untouched
    for fmt in ("table", "markdown", "html"):
        out = render.render(s, fmt)
        assert "top flows approximate beyond 50 distinct flows" in out, fmt
        assert "(±" in out, fmt


def test_few_flows_are_exact_and_say_nothing(tmp_path):
    s = built_summary(tmp_path)
    assert s["top_flows_exact"] is True and all(f["events_error"] == 0 for f in s["top_flows"])
    for fmt in ("table", "markdown", "html"):
        assert "approximate" not in render.render(s, fmt)


# ---------------------------------------------------------------- benign drops, ranks, peers, views

MULTICAST = pktfacts.make(pktfacts.PACKET_MULTICAST, event.ND_DST_MULTICAST)  # ff02::1 on the link


def verdict_block(out: str, start: str, end: str) -> list[str]:
    return out.split(start, 1)[1].split(end, 1)[0].strip("\n").splitlines()


def test_benign_groups_are_counted_marked_and_ranked_last(tmp_path):
    s = summary_with_benign(tmp_path)
    assert s["totals"]["benign_drops"] == 312 and s["by_category"]["other"] == 312
    assert sum(g["count"] for g in s["groups"]) == 522                   # counts stay exact
    assert {(g["reason"], g["location"]) for g in s["groups"] if g["benign"]} == {
        ("QUEUE_PURGE", "skb_queue_purge_reason"), ("NOT_SPECIFIED", "ip6_mc_input")}
    # Impact first: the path's refusals, then the port nobody listens on (120 drops), benign last.
    assert [(v["category"], v["benign"]) for v in s["verdicts"]] == [
        ("no-route", False), ("netfilter", False), ("mtu", False), ("no-socket", False), ("other", True)]
    assert [f["benign"] for f in s["top_flows"] if f["reason"] == "QUEUE_PURGE"] == [True]
    assert not any(f["benign"] for f in s["top_flows"] if f["reason"] != "QUEUE_PURGE")
    benign = s["verdicts"][-1]
    assert benign["drops"] == 312 and benign["hint"] == (
        "messages still queued on a netlink socket when it went away (teardown); "
        "IPv6 multicast for a group nobody on this interface joined")
    assert benign["where"] == ("QUEUE_PURGE at skb_queue_purge_reason (300); "
                               "NOT_SPECIFIED at ip6_mc_input (12)")


@pytest.mark.parametrize("fmt", ["table", "markdown", "html"])
def test_views_set_benign_aside_in_one_line_and_list_them_with_all(tmp_path, fmt):
    s = summary_with_benign(tmp_path)
    hidden = render.render(s, fmt, 200)
    assert hidden.count("312 benign drops not listed (--all to list them)") == 1
    assert "QUEUE_PURGE" not in hidden and "ip6_mc_input" not in hidden     # neither verdicts nor groups
    assert "PKT_TOO_BIG" in hidden
    shown = render.render(s, fmt, 200, show_benign=True)
    assert "benign drops not listed" not in shown
    assert "QUEUE_PURGE" in shown and "other, benign" in shown and "other (benign)" in shown
    # Listed last among the verdicts.
    assert shown.index("other, benign") > shown.index("no-socket")


def test_json_and_csv_always_hold_benign_drops(tmp_path):
    s = summary_with_benign(tmp_path)
    assert json.loads(render.render(s, "json"))["totals"]["benign_drops"] == 312
    rows = list(csv.DictReader(io.StringIO(render.render(s, "csv"))))
    assert {r["reason"]: r["benign"] for r in rows}["QUEUE_PURGE"] == "true"
    assert {r["reason"]: r["benign"] for r in rows}["PKT_TOO_BIG"] == "false"


def test_a_verdict_is_a_bounded_block_in_table_and_markdown(tmp_path):
    s = summary_with_benign(tmp_path)
    most = VERDICT_LINES + WHERE_LINES + HINT_LINES
    for width in (80, 140):
        out = render.render(s, "table", width, show_benign=True)
        lines = verdict_block(out, "What to check first", "Drops by pod")
        assert all(len(line) <= width for line in lines)
        starts = [i for i, line in enumerate(lines) if line.startswith("•")]
        assert len(starts) == len(s["verdicts"])
        assert all(b - a <= most for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)), lines
        at = next(i for i, line in enumerate(lines) if line.startswith("    where: PKT_TOO_BIG")) + 1
        long = lines[at:next(i for i in range(at, len(lines)) if lines[i].startswith("•"))]
        assert len(long) == HINT_LINES and long[-1].endswith(" …")      # cut between words
        mtu = next(v for v in s["verdicts"] if v["category"] == "no-route")
        assert " ".join(line.strip() for line in lines).count(mtu["hint"]) == 1   # a hint netdrop writes: whole
    md = render.render(s, "markdown", show_benign=True)
    lines = verdict_block(md, "### What to check first", "###")
    starts = [i for i, line in enumerate(lines) if line.startswith("- **")]
    assert len(starts) == len(s["verdicts"])
    assert all(b - a <= 3 for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)), lines
    assert all(len(line) <= markdown.MARKDOWN_LINE + 40 for line in lines)     # a few escapes over, no more
    # The full hint is kept where nothing is cut.
    assert LONG_HINT.strip() in json.dumps(s) and LONG_HINT.strip() in render.render(s, "html")


@pytest.mark.parametrize("width", [80, 120])
def test_the_table_reads_at_its_width_with_each_quoted_command_whole(tmp_path, width):
    s = summary_with_benign(tmp_path)
    s["verdicts"][0]["hint"] += ("; then check 'ip route get 10.244.3.10 from 10.244.1.10 iif cni0' and "
                                 "'ip -d link show dev flannel.1' on the node")
    out = render.render(s, "table", width, show_benign=True)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width
    commands = [c for v in s["verdicts"] for c in layout.quoted_commands(v["hint"]) if "…" not in v["hint"]]
    assert {"'iptables -S'", "'nft list ruleset'", "'ip -d link show dev flannel.1'"} <= set(commands)
    for cmd in commands:
        assert any(cmd in line for line in lines), (cmd, out)
    # Too narrow for a table of ten columns: a block per group, its count and cause first.
    groups = verdict_block(out, "Drops by pod, category, reason and location", "Top flows")
    assert groups[0] == "300 drops · other (benign) · QUEUE_PURGE at skb_queue_purge_reason"
    assert groups[1].startswith("    no pod · netns 4026532177 · ")
    mtu = groups.index("10 drops · mtu · PKT_TOO_BIG at ip_forward")
    assert groups[mtu + 1].startswith("    pod default/web-0 -> default/db-0 from-pod · netns 4026532177")
    assert "┃" not in out.split("Top flows")[0]


def test_a_wide_table_keeps_the_columns_where_every_cell_fits(tmp_path):
    out = render.render(summary_with_benign(tmp_path), "table", 220, show_benign=True)
    head = next(line for line in out.splitlines() if "┃ pod" in line)
    assert [c.strip() for c in head.strip("┃").split("┃")] == views.GROUP_HEADER
    assert max(len(line) for line in out.splitlines()) <= 220


@pytest.mark.parametrize("peer_direction,arrow", [("to-pod", "default/web-0 -> default/db-0"),
                                                  ("from-pod", "default/db-0 -> default/web-0")])
def test_both_ends_are_named_where_the_peer_is_known(tmp_path, peer_direction, arrow):
    s = summary_with_benign(tmp_path, peer_direction)
    group = next(g for g in s["groups"] if g["category"] == "mtu")
    assert group["peer"] == {"namespace": "default", "name": "db-0", "direction": peer_direction}
    assert group["peer_label"] == "default/db-0"
    mtu = next(v for v in s["verdicts"] if v["category"] == "mtu")
    assert mtu["where"] == f"PKT_TOO_BIG at ip_forward, {arrow} from-pod"
    for fmt, shown in (("table", arrow), ("markdown", textsafe.markdown_text(arrow)),
                       ("html", textsafe.html_text(arrow))):
        assert render.render(s, fmt, 200).count(shown) >= 2, fmt         # the verdict and the group row
    assert all(g["peer"] is None for g in s["groups"] if g["category"] != "mtu")


def test_html_heat_map_of_pods_by_category_above_the_text(tmp_path):
    s = summary_with_benign(tmp_path)
    out = render.render(s, "html")
    assert out.index('id="heatmap"') < out.index('id="verdicts"') < out.index('id="groups"')
    table = out.split('<table id="heatmap">', 1)[1].split("</table>", 1)[0]
    head = re.findall(r"<th>([^<]*)</th>", table.split("</thead>")[0])
    assert head == ["pod", "mtu", "netfilter", "no-socket", "no-route"]   # benign's "other" set aside
    rows = re.findall(r"<tr><th>([^<]*)</th>(.*?)</tr>", table.split("<tbody>")[1])
    # Most drops first: the pod-less groups (200), then web -> db (10).
    assert [name for name, _ in rows] == ["(no pod)", "default/web-0 -&gt; default/db-0"]
    cells = {int(n): float(a) for n, a in re.findall(r'data-count="(\d+)" style="background:rgba\([\d,]+,([\d.]+)\)',
                                                     table)}
    assert set(cells) == {10, 20, 120, 60}
    assert cells[120] == max(cells.values()) == 1.0 and cells[10] == min(cells.values())
    with_all = render.render(s, "html", show_benign=True).split('<table id="heatmap">', 1)[1].split("</table>")[0]
    assert "<th>other</th>" in with_all and 'data-count="312"' in with_all


def test_json_lines_say_benign_and_name_the_peer():
    _, drops = golden_drops()
    d = dataclasses.replace(drops[0], reason="NOT_SPECIFIED", location="ip6_mc_input", facts=MULTICAST)
    record = jsonout.drop_record(d, classify(d), Attribution(WEB, "from-pod", DB, "to-pod"))
    assert record["benign"] is True
    assert record["peer"] == {"namespace": "default", "name": "db-0", "direction": "to-pod"}
    assert list(record).index("peer") == list(record).index("direction") + 1
    plain = jsonout.drop_record(drops[0], classify(drops[0]), Attribution(WEB, "from-pod"))
    assert plain["benign"] is False and plain["peer"] is None
    # A peer the API did not name is no peer in JSON, as such a pod is no pod.
    unknown = PodRef(None, None, None, None, known=False, sandbox="cni-1", ips=("10.244.1.99",))
    assert jsonout.drop_record(d, classify(d), Attribution(WEB, "from-pod", unknown, "to-pod"))["peer"] is None


def test_pcapng_comment_says_benign_and_names_the_peer():
    _, drops = golden_drops()
    d = dataclasses.replace(drops[0], reason="QUEUE_PURGE", location="skb_queue_purge_reason", facts=NETLINK)
    comment = capture.packet_comment(d, classify(d), Attribution(WEB, "from-pod", DB, "to-pod"))
    assert comment == (f"netdrop: QUEUE_PURGE at skb_queue_purge_reason ({classify(d).category}, benign); "
                       f"pod default/web-0 from-pod; peer default/db-0 to-pod; netns {d.netns} on {d.ifname}")
