"""summary.merge: captures of several nodes in one report, per node and overall, in every format."""

import copy
import csv
import io
import json

from tracer.sinks.summary import merge, render, views

from ..helpers import built_summary, summary_with_benign


def two_nodes(tmp_path):
    a = summary_with_benign(tmp_path / "a")
    b = copy.deepcopy(built_summary(tmp_path / "b"))
    b["node"]["kubernetes_node"] = "node-b"
    b["window"]["start"], b["window"]["end"] = "2026-11-21T06:39:00Z", "2026-11-21T06:45:00Z"
    return a, b


def test_overall_adds_up_and_keeps_each_groups_node(tmp_path):
    a, b = two_nodes(tmp_path)
    m = merge.merge([a, b])
    assert m["totals"]["drops"] == a["totals"]["drops"] + b["totals"]["drops"]
    assert m["totals"]["benign_drops"] == a["totals"]["benign_drops"] + b["totals"]["benign_drops"]
    assert sum(g["count"] for g in m["groups"]) == sum(g["count"] for p in (a, b) for g in p["groups"])
    assert {g["node"] for g in m["groups"]} == {views.node_name(a), "node-b"}
    assert all(g["netns_name"].startswith(g["node"] + ": ") for g in m["groups"])
    for cat in set(a["by_category"]) | set(b["by_category"]):
        assert m["by_category"][cat] == a["by_category"].get(cat, 0) + b["by_category"].get(cat, 0)
    # One verdict per category over both nodes, by impact as for one node.
    assert sum(v["drops"] for v in m["verdicts"]) == sum(v["drops"] for p in (a, b) for v in p["verdicts"])
    assert m["window"]["start"] == min(a["window"]["start"], b["window"]["start"])
    assert m["window"]["end"] == "2026-11-21T06:45:00Z"
    timeline_total = sum(n for row in m["timeline"] for k, n in row.items() if k != "second")
    assert timeline_total == sum(n for p in (a, b) for row in p["timeline"] for k, n in row.items() if k != "second")
    assert m["nodes"] == [a, b]
    assert merge.merge([a]) is a


def test_every_format_shows_overall_then_each_node(tmp_path):
    a, b = two_nodes(tmp_path)
    m = merge.merge([a, b])
    names = (views.node_name(a), "node-b")
    for fmt in ("table", "markdown"):
        out = render.render(m, fmt, 200)
        overall = out.index("2 nodes (")
        assert overall < out.index(f"on {names[0]},") < out.index(f"on {names[1]},"), fmt
    data = json.loads(render.render(m, "json"))
    assert [views.node_name(n) for n in data["nodes"]] == list(names)
    rows = list(csv.DictReader(io.StringIO(render.render(m, "csv"))))
    assert {r["node"] for r in rows} == set(names) and len(rows) == len(m["groups"])
    page = render.render(m, "html")
    assert page.count("<html") == 1 and 'id="node-0"' in page and 'id="node-1"' in page
    assert page.index("2 nodes (") < page.index(f"Node {names[1]}")


def test_one_capture_renders_as_before(tmp_path):
    a = summary_with_benign(tmp_path)
    assert "node" not in next(iter(csv.DictReader(io.StringIO(render.render(a, "csv")))))
    assert "2 nodes" not in render.render(a, "table", 200)


def test_summary_of_several_capture_directories_merges_them(tmp_path):
    """`netdrop summary DIR DIR`: one report, overall then per node."""
    from tracer import cli
    from tracer.env import Environment

    a, b = two_nodes(tmp_path)
    dirs = []
    for name, part in (("na", a), ("nb", b)):
        d = tmp_path / name
        d.mkdir()
        (d / "summary.json").write_text(json.dumps(part))
        dirs.append(str(d))
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["summary", *dirs, "--format", "json"], Environment(stdout=out, stderr=err)) == 0, err.getvalue()
    data = json.loads(out.getvalue())
    assert [views.node_name(n) for n in data["nodes"]] == [views.node_name(a), "node-b"]
    assert data["totals"]["drops"] == a["totals"]["drops"] + b["totals"]["drops"]
    missing = tmp_path / "nowhere"
    err = io.StringIO()
    assert cli.main(["summary", dirs[0], str(missing)], Environment(stdout=io.StringIO(), stderr=err)) == 2
    assert err.getvalue().count("\n") == 1 and "Traceback" not in err.getvalue()
