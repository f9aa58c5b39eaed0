"""The live table of a capture's nodes, rendered to a string at 80 columns, and what it makes of agents' text."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracer.captures.report import Report, parse_report
from tracer.kubectl import progress
from tracer.kubectl.capture import check_output
from tracer.errors import UserError


def _report(node: str, state: str, message: str = "", packets: int = 0) -> Report:
    return Report("web", "uid-1", node, state, message, packets=packets, events_seen=packets // 2,  # type: ignore[arg-type]
                  events_lost=3)


def test_one_line_per_node_within_80_columns():
    reports = {
        "node-1": _report("node-1", "Done", packets=1_234_567),
        "ip-10-0-12-34.eu-west-1.compute.internal": _report(
            "ip-10-0-12-34.eu-west-1.compute.internal", "Recording", "since cut to 4m12s: the recorder's history"),
        "node-3": _report("node-3", "Failed", "the flight recorder is off on this node (--record-budget 0); "
                                              "start the agent with a budget to capture the past " * 3),
    }
    rows = progress.states({"node-1", "node-3", "node-4"} | set(reports), reports)
    text = progress.to_text(progress.view("shop/web", rows, 75.4), 80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[0] == "capture shop/web: 1/4 nodes done, 1 failed, 75 s left"
    assert lines[1].split() == ["NODE", "STATE", "PACKETS", "EVENTS", "LOST", "MESSAGE"]
    body = {line.split()[0]: line for line in lines[2:]}
    assert len(lines) == 2 + 4          # one line per node, however long its message
    assert body["node-1"].split()[1:5] == ["Done", "1,234,567", "617,283", "3"]
    assert body["node-4"].split()[1:] == ["waiting", "-", "-", "-"]
    assert body["node-3"].rstrip().endswith("…") and "the flight recorder" in body["node-3"]
    assert any(k.startswith("ip-10-0-12-34") for k in body)     # a long node name cut, still one line
    final = progress.states({"node-4"}, {}, deadline_passed=True)
    assert final[0].state == progress.MISSING and final[0].failed


def test_the_headline_counts_down_the_capture_then_the_wait_for_its_reports():
    rows = progress.states({"node-1"}, {})

    def head(left, waiting):
        return progress.to_text(progress.view("shop/web", rows, left, 80, waiting), 80).splitlines()[0]

    # A 20 s capture: 20 s left, not the 50 s the plugin may wait with the agents' 30 s of grace.
    assert head(19.6, 49.6) == "capture shop/web: 0/1 nodes done, 19 s left"
    assert head(-0.4, 29.6) == "capture shop/web: 0/1 nodes done, ended, reports due within 29 s"
    assert head(-30.4, -0.4) == "capture shop/web: 0/1 nodes done, time is up"
    assert head(None, None) == "capture shop/web: 0/1 nodes done"


def test_agents_text_cannot_drive_the_terminal():
    obj = {"report": {"capture": {"name": "web", "uid": "u"}, "node": "node-1", "state": "Failed",
                      "message": "\x1b[2J\x1b]0;owned\x07[bold red]gone[/] \u202eevil\nsecond line"}}
    report = parse_report(obj)
    assert report is not None
    text = progress.to_text(progress.table(progress.states((), {"node-1": report})), 80)
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "[bold red]gone[/]" in text           # shown as written, not taken as markup
    assert len(text.splitlines()) == 2


@pytest.mark.parametrize("what", ["file", "full"])
def test_output_must_be_new_or_empty(tmp_path: Path, what: str):
    check_output(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty")
    target = tmp_path / "x"
    if what == "file":
        target.write_text("")
    else:
        target.mkdir()
        (target / ".hidden").write_text("")
    with pytest.raises(UserError, match="exists and is not an empty directory"):
        check_output(target)
