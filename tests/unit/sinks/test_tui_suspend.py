"""Ctrl-Z and fg in the live console, on a pseudo-terminal (no root, no process stopped):
what the terminal is given (its settings, the escape sequences and the screen) when the
console gives it back and takes it back. The real stop and `fg` run in tmux
(tests/kernel/sinks/test_console_tmux.py)."""

import io
import os
import signal
import termios
import time

import pytest

from tracer.env import Environment
from tracer.sinks import console, tui
from tracer.sinks.keys import UiState, parse, step

from ..helpers import golden_groups

ALT_ON, ALT_OFF, CURSOR_ON = "\x1b[?1049h", "\x1b[?1049l", "\x1b[?25h"


class Writes(io.StringIO):
    """stdout as the terminal sees it: each write() on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, s: str) -> int:
        self.writes.append(s)
        return super().write(s)


def cooked(fd: int) -> bool:
    lflag = termios.tcgetattr(fd)[3]
    return bool(lflag & termios.ICANON) and bool(lflag & termios.ECHO)


@pytest.fixture
def pty_console():
    master, slave = os.openpty()
    stdin = os.fdopen(slave, "r")
    out = Writes()
    env = Environment(stdin=stdin, stdout=out, stdin_tty=True, stdout_tty=True, width=80)
    live = tui.LiveConsole(env, console.View(), golden_groups())
    try:
        yield live, out, slave
    finally:
        stdin.close()
        os.close(master)


def test_ctrl_z_as_a_byte_is_the_suspend_key_and_changes_no_view_state():
    assert parse("\x1a") == (["suspend"], "")
    assert parse("j\x1aq") == (["j", "suspend", "q"], "")
    state = UiState(paused=True, help=True)
    assert step(state, "suspend", []) == state


def test_given_back_the_terminal_is_cooked_and_nothing_is_drawn_until_taken_back(pty_console):
    live, out, fd = pty_console
    before = signal.getsignal(signal.SIGTSTP), signal.getsignal(signal.SIGCONT)
    with live:
        assert not cooked(fd) and ALT_ON in out.getvalue()
        assert signal.getsignal(signal.SIGTSTP) == live._on_tstp
        live._give_back()
        assert cooked(fd)
        given = out.getvalue()
        assert given.rindex(ALT_OFF) > given.rindex(ALT_ON) and given.rindex(CURSOR_ON) > given.rindex(ALT_ON)
        live.tick(golden_groups())
        live.keys(["down"])
        assert out.getvalue() == given              # the shell has the terminal: nothing written over it
        # Continued in the background (bg, or kill %1): the terminal stays the shell's.
        live.is_foreground = lambda fd: False
        live._take_back()
        assert cooked(fd) and out.getvalue() == given
        # fg: the reader thread takes it back: cbreak again, the alternate screen and the
        # whole screen in one write.
        n = len(out.writes)
        live.is_foreground = lambda fd: True
        deadline = time.monotonic() + 10       # only ends a broken test: a busy machine may take seconds
        while not [w for w in out.writes[n:] if w.startswith(ALT_ON)] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not cooked(fd)
        back = next(w for w in out.writes[n:] if w.startswith(ALT_ON))
        assert "netdrop watch" in back and "why" in back
        assert len(out.getvalue()) > len(given) + 80 * 10
    assert cooked(fd)
    assert (signal.getsignal(signal.SIGTSTP), signal.getsignal(signal.SIGCONT)) == before


def test_ending_while_given_back_writes_nothing_over_the_shell(pty_console):
    live, out, fd = pty_console
    with live:
        live._give_back()
        given = out.getvalue()
    assert out.getvalue() == given and cooked(fd)       # no last screen printed into the shell's


def test_a_continue_in_the_foreground_without_ctrl_z_sets_cbreak_again_and_redraws(pty_console):
    # SIGSTOP (not catchable) and SIGCONT: the shell may have reset the terminal meanwhile.
    live, out, fd = pty_console
    live.is_foreground = lambda fd: True
    with live:
        saved = termios.tcgetattr(fd)
        mode = termios.tcgetattr(fd)
        mode[3] |= termios.ICANON | termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, mode)
        n = len(out.writes)
        live._take_back()
        assert not cooked(fd) and len(out.writes) > n and "why" in out.writes[-1]
        termios.tcsetattr(fd, termios.TCSANOW, saved)


def test_ctrl_z_in_the_middle_of_a_draw_gives_the_terminal_back_once_the_draw_is_done(pty_console):
    live, out, fd = pty_console
    stops: list[tuple[bool, str]] = []
    live.stop_process = lambda: stops.append((cooked(fd), out.getvalue()))
    with live:
        with live._locked():                 # the event loop's thread, drawing
            live._on_tstp(signal.SIGTSTP, None)
            assert not stops and not cooked(fd)
        assert len(stops) == 1
        was_cooked, written = stops[0]
        assert was_cooked and written.rindex(ALT_OFF) > written.rindex(ALT_ON)    # given back, then stopped
        assert live._recheck.is_set()        # continued: the reader thread looks whether it is ours
        live._on_tstp(signal.SIGTSTP, None)  # outside a draw: at once
        assert len(stops) == 2
