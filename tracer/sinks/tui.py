"""tui: the live console on a terminal, and its keys when stdin is one too.

rich's Live draws console.Screen; no full-screen framework: a thread reads
stdin in cbreak mode (keys one by one, not echoed; ISIG stays on, so Ctrl-C
still sends SIGINT to the stop handler in session.Signals) and hands the keys
to keys.step(). Both threads draw from a Frame, the copy of the groups the
last tick took, never from the groups the event loop changes.

The terminal is given back on every way out (the `with` block's exit, which
a stop signal reaches too, since the event loop ends within one pass): the
reader thread stops, Live leaves the alternate screen and shows the cursor,
and the saved termios settings come back. A terminal that went away (SIGHUP,
EIO) only makes these steps fail quietly.
"""

from __future__ import annotations

import os
import select
import termios
import threading
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import replace
from types import TracebackType

from rich.live import Live

from ..env import Environment
from ..groups import Groups
from . import console
from .keys import UiState, parse, step

KEY_POLL_SECONDS = 0.1    # how long a lone ESC waits for the rest of a sequence; also the reader's stop check
FINAL_SPARE = 4           # lines left under the last screen, printed after the live one, for the report


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
        self.live = Live(console=self.console, screen=self.interactive, auto_refresh=False, transient=False,
                         redirect_stdout=False, redirect_stderr=False, vertical_overflow="crop")

    def __enter__(self) -> LiveConsole:
        with ExitStack() as stack:
            if self.interactive:
                self._fd = self._stdin.fileno()
                term = CbreakTerminal(self._fd)
                stack.callback(term.restore)       # last out: the terminal as it was
                term.enter()
            stack.callback(self._stop_live)
            self.live.start()
            if self.interactive:
                stack.callback(self._stop_reader)
                self._reader = threading.Thread(target=self._read_keys, name="netdrop-keys", daemon=True)
                self._reader.start()
            self.draw()
            self._stack = stack.pop_all()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.close()
        if self.interactive:
            # The alternate screen is gone: what it showed last stays on the terminal, above the report.
            self.view.interactive = False
            last = console.Screen(self.frame, self.view, replace(self.state, details=False, help=False,
                                                                  selected=None, paused=False),
                                  fill=True, spare=FINAL_SPARE)
            with suppress(OSError):
                self.console.print(last)

    def _stop_live(self) -> None:
        with self._lock, suppress(OSError):
            self.live.stop()

    def _stop_reader(self) -> None:
        self._closed.set()
        if self._reader is not None:
            self._reader.join(2 * KEY_POLL_SECONDS + 0.3)

    def tick(self, groups: Groups) -> None:
        """A tick of the event loop (its thread): a new frame, unless paused (counting goes on)."""
        if not self.state.paused:
            frame = console.Frame.of(groups)
            with self._lock:
                self.frame = frame
        self.draw()

    def draw(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            fill = self.console.is_terminal
            # An inline Live keeps its last line free: a frame as tall as the terminal would scroll it.
            spare = 0 if self.interactive else 1
            self.state = replace(self.state, page=max(1, self.console.size.height - 6))
            screen = console.Screen(self.frame, self.view, self.state, fill=fill, spare=spare)
            with suppress(OSError):     # the terminal is gone (SIGHUP): the run ends on the signal
                self.live.update(screen, refresh=True)

    def keys(self, names: list[str]) -> None:
        """Keys pressed (reader thread; tests call it directly)."""
        if not names:
            return
        with self._lock:
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
