"""Hostile names (a NET_ADMIN pod names its interfaces and writes rule comments) in every output:
the terminal gets no control characters, Markdown no links, images or HTML, a spreadsheet no formula,
HTML no element; summary.json keeps the original text."""

import csv
import dataclasses
import io
import json
import re
from datetime import UTC, datetime

import markdown_it
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer import textsafe
from tracer.explain.verdict import Verdict
from tracer.kernel.hooks import Hook
from tracer.kernel.loader import Stats
from tracer.pods.attribute import Attribution, PodRef
from tracer.sinks import capture, console, jsonout
from tracer.sinks.summary import build, render, views

from ..helpers import golden_groups, render_text

IFNAME = "\x1b]0;pwned\x07eth0"
HINT = ("rule comment \x1b[2J\x9b31m [bold]x[/bold] <script>alert(1)</script> a|b "
        "![i](http://evil.example/i.png) [click](http://evil.example) \u202eevil \udcff")
POD = PodRef("@SUM(1+1)*cmd|' /C calc'!A0", "=HYPERLINK(\"http://evil.example\")|x", "uid", "node\x1b[31m")
PEER = PodRef("<b>ns</b>|x", "[peer](http://evil.example)\x1b[31m\u202e", "uid-2", "node")
NETNS_NAME = "-2+3\x1b[1A"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")       # all but TAB and newline, which layouts use


def hostile_groups():
    """The golden groups, the first with a hostile device, hint, pod and namespace name."""
    groups = golden_groups()
    g = next(iter(groups.groups.values()))
    assert g.latest is not None
    g.latest = dataclasses.replace(g.latest, ifname=IFNAME, out_ifname=IFNAME)
    g.hint = HINT
    g.attribution = Attribution(POD, "from-pod")
    groups.recent.append((g.latest, Verdict(g.category, HINT), g.attribution))
    return groups, g


def test_console_escapes_hostile_names_and_hints():
    groups, g = hostile_groups()
    view = console.View(netns_names={g.netns: NETNS_NAME}, notices=[HINT], pods=POD.label,
                        filters=[f"netns {NETNS_NAME}"])
    text = render_text(groups, view)
    assert not CONTROL.search(text)
    assert "\u202e" not in text
    # The user sees what the names are, escaped, and bracketed text is not eaten as markup.
    assert "\\x1b]0;pwned\\x07eth0" in text.replace("\n", "")
    assert "[bold]x[/bold]" in text
    lines = console.summary_lines(groups, {g.netns: NETNS_NAME})
    assert lines and not any(CONTROL.search(line) for line in lines)
    assert any("\\x1b[1A" in line for line in lines)


@pytest.fixture
def hostile_summary(tmp_path):
    groups, g = hostile_groups()
    g.attribution = Attribution(POD, "from-pod", PEER, "to-pod")      # both ends hostile
    rec = capture.Recorder(capture.prepare_output(str(tmp_path / "cap")))
    for grp in groups.groups.values():
        if grp.latest is not None:
            rec.emit(grp.latest, Verdict(grp.category, grp.hint or ""), grp.attribution or Attribution(None, None))
    rec.tick(groups, datetime(2026, 11, 21, 6, 38, 5, tzinfo=UTC))
    rec.close()
    return build.build(groups, rec, ended=datetime(2026, 11, 21, 6, 40, tzinfo=UTC),
                         reason_ended="duration reached", stats=Stats(210, 6, 0, 204, 0),
                         hooks=[Hook("tracepoint skb:kfree_skb", True, IFNAME)], filters=[f"netns {NETNS_NAME}"],
                         pods=POD.label, node="node\x1b[31m", names={g.netns: NETNS_NAME}, notices=[HINT])


def test_summary_json_keeps_the_original_text_escaped_by_json(hostile_summary):
    out = render.render(hostile_summary, "json")
    assert not CONTROL.search(out) and "\u202e" not in out
    back = json.loads(out)
    assert back == hostile_summary
    assert any(grp["hint"] == HINT for grp in back["groups"])
    assert back["top_flows"][0]["pod"] == POD.label or any(f["pod"] == POD.label for f in back["top_flows"])


def test_summary_table_escapes(hostile_summary):
    out = render.render(hostile_summary, "table")
    assert not CONTROL.search(out)
    assert "\\x1b[2J" in out and "[bold]x[/bold]" in out
    assert "-2+3\\x1b[1A" in out and "node\\x1b[31m" in out          # namespace and node names
    wide = render.render(hostile_summary, "table", 400)
    assert not CONTROL.search(wide) and "[peer](http://evil.example)\\x1b[31m" in wide    # the peer, as text


def test_markdown_renders_no_link_image_or_html_and_keeps_its_tables(hostile_summary):
    out = render.render(hostile_summary, "markdown")
    assert not CONTROL.search(out)
    md = markdown_it.MarkdownIt("commonmark").enable("table")
    rendered = md.render(out)
    assert "<a " not in rendered and "<img" not in rendered and "<script" not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered             # shown as text
    assert "[click](http://evil.example)" in rendered
    # The pod's "|" does not add a column: every row of the groups table has its 10 cells.
    tokens = md.parse(out)
    rows, cells = 0, 0
    for t in tokens:
        if t.type == "tr_open":
            rows, cells = rows + 1, 0
        elif t.type in ("td_open", "th_open"):
            cells += 1
        elif t.type == "tr_close":
            assert cells in (len(views.GROUP_HEADER), len(views.FLOW_HEADER))
    assert rows >= len(hostile_summary["groups"]) + 1
    assert POD.label.replace("|", "\\|").split("*")[0] in out


def test_csv_cells_are_never_formulas_and_numbers_stay_numbers(hostile_summary):
    out = render.render(hostile_summary, "csv")
    assert not CONTROL.search(out.replace("\r\n", "\n"))      # CSV's own line ends aside
    rows = list(csv.DictReader(io.StringIO(out)))
    for row in rows:
        for key, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (key, cell)
    hostile = next(r for r in rows if r["pod_name"])
    assert hostile["pod_namespace"] == "'" + POD.namespace
    assert hostile["pod_name"].startswith("'=HYPERLINK")
    assert hostile["netns_name"] == "'-2+3\\x1b[1A"
    assert all(r["drops"].isdigit() and r["netns"].isdigit() for r in rows)
    assert sum(int(r["drops"]) for r in rows) == 210


def test_html_has_no_element_from_the_node(hostile_summary):
    out = render.render(hostile_summary, "html")
    assert not CONTROL.search(out)
    assert "<script" not in out and "&lt;script&gt;" in out
    assert 'href=' not in out and "<img" not in out


# Random text rarely spells "[a](b)" or "*a*": most examples come from an alphabet of syntax.
SYNTAX = st.text(st.sampled_from(list("ab1 _*`[]()<>!|~&#@\\-+=.:;/\n\t\r\x1b\x9b\u202e\udcff")))


@given(st.one_of(SYNTAX, st.text()))
def test_every_escape_removes_what_its_reader_would_act_on(text):
    shown = textsafe.printable(text)
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]", shown)
    # Markdown: one paragraph of text, nothing else (no link, image, HTML, emphasis, code, table).
    rendered = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(
        "x " + textsafe.markdown_text(text))
    assert re.fullmatch(r"<p>[^<]*</p>\n", rendered), rendered
    assert not textsafe.csv_cell(text).startswith(("=", "+", "-", "@", "\t", "\r"))
    assert "<" not in textsafe.html_text(text) and '"' not in textsafe.html_text(text)


def test_json_lines_keep_hostile_names_escaped_by_json():
    groups, g = hostile_groups()
    assert g.latest is not None
    buf = io.StringIO()
    jsonout.JsonLines(buf).emit(g.latest, Verdict(g.category, HINT), Attribution(POD, "from-pod", PEER, "to-pod"))
    line = buf.getvalue()
    assert line.endswith("}\n") and line.count("\n") == 1 and not CONTROL.search(line) and "\u202e" not in line
    record = json.loads(line)
    assert (record["ifname"], record["hint"], record["pod"]["name"]) == (IFNAME, HINT, POD.name)
    assert (record["peer"]["namespace"], record["peer"]["name"]) == (PEER.namespace, PEER.name)
