"""The command line as a user meets it: main(argv, env) with StringIO streams.

Bad input: one line on stderr, a non-zero exit, no traceback. Nothing here
patches netdrop: what a test changes (who runs it, where tracefs and the named
namespaces are) it says in the Environment it passes.
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer import cli, messages
from tracer.env import Environment
from tracer.errors import ExitStatus, UserError
from tracer.pipeline.startup import Pending
from tracer.signals import Interrupted, Signals

from ...timing import allowed
from ..helpers import Run, built_summary


GOLDEN = Path(__file__).resolve().parents[2] / "golden"


def a_tracefs(tmp_path: Path) -> Path:
    """tracefs as a 6.x kernel shows it, for the steps after it (filters, cases)."""
    event = tmp_path / "tracefs" / "events" / "skb" / "kfree_skb"
    event.mkdir(parents=True)
    (event / "format").write_bytes((GOLDEN / "kfree_skb.format").read_bytes())
    return tmp_path / "tracefs"


def a_capture(tmp_path: Path) -> Path:
    """A capture directory with its summary.json, as `netdrop capture` leaves it."""
    result = built_summary(tmp_path)  # type: ignore[no-untyped-call]
    (tmp_path / "summary.json").write_text(json.dumps(result))
    return tmp_path


def test_not_root() -> None:
    run = Run(["watch", "--json"], euid=1000)
    assert run.status == 2 and int(ExitStatus.ERROR) == 2
    assert run.error == "netdrop: error: netdrop needs root to load BPF programs: run it with sudo"


@pytest.mark.parametrize("command", [["watch"], ["capture", "-o", "/nonexistent/x"], ["doctor"],
                                     ["demo", "--duration", "1s"]])
def test_every_command_that_loads_or_reads_the_node_needs_root(command: list[str]) -> None:
    run = Run(command, euid=1000)
    assert run.status == 2 and "needs root" in run.error


def test_unknown_netns_fails_before_loading(tmp_path: Path) -> None:
    (tmp_path / "pod-a").touch()
    run = Run(["watch", "--netns", "no-such-ns"], euid=0, netns_dir=tmp_path)
    assert run.status == 2
    assert run.error == (f"netdrop: error: unknown network namespace 'no-such-ns': {tmp_path}/no-such-ns "
                         "does not exist (known: pod-a)")


def test_doctor_unknown_netns(tmp_path: Path) -> None:
    run = Run(["doctor", "--netns", "no-such-ns"], euid=0, netns_dir=tmp_path)
    assert run.status == 2
    assert run.error == f"netdrop: error: unknown network namespace 'no-such-ns': {tmp_path}/no-such-ns does not exist"


def test_tracefs_missing(tmp_path: Path) -> None:
    run = Run(["watch"], euid=0, tracefs=(tmp_path,))
    assert run.status == 2
    assert "tracefs is not mounted" in run.error


@pytest.mark.parametrize("argv,msg", [
    (["watch", "--duration", "soon"], "not a duration"),
    (["watch", "--port", "99999"], "argument --port: '99999': expected a whole number from 1 to 65,535"),
    (["watch", "--ip", "1.2.3"], "not an IP address"),
    (["demo", "--cases", "nope"], "unknown case nope"),
    (["capture"], "the following arguments are required: --output"),
    (["summary", "x", "--format", "pdf"], "invalid choice: 'pdf'"),
    ([], "the following arguments are required: command"),
])
def test_bad_arguments(argv: list[str], msg: str, tmp_path: Path) -> None:
    run = Run(argv, euid=0, tracefs=(a_tracefs(tmp_path),))
    assert run.status == 2
    assert run.error.startswith("netdrop: error: ") and msg in run.error


@given(st.text())
def test_any_duration_text_ends_in_one_line(text: str) -> None:
    """Not a duration: 'not a duration' and exit 2; a duration: the next check
    (root) speaks. Either way one line, never a traceback."""
    run = Run(["watch", f"--duration={text}"], euid=1000)
    assert run.status == 2
    line = run.error
    assert line.startswith("netdrop: error: ")
    assert "\x1b" not in line


def test_durations() -> None:
    assert cli.parse_duration("30s") == 30
    assert cli.parse_duration("2m") == 120
    assert cli.parse_duration("10") == 10
    assert cli.parse_duration("500ms") == 0.5
    assert cli.parse_duration(" 1.5 h ") == 5400


@given(st.text(max_size=30))
def test_parse_duration_gives_a_positive_number_or_says_why(text: str) -> None:
    try:
        value = cli.parse_duration(text)
    except Exception as exc:    # noqa: BLE001 (the only one it may raise is asserted)
        assert type(exc).__name__ == "ArgumentTypeError" and "\n" not in str(exc)
    else:
        assert value > 0


def test_summary_is_written_to_the_environments_stdout(tmp_path: Path) -> None:
    a_capture(tmp_path)
    run = Run(["summary", str(tmp_path), "--format", "json"])
    assert run.status == ExitStatus.OK and run.err.getvalue() == ""
    assert json.loads(run.out.getvalue())["netdrop"] == "capture"
    markdown = Run(["summary", str(tmp_path), "--format", "markdown"])
    assert "### What to check first" in markdown.out.getvalue()


class ReaderLeft(io.StringIO):
    """stdout of `netdrop ... | head` once head has exited."""

    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_that_left_is_not_an_error(tmp_path: Path) -> None:
    a_capture(tmp_path)
    err = io.StringIO()
    status = cli.main(["summary", str(tmp_path)], Environment(stdout=ReaderLeft(), stderr=err))
    assert status == 0
    assert err.closed      # nothing more to say: Python's own complaint at exit goes nowhere


def make_fifo_tracefs(tmp_path: Path) -> Path:
    """A tracefs whose kfree_skb format file is a FIFO: reading it blocks, as a
    slow start-up step does (bcc compiling), until the test writes to it."""
    event = tmp_path / "events" / "skb" / "kfree_skb"
    event.mkdir(parents=True)
    os.mkfifo(event / "format")
    return event / "format"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_during_start_up_ends_the_command_in_one_line(tmp_path: Path, sig: int) -> None:
    fifo = make_fifo_tracefs(tmp_path)
    kill = threading.Timer(0.3, os.kill, (os.getpid(), sig))

    def unblock() -> None:      # the signal did not end it: let the read finish, the test fails
        with open(fifo, "w") as f:
            f.write("")

    rescue = threading.Timer(8, unblock)
    rescue.daemon = kill.daemon = True
    before = signal.getsignal(sig)
    t0 = time.monotonic()
    kill.start()
    rescue.start()
    try:
        run = Run(["watch", "--json"], euid=0, tracefs=(tmp_path,))
    finally:
        kill.cancel()
        rescue.cancel()
    assert time.monotonic() - t0 < allowed(2.0)         # the promise: 2 s (tests/timing.py); the rescue: 8 s
    assert run.status == 128 + sig == ExitStatus.stopped_by(sig)
    assert run.error == f"netdrop: stopped by {signal.Signals(sig).name} before tracing began"
    assert signal.getsignal(sig) is before


def test_a_signal_waits_for_a_deferred_step_then_ends_the_command() -> None:
    signals = Signals()
    old = signals.install()
    try:
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGHUP)     # the lab's build is not cut in half
            finished = True
        assert finished and signals.stop.is_set()
        with pytest.raises(Interrupted) as err:
            signals.check()
        assert err.value.signum == signal.SIGHUP
        signals.check()                              # raised once only: the cleanup is not interrupted
    finally:
        signals.restore(old)


def test_while_tracing_a_signal_only_asks_the_loop_to_stop() -> None:
    signals = Signals()
    old = signals.install()
    try:
        signals.tracing()
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.stop.wait(1) and signals.signum == signal.SIGINT
    finally:
        signals.restore(old)


def test_pending_hands_over_the_value_or_the_error() -> None:
    assert Pending(lambda: 42).result() == 42

    def fails() -> int:
        raise UserError("no pod x")

    with pytest.raises(UserError, match="no pod x"):
        Pending(fails).result()


def test_a_signal_ignored_by_whoever_started_us_stays_ignored() -> None:
    """`nohup netdrop capture ... &` must outlive its terminal."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        signals = Signals()
        old = signals.install()
        try:
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) == signals._handler
        finally:
            signals.restore(old)
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_warnings_reach_the_environments_stderr_made_printable() -> None:
    err = io.StringIO()
    messages.warn(Environment(stderr=err), "interface \x1b]0;owned\x07 gone")
    assert err.getvalue() == "netdrop: warning: interface \\x1b]0;owned\\x07 gone\n"


def test_an_environment_refuses_names_it_does_not_know() -> None:
    with pytest.raises(TypeError):
        Environment(colour=False)   # type: ignore[call-arg]
    env = Environment(stdout=io.StringIO())
    with pytest.raises(TypeError):
        env.but(stdot=io.StringIO())
    assert env.but(euid=1000).euid == 1000 and env.euid == os.geteuid()


def test_terminal_flags_come_from_the_stream_unless_set() -> None:
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    assert not env.stdout_isatty and not env.console().is_terminal
    tty = env.but(stdout_tty=True, width=100)
    assert tty.stdout_isatty and tty.console().is_terminal and tty.console().width == 100
    assert not tty.console(stderr=True).is_terminal
