"""Bad input: one line on stderr, a non-zero exit, no traceback."""

import pytest

from tracer import cli
from tracer.kernel import facts


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
    import tracer.kernel.filters as f
    monkeypatch.setattr(f, "NETNS_RUN_DIR", tmp_path)
    monkeypatch.setattr(f.resolve_netns, "__defaults__", (tmp_path,))
    assert cli.main(["watch", "--netns", "no-such-ns"]) == 2
    assert "unknown network namespace 'no-such-ns'" in one_line_error(capsys)


def test_tracefs_missing(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli.os, "geteuid", lambda: 0)
    monkeypatch.setattr(facts, "TRACEFS_CANDIDATES", (tmp_path,))
    monkeypatch.setattr(facts.find_tracefs, "__defaults__", ((tmp_path,),))
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


def test_a_signal_during_start_up_ends_the_command_in_one_line(monkeypatch, capsys):
    import os
    import signal
    import time

    monkeypatch.setattr(cli.os, "geteuid", lambda: 0)

    def slow_start(args):       # a signal while the kernel is probed (or bcc compiles)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("not interrupted")

    monkeypatch.setattr(cli, "kernel_facts", slow_start)
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    assert cli.main(["watch", "--json"]) == 128 + signal.SIGTERM
    assert time.monotonic() - t0 < 2
    assert one_line_error(capsys) == "netdrop: stopped by SIGTERM before tracing began"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_waits_for_a_deferred_step_then_ends_the_command():
    import os
    import signal

    signals = cli.Signals()
    old = signals.install()
    try:
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGHUP)     # the lab's build is not cut in half
            finished = True
        assert finished and signals.stop.is_set()
        with pytest.raises(cli.Interrupted) as err:
            signals.check()
        assert err.value.signum == signal.SIGHUP
        signals.check()                              # raised once only: the cleanup is not interrupted
    finally:
        signals.restore(old)


def test_while_tracing_a_signal_only_asks_the_loop_to_stop():
    import os
    import signal

    signals = cli.Signals()
    old = signals.install()
    try:
        signals.tracing()
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.stop.wait(1) and signals.signum == signal.SIGINT
    finally:
        signals.restore(old)


def test_pending_hands_over_the_value_or_the_error():
    assert cli.Pending(lambda: 42).result() == 42

    def fails() -> int:
        raise cli.UserError("no pod x")

    with pytest.raises(cli.UserError, match="no pod x"):
        cli.Pending(fails).result()


def test_a_signal_ignored_by_whoever_started_us_stays_ignored():
    """`nohup netdrop capture ... &` must outlive its terminal."""
    import signal

    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        signals = cli.Signals()
        old = signals.install()
        try:
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) == signals._handler
        finally:
            signals.restore(old)
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)
