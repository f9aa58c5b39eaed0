"""A node's report: built from its summary, bounded whatever the node saw, read back safely."""

import json
from dataclasses import replace

from hypothesis import given, settings

from tracer.captures.report import (MAX_GROUPS, MAX_PODS, MAX_REPORT_BYTES, RECORDING_GROUPS, FileEntry, Report,
                                    from_summary, label_value, parse_report, recording, report_name, report_object)
from tracer.captures.spec import parse_capture

from ..strategies import json_values

CAPTURE = parse_capture({"metadata": {"name": "web-drops", "namespace": "shop", "uid": "u-1",
                                      "creationTimestamp": "2026-12-07T11:00:00Z"},
                         "spec": {"pods": {"selector": "app=web"}, "duration": "30s"}})


def group(i: int, count: int) -> dict:
    return {"pod": {"namespace": "shop", "name": f"web-{i}"}, "category": "conntrack", "reason": "NF_DROP",
            "location": "nf_hook_slow", "count": count, "hint": "h" * 5000}


def summary(n_groups: int) -> dict:
    return {"totals": {"drops": sum(range(n_groups + 1)), "events_delivered": 7, "events_lost": 1},
            "groups": [group(i, i) for i in range(1, n_groups + 1)],
            "verdicts": [{"category": "conntrack", "verdict": "conntrack insert race", "hint": "x"}],
            "top_flows": [{"proto": "udp", "src": "10.244.1.5", "sport": 40000, "dst": "10.96.0.10", "dport": 53,
                           "pod": "shop/web-1", "category": "conntrack", "events": 5}] * 50}


def test_a_report_carries_the_nodes_exact_total_and_its_worst_pods_first():
    base = Report("web-drops", "u-1", "node-1", "Done")
    r = from_summary(base, summary(3), (FileEntry("summary.json", 10),))
    assert r.packets == 6 and r.events_seen == 7 and r.events_lost == 1
    assert [(p.name, p.packets) for p in r.pods] == [("web-3", 3), ("web-2", 2), ("web-1", 1)]
    assert r.groups[0].verdict == "conntrack insert race" and r.groups[0].pod == "shop/web-3"


def test_a_report_stays_small_however_much_the_node_saw():
    base = Report("web-drops", "u-1", "n" * 253, "Failed", message="m" * 100_000, endpoint="e" * 10_000)
    r = from_summary(base, summary(5000), ())
    o = report_object(CAPTURE, r)
    size = len(json.dumps(o))
    assert size < 32 * 1024, size
    assert len(r.pods) == MAX_PODS and r.pods_omitted == 5000 - MAX_PODS
    assert len(r.groups) == MAX_GROUPS and r.groups_omitted == 5000 - MAX_GROUPS
    back = parse_report(json.loads(json.dumps(o)))
    assert back is not None and back.packets == r.packets and back.groups == r.groups[:MAX_GROUPS]


def test_names_and_labels_fit_kubernetes_limits_and_stay_distinct():
    long = "c" * 250
    a, b = report_name(long, "node-1"), report_name(long, "node-2")
    assert len(a) <= 253 and len(b) <= 253 and a != b
    assert report_name("web", "node-1") == "web.node-1"
    assert len(label_value("x" * 100)) <= 63 and label_value("x" * 100) != label_value("x" * 99 + "y")
    assert label_value("web-drops") == "web-drops"


@settings(max_examples=300, deadline=None)
@given(json_values(["report", "capture", "name", "uid", "node", "state", "files", "total", "packets", "events",
                    "seen", "lost", "pods", "groups", "flows", "sport", "dport", "bytes", "namespace"]))
def test_any_object_reads_as_a_report_or_none(value):
    parse_report(value)


def _at_every_bound() -> Report:
    """A report with every list full and every string at its limit (and beyond: cut)."""
    s = lambda n: "x" * n  # noqa: E731
    big = 2**63 - 1
    summ = {"totals": {"drops": big, "events_delivered": big, "events_lost": big},
            "groups": [{"pod": {"namespace": s(300), "name": s(300) + str(i)}, "category": s(128), "reason": s(300),
                        "location": s(300), "count": big, "hint": s(5000)} for i in range(100)],
            "verdicts": [{"category": s(128), "verdict": s(5000)}],
            "top_flows": [{"proto": s(50), "src": s(300), "sport": 65535, "dst": s(300), "dport": 65535,
                           "pod": s(600), "category": s(300), "events": big}] * 50}
    base = Report(s(253), s(300), s(253), "Done", message=s(100_000), window_from=s(40), window_to=s(40),
                  updated=s(40), endpoint=s(10_000), cert_sha256="0" * 64)
    files = tuple(FileEntry(s(128), big) for _ in range(20))
    return from_summary(base, summ, files)


def test_a_report_at_every_bound_stays_under_the_documented_size():
    """docs/captures.md's bound is MAX_REPORT_BYTES, and it is the real one: the worst
    report is within it and not far below (a bound changed here must change the doc)."""
    capture = parse_capture({"metadata": {"name": "c" * 253, "namespace": "n" * 63, "uid": "u" * 36,
                                          "creationTimestamp": "2026-12-07T11:00:00Z"},
                             "spec": {"pods": {"selector": "app=web"}, "duration": "30s"}})
    size = len(json.dumps(report_object(capture, _at_every_bound()), separators=(",", ":")))
    assert MAX_REPORT_BYTES - 8 * 1024 < size <= MAX_REPORT_BYTES, size


def test_a_recording_report_is_small_and_the_final_one_has_it_all():
    full = _at_every_bound()
    brief = recording(replace(full, state="Recording"))
    o = report_object(CAPTURE, brief)
    assert len(json.dumps(o, separators=(",", ":"))) < 16 * 1024
    back = parse_report(json.loads(json.dumps(o)))
    assert back is not None and back.packets == full.packets and back.state == "Recording"
    assert len(back.groups) == RECORDING_GROUPS and all(g.hint == "" and g.verdict for g in back.groups)
    assert back.groups_omitted == full.groups_omitted + MAX_GROUPS - RECORDING_GROUPS
    assert back.pods == () and back.pods_omitted == full.pods_omitted + MAX_PODS and back.flows == ()
