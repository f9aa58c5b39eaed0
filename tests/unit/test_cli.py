"""Bad input: one line on stderr, a non-zero exit, no traceback."""

import pytest

from tracer import cli, kernel


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_not_root(monkeypatch, capsys):
    monkeypatch.setattr(cli.os, "geteuid", lambda: 1000)
    assert cli.main(["watch", "--json"]) == 2
    assert one_line_error(capsys) == "netdrop: error: netdrop needs root to load BPF programs: run it with sudo"


def test_unknown_netns_fails_before_loading(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli.os, "geteuid", lambda: 0)
    import tracer.filters as f
    monkeypatch.setattr(f, "NETNS_RUN_DIR", tmp_path)
    monkeypatch.setattr(f.resolve_netns, "__defaults__", (tmp_path,))
    assert cli.main(["watch", "--netns", "no-such-ns"]) == 2
    assert "unknown network namespace 'no-such-ns'" in one_line_error(capsys)


def test_tracefs_missing(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli.os, "geteuid", lambda: 0)
    monkeypatch.setattr(kernel, "TRACEFS_CANDIDATES", (tmp_path,))
    monkeypatch.setattr(kernel.find_tracefs, "__defaults__", ((tmp_path,),))
    assert cli.main(["watch"]) == 2
    assert "tracefs is not mounted" in one_line_error(capsys)


@pytest.mark.parametrize("argv,msg", [
    (["watch", "--duration", "soon"], "not a duration"),
    (["watch", "--port", "99999"], "not a port number"),
    (["watch", "--ip", "1.2.3"], "not an IP address"),
    (["demo", "--cases", "nope"], "unknown case nope"),
])
def test_bad_arguments(monkeypatch, capsys, argv, msg):
    monkeypatch.setattr(cli.os, "geteuid", lambda: 0)
    assert cli.main(argv) == 2
    assert msg in one_line_error(capsys)


def test_durations():
    assert cli.parse_duration("30s") == 30
    assert cli.parse_duration("2m") == 120
    assert cli.parse_duration("10") == 10
    assert cli.parse_duration("500ms") == 0.5
