"""tui: the live console on a terminal, and its keys when stdin is one too.

rich's Live draws console.Screen; no full-screen framework: a thread reads
stdin in cbreak mode (keys one by one, not echoed; ISIG stays on, so Ctrl-C
still sends SIGINT to the stop handler in signals.Signals) and hands the keys
to keys.step(). Both threads draw from a Frame, the copy of the groups the
last tick took, never from the groups the event loop changes.

The terminal is given back on every way out (the `with` block's exit, which
a stop signal reaches too, since the event loop ends within one pass): the
reader thread stops, Live leaves the alternate screen and shows the cursor,
and the saved termios settings come back. A terminal that went away (SIGHUP,
EIO) only makes these steps fail quietly.

Ctrl-Z (SIGTSTP, or the 0x1a byte where the terminal sends no signal for it)
gives the terminal back the same way and then stops the process as SIGTSTP's
default action does, so the shell gets a usable terminal; continued (SIGCONT),
the reader thread takes the terminal back, and redraws the whole screen, only
once this process group is the terminal's foreground group again: a stopped
job continued in the background (`bg`, or `kill %1`, which sends SIGTERM then
SIGCONT) leaves the terminal to the shell, since a background group that
changes its settings is stopped by SIGTTOU (drivers/tty/tty_jobctrl.c,
tty_check_change). While stopped nothing is read, but the kernel's counters
go on counting: the counts are exact after `fg`; events of that time may
be missing (a full ring buffer, or the event rate limit), which the header
counts as lost or sampled out.
"""

from __future__ import annotations

import os
import select
import signal
import termios
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import replace
from types import FrameType, TracebackType

from rich.live import Live

from ..env import Environment
from ..groups import Groups
from .. import signals
from . import console
from .keys import UiState, parse, step

KEY_POLL_SECONDS = 0.1    # how long a lone ESC waits for the rest of a sequence; also the reader's stop check
FINAL_SPARE = 4           # lines left under the last screen, printed after the live one, for the report
LOCK_WAIT_SECONDS = 1.0   # how long Ctrl-Z waits for a draw in another thread (a stalled terminal holds it)


def stop_as_sigtstp() -> None:
    """Stop the process as SIGTSTP's default action does (main thread: it sets a
    handler); returns once continued. In an orphaned process group (no shell
    with job control to continue it) the kernel discards the signal
    (kernel/signal.c, get_signal) and this returns at once."""
    previous = signal.signal(signal.SIGTSTP, signal.SIG_DFL)
    try:
        os.kill(os.getpid(), signal.SIGTSTP)
    finally:
        signal.signal(signal.SIGTSTP, previous)


def in_foreground(fd: int) -> bool:
    """Is this process's group the foreground group of the terminal on fd
    (tcgetpgrp(3))? False when it is not our controlling terminal or is gone."""
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False


class CbreakTerminal:
    """stdin as keys: no line buffering, no echo (termios ICANON and ECHO off,
    what tty.setcbreak does); signals (ISIG) stay, so Ctrl-C is still SIGINT."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved = termios.tcgetattr(fd)

    def enter(self) -> None:
        mode = termios.tcgetattr(self.fd)
        mode[3] &= ~(termios.ICANON | termios.ECHO)
        mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
        termios.tcsetattr(self.fd, termios.TCSANOW, mode)

    def restore(self) -> None:
        # TCSANOW: never wait on output a stalled SSH session does not take.
        with suppress(termios.error, OSError):
            termios.tcsetattr(self.fd, termios.TCSANOW, self.saved)


class LiveConsole:
    """The screen for one run: `with LiveConsole(...) as live:` and live.tick()
    on every tick of the event loop (its thread)."""

    def __init__(self, env: Environment, view: console.View, groups: Groups, *, show_benign: bool = False,
                 on_quit: Callable[[], None] = lambda: None) -> None:
        self.console = env.console()
        self.view = view
        self.on_quit = on_quit
        self.interactive = env.stdin_isatty and self.console.is_terminal
        self.view.interactive = self.interactive
        self.state = UiState(show_benign=show_benign)
        self.frame = console.Frame.of(groups)
        self._stdin = env.stdin
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._stack = ExitStack()
        self._reader: threading.Thread | None = None
        self._fd = -1
        self._term: CbreakTerminal | None = None
        self._pid = os.getpid()
        self._holder: int | None = None    # the thread inside _locked(), if any
        self._away = False                 # the terminal given back (Ctrl-Z, or continued in the background)
        self._recheck = threading.Event()  # SIGCONT came: is the terminal ours again?
        self._suspend_pending = False      # Ctrl-Z came in the middle of this thread's own drawing
        self.is_foreground: Callable[[int], bool] = in_foreground
        self.stop_process: Callable[[], None] = stop_as_sigtstp
        self.live = self._new_live()

    def _new_live(self) -> Live:
        return Live(console=self.console, screen=self.interactive, auto_refresh=False, transient=False,
                    redirect_stdout=False, redirect_stderr=False, vertical_overflow="crop")

    def __enter__(self) -> LiveConsole:
        with ExitStack() as stack:
            if self.interactive:
                self._fd = self._stdin.fileno()
                self._term = CbreakTerminal(self._fd)
                stack.callback(self._restore_terminal)       # last out: the terminal as it was
                self._term.enter()
            stack.callback(self._stop_live)
            self.live.start()
            if self.interactive:
                stack.callback(self._stop_reader)
                self._reader = threading.Thread(target=self._read_keys, name="netdrop-keys", daemon=True)
                self._reader.start()
                if threading.current_thread() is threading.main_thread():   # where Python takes signals
                    # Ctrl-Z and fg; ignored by whoever started us (no job control), they stay so.
                    stack.callback(signals.give_back, {**signals.take([signal.SIGTSTP], self._on_tstp),
                                                       **signals.take([signal.SIGCONT], self._on_cont)})
            self.draw()
            self._stack = stack.pop_all()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.close()
        if self.interactive and not self._away:     # away: the shell has the terminal, nothing is written over it
            # The alternate screen is gone: what it showed last stays on the terminal, above the report.
            self.view.interactive = False
            last = console.Screen(self.frame, self.view, replace(self.state, details=False, help=False,
                                                                  selected=None, paused=False),
                                  fill=True, spare=FINAL_SPARE)
            with suppress(OSError):
                self.console.print(last)

    def _stop_live(self) -> None:
        with self._locked(), suppress(OSError):
            self.live.stop()        # a no-op when stopped already (given back on Ctrl-Z)

    def _restore_terminal(self) -> None:
        # Away, the settings were given back already, and setting them from the
        # background would stop the process (SIGTTOU) instead of letting it end.
        if self._term is not None and not self._away:
            self._term.restore()

    def _stop_reader(self) -> None:
        self._closed.set()
        if self._reader is not None:
            self._reader.join(2 * KEY_POLL_SECONDS + 0.3)

    def tick(self, groups: Groups) -> None:
        """A tick of the event loop (its thread): a new frame, unless paused (counting goes on)."""
        if not self.state.paused:
            frame = console.Frame.of(groups)
            with self._locked():
                self.frame = frame
        self.draw()

    def draw(self) -> None:
        with self._locked():
            if self._closed.is_set() or self._away:
                return
            fill = self.console.is_terminal
            # An inline Live keeps its last line free: a frame as tall as the terminal would scroll it.
            spare = 0 if self.interactive else 1
            # PgUp PgDn: by the rows listed (the header, column names, footer and the why below take the rest)
            self.state = replace(self.state, page=max(1, self.console.size.height - 6 - console.PANEL_LEAST))
            screen = console.Screen(self.frame, self.view, self.state, fill=fill, spare=spare)
            with suppress(OSError):     # the terminal is gone (SIGHUP): the run ends on the signal
                self.live.update(screen, refresh=True)

    def keys(self, names: list[str]) -> None:
        """Keys pressed (reader thread; tests call it directly)."""
        if "suspend" in names:
            # The terminal sent Ctrl-Z as a byte (no VSUSP character, or ISIG off): do what
            # the terminal would have done, SIGTSTP to the foreground group, that is ours.
            with suppress(OSError):
                os.killpg(os.getpgrp(), signal.SIGTSTP)
            names = [k for k in names if k != "suspend"]
        if not names:
            return
        with self._locked():
            for key in names:
                order = [g.key for g in console.shown_rows(self.frame.groups, self.state)[0]]
                self.state = step(self.state, key, order)
            quit_now = self.state.quit
        if quit_now:
            self.on_quit()
        else:
            self.draw()

    def _read_keys(self) -> None:
        pending = ""
        while not self._closed.is_set():
            if self._away or self._recheck.is_set():
                self._recheck.clear()
                self._take_back()
                if self._away:           # not ours (stopped, or in the background): look again soon
                    self._closed.wait(KEY_POLL_SECONDS)
                    continue
            try:
                ready, _, _ = select.select([self._fd], [], [], KEY_POLL_SECONDS)
                if not ready:
                    if pending:          # an ESC with nothing after it: the Esc key
                        pending = ""
                        self.keys(["esc"])
                    continue
                data = os.read(self._fd, 256)
            except (OSError, ValueError):    # the terminal went away: the signal ends the run
                return
            if not data:
                return
            names, pending = parse(pending + data.decode("utf-8", "replace"))
            self.keys(names)

    # ------------------------------------------------------------ Ctrl-Z and fg

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """self._lock, noting which thread is inside: a Ctrl-Z handled in that
        thread (the main one, where Python runs signal handlers) must not give
        the terminal back in the middle of its own write; it waits for the end."""
        with self._lock:
            before, self._holder = self._holder, threading.get_ident()
            try:
                yield
            finally:
                self._holder = before
        if self._suspend_pending and self._holder != threading.get_ident() \
                and threading.current_thread() is threading.main_thread():
            self._suspend_pending = False
            self._suspend()

    def _on_tstp(self, signum: int, frame: FrameType | None) -> None:
        if signals.in_forked_child(self._pid, signum):
            return
        if self._holder == threading.get_ident():
            self._suspend_pending = True     # this thread was drawing: _locked() suspends at its end
            return
        self._suspend()

    def _on_cont(self, signum: int, frame: FrameType | None) -> None:
        # Continued (fg, bg, kill -CONT, or after a SIGSTOP we never saw): the reader
        # thread looks whether the terminal is ours and takes it back if it is.
        self._recheck.set()

    def _suspend(self) -> None:
        """Ctrl-Z (main thread): the terminal as the shell had it, then stop."""
        got = self._lock.acquire(timeout=LOCK_WAIT_SECONDS)
        try:
            if got:     # else a draw is stuck on a terminal that takes no output: stop all the same
                self._give_back()
            self.stop_process()
        finally:
            if got:
                self._lock.release()
            self._recheck.set()

    def _give_back(self, settings: bool = True) -> None:
        """Leave the alternate screen, show the cursor and (settings) restore the
        terminal's saved settings; nothing is drawn until _take_back()."""
        with self._locked():
            if self._away:
                return
            self._away = True
            with suppress(OSError):
                self.live.stop()
            if settings and self._term is not None:
                self._term.restore()

    def _take_back(self) -> None:
        """After SIGCONT (reader thread): in the foreground, cbreak again, the
        alternate screen and the whole screen drawn in one write; in the
        background, hands off the terminal."""
        with self._locked():
            if self._closed.is_set():
                return
            if not self.is_foreground(self._fd):
                # Settings untouched from the background: SIGTTOU would stop us, or where it is
                # ignored (tmux's panes inherit that) the shell's own settings would change.
                self._give_back(settings=False)
                return
            if self._term is not None:
                with suppress(termios.error, OSError):
                    self._term.enter()
            with suppress(OSError), self.console:   # one write: the alternate screen and the screen on it
                if self._away:
                    self.live = self._new_live()
                    self.live.start()
                    self._away = False
                self.draw()
