"""The agent's capture decisions on plain data: which node takes part, which
counter keys and events a capture sees, when its report is written, what its
files and final report say."""

import json
from datetime import UTC, datetime

from tracer.agent.capturerun import BACKLOG_BATCH, CaptureRun, Window
from tracer.agent.captures import _Fanout, _Unkept, report_due, reports_refusal, takes_part
from tracer.captures.api import Refused, read_seen
from tracer.captures.report import REPORT_SECONDS
from tracer.captures.spec import Capture, parse_capture
from tracer.kernel import decode
from tracer.pods.attribute import NO_POD, Attribution, PodRef
from tracer.pods.objects import PodInfo
from tracer.sinks.capture import prepare_output
from tracer.watch import Pipeline

from ..helpers import KALLSYMS, REASONS, RECORDS, record

T0 = datetime(1970, 1, 1, 1, 9, 0, tzinfo=UTC)     # the golden records' times are 01:09:11 (mono_to_wall 0)
NO_SOCKET, IP_NOROUTE = 3, 88


def capture(spec: dict, namespace: str = "shop", created: datetime = T0) -> Capture:
    return parse_capture({"metadata": {"name": "web-drops", "namespace": namespace, "uid": "cap-1",
                                       "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ")},
                          "spec": {"duration": "2m", **spec}})


def pod(name: str, namespace: str = "shop", labels: dict | None = None) -> PodInfo:
    return PodInfo(namespace, name, "uid-" + namespace + "-" + name, "node-1", ("10.244.1.11",), False, (),
                   tuple((labels or {}).items()), "Running")


WEB = pod("web-0", labels={"app": "web"})
WEB_ELSEWHERE = pod("web-0", namespace="other", labels={"app": "web"})
DB = pod("db-0")
REFS = {1: WEB, 2: WEB_ELSEWHERE, 3: DB}     # pod id (tag >> 2) -> pod


def pod_of_tag(tag: int) -> Attribution:
    p = REFS.get(tag >> 2)
    return Attribution(PodRef(p.namespace, p.name, p.uid, p.node), "in-pod") if p else NO_POD


def key(reason: int, pod_id: int, netns: int = 7) -> tuple:
    return (netns, reason, 0, pod_id << 2 | 1 if pod_id else 0, 0)


def run_of(c: Capture, tmp_path, baseline: dict | None = None, records: list | None = None) -> CaptureRun:
    dec = decode.Decoder(REASONS, KALLSYMS, mono_to_wall=0.0)
    return CaptureRun(c, "node-1", prepare_output(str(tmp_path / "cap")), Window(c.starts_at(), baseline or {},
                      records or []), decoder=dec, pod_of_tag=pod_of_tag, totals={"lost": 5}, pcap_snaplen=0)


def test_a_node_takes_part_when_it_is_selected_or_hosts_a_selected_pod():
    by_label = capture({"pods": {"selector": "app=web"}})
    assert takes_part(by_label, "node-1", [DB, WEB])
    assert not takes_part(by_label, "node-1", [DB, WEB_ELSEWHERE])    # another namespace's pod of that label
    assert not takes_part(by_label, "node-1", [])
    nodes = capture({"nodes": {"names": ["node-2"]}}, namespace="netdrop")
    assert takes_part(nodes, "node-2", []) and not takes_part(nodes, "node-1", [WEB])
    assert takes_part(capture({"nodes": {"all": True}}, namespace="netdrop"), "node-9", [])


def test_a_refused_capture_is_reported_by_nodes_hosting_its_namespace_or_named_in_the_agents_one():
    bad = read_seen({"metadata": {"name": "x", "namespace": "shop", "uid": "u"}, "spec": {"pods": {}}})
    assert isinstance(bad, Refused) and bad.why == "metadata.creationTimestamp: not a time"
    assert reports_refusal(bad, "node-1", [DB]) and not reports_refusal(bad, "node-1", [WEB_ELSEWHERE])
    named = read_seen({"metadata": {"name": "x", "namespace": "netdrop", "uid": "u",
                                    "creationTimestamp": "2026-01-01T00:00:00Z"},
                       "spec": {"nodes": {"names": ["node-2"]}, "duration": "9h"}})
    assert isinstance(named, Refused) and named.why == "duration: 1s to 1h"
    assert reports_refusal(named, "node-2", []) and not reports_refusal(named, "node-1", [pod("a", "netdrop")])
    # Not an object with a namespace, name and uid: nothing to report against.
    assert read_seen({"metadata": {"name": "x"}}) is None and read_seen(["odd"]) is None


def test_a_pod_capture_counts_only_its_selected_pods_since_the_baseline(tmp_path):
    c = capture({"pods": {"selector": "app=web"}})
    run = run_of(c, tmp_path, baseline={key(NO_SOCKET, 1): 40})
    run.scope.select([WEB, WEB_ELSEWHERE, DB])
    counts = {key(NO_SOCKET, 1): 57, key(NO_SOCKET, 2): 1000, key(NO_SOCKET, 3): 300, key(IP_NOROUTE, 0): 9}
    run.count(counts, {"lost": 8}, now=1.0, wall=c.created.timestamp() + 5)
    assert run.counted == 17        # web-0 of shop only: not other/web-0, not db-0, not the node's own
    assert run.stats.matched == 17 and run.stats.lost == 3
    # A pod that comes to match later (a new pod of the selector, scheduled here) brings its counts in.
    late = pod("web-1", labels={"app": "web"})
    REFS[4] = late
    try:
        run.scope.select([late])
        run.count({**counts, key(NO_SOCKET, 4): 6}, {"lost": 8}, now=3.0, wall=c.created.timestamp() + 7)
    finally:
        del REFS[4]
    assert run.counted == 23


def test_a_node_capture_counts_every_key_of_the_node(tmp_path):
    c = capture({"nodes": {"all": True}}, namespace="netdrop")
    run = run_of(c, tmp_path, baseline={key(NO_SOCKET, 2): 1000})
    run.count({key(NO_SOCKET, 1): 5, key(NO_SOCKET, 2): 1010, key(IP_NOROUTE, 0): 9}, {}, 1.0, c.created.timestamp())
    assert run.counted == 5 + 10 + 9


def test_categories_narrow_the_counts_and_ports_only_the_events(tmp_path):
    c = capture({"pods": {"names": ["web-0"]}, "filters": {"categories": ["no-socket"], "ports": [9999]}})
    run = run_of(c, tmp_path)
    run.scope.select([WEB])
    run.count({key(NO_SOCKET, 1): 4, key(IP_NOROUTE, 1): 3}, {}, 1.0, c.created.timestamp())
    assert run.counted == 4
    dec = decode.Decoder(REASONS, KALLSYMS, mono_to_wall=0.0)
    fanout = _Fanout()
    fanout.runs = [run]
    index = _Index()
    pipeline = Pipeline(dec, _Unkept(dec), [fanout], lambda: index)
    # golden 2: UDP to 9999 (no-socket); 4: TCP to 8080 (no-socket); 5: no-route to port 80.
    s = 10**9
    at = int(c.created.timestamp()) * s      # within the window (mono_to_wall 0: ts is the Unix time)
    pipeline.deliver([record(2, at + s, None, 1 << 2 | 1), record(4, at + 2 * s, None, 1 << 2 | 1),
                      record(5, at + 3 * s, None, 1 << 2 | 1), record(2, at + 4 * s, None, 2 << 2 | 1),
                      record(2, at - 600 * s, None, 1 << 2 | 1)])
    # The port's event of web-0; not 8080, not no-route, not other/web-0, not one before the window.
    assert run.recorder.delivered == 1
    report = run.finish(c.ends_at())
    summary = json.loads((tmp_path / "cap" / "summary.json").read_text())
    assert report.packets == summary["totals"]["drops"] == 4 and report.events_seen == 1
    assert any("narrow the sampled events only" in n for n in summary["notices"])


class _Index:
    def attribute(self, drop: decode.Drop) -> Attribution:
        return pod_of_tag(drop.pod_raw)


def test_the_report_is_due_at_most_every_report_seconds(tmp_path):
    assert report_due(float("-inf"), 0.0)
    assert not report_due(100.0, 100.0 + REPORT_SECONDS - 0.1) and report_due(100.0, 100.0 + REPORT_SECONDS)
    c = capture({"pods": {"names": ["web-0"]}})
    run = run_of(c, tmp_path)
    first = run.progress(c.created.timestamp() + 1)
    assert first.state == "Recording" and first.window_to is None and run.last_report == c.created.timestamp() + 1


def test_the_done_report_and_summary_json_agree_and_name_the_files(tmp_path):
    c = capture({"pods": {"names": ["web-0"]}, "since": "1m"})
    run = run_of(c, tmp_path, baseline={key(NO_SOCKET, 1): 2})
    run.scope.select([WEB])
    run.count({key(NO_SOCKET, 1): 44}, {"lost": 5}, 1.0, c.ends_at())
    report = run.finish(c.ends_at() + 1)
    summary = json.loads((tmp_path / "cap" / "summary.json").read_text())
    assert report.state == "Done" and report.message == ""
    assert report.packets == summary["totals"]["drops"] == 42
    assert report.window_from == "1970-01-01T01:08:00Z" and report.window_to == "1970-01-01T01:11:00Z"
    assert [p.name for p in report.pods] == ["web-0"] and report.pods[0].packets == 42
    assert {f.name for f in report.files} == {"summary.json", "events.jsonl"}
    assert all(f.bytes == (tmp_path / "cap" / f.name).stat().st_size for f in report.files)


def test_a_window_the_recorder_cut_is_said_in_the_done_report(tmp_path):
    c = capture({"pods": {"names": ["web-0"]}, "since": "10m"})
    dec = decode.Decoder(REASONS, KALLSYMS, mono_to_wall=0.0)
    start = c.created.timestamp() - 252
    run = CaptureRun(c, "node-1", prepare_output(str(tmp_path / "cap")), Window(start, {}, (), cut=True),
                     decoder=dec, pod_of_tag=pod_of_tag, totals={}, pcap_snaplen=0)
    report = run.finish(c.ends_at())
    assert report.state == "Done" and report.message == "since cut to 4m12s: the recorder's history"


def test_the_past_window_goes_through_a_batch_a_tick(tmp_path):
    c = capture({"pods": {"names": ["web-0"]}})
    past = [RECORDS[2]] * (2 * BACKLOG_BATCH + 5)
    run = run_of(c, tmp_path, records=past)
    sizes = []
    while run.behind:
        sizes.append(len(run.past()))
    assert sizes == [BACKLOG_BATCH, BACKLOG_BATCH, 5] and run.backlog == ()
