"""signals: the process's signal handlers, in one place.

Stop (one per process, SIGNALS): SIGINT, SIGTERM and SIGHUP end any command,
from the first line of cli.main() to the end. Beside it the primitives that
install and give back handlers, which the console's Ctrl-Z (sinks/tui.py)
uses too.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType

Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def take(signums: Iterable[int], handler: Callable[[int, FrameType | None], object]) -> dict[int, Handler]:
    """handler for each of signums, except those ignored by whoever started us
    (`nohup`, a shell's background job: they mean them to stay ignored);
    returns the handlers replaced, for give_back()."""
    old: dict[int, Handler] = {}
    for signum in signums:
        if signal.getsignal(signum) == signal.SIG_IGN:
            continue
        old[signum] = signal.signal(signum, handler)
    return old


def give_back(old: dict[int, Handler]) -> None:
    for signum, handler in old.items():
        # None: a handler not installed from Python; the default is the closest.
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def in_forked_child(pid: int, signum: int) -> bool:
    """In a process forked from pid (a helper that entered a namespace), a
    handler inherited from pid must not run its code there (it would unwind a
    copy of main(), or stop the wrong terminal user): the signal gets its
    default action again and is raised anew. True when that happened."""
    if os.getpid() == pid:
        return False
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return True


class Interrupted(BaseException):
    """A stop signal before tracing began: the command ends at once with
    128 + the signal's number. A BaseException, like KeyboardInterrupt, so
    that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Signals:
    """Ctrl-C, SIGTERM and SIGHUP (a closed terminal) for the whole run, from
    the first line of main(). Before tracing, the first one raises Interrupted
    where Python is (right after the C call it interrupted returns, e.g. bcc's
    compile), so start-up ends within moments and every `finally` on the way
    cleans up. While tracing (and after), it only sets `stop`: the event loop
    sees it within one pass and the run ends with its usual lines.

    Signal handlers belong to the process, so there is one of these (SIGNALS)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.signum: int | None = None
        self._raise = True
        self._deferred = 0
        self._pid = os.getpid()
        self.installed: dict[int, Handler] = {}

    def install(self) -> dict[int, Handler]:
        """The handlers, in place; returns the ones they replace. Call inside the
        try that catches Interrupted: a signal may come before this returns."""
        self.stop.clear()
        self.signum, self._raise, self._deferred = None, True, 0
        self._pid = os.getpid()
        # A stop signal ignored by whoever started us (`nohup`) stays ignored:
        # they mean netdrop to outlive the terminal.
        self.installed = take(STOP_SIGNALS, self._handler)
        return self.installed

    restore = staticmethod(give_back)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if in_forked_child(self._pid, signum):
            return
        self.stop.set()
        if self.signum is not None:
            return                # a second signal: the first one is being handled
        self.signum = signum
        if self._raise and not self._deferred:
            self._raise = False   # raised once: the cleanup it starts is not interrupted
            raise Interrupted(signum)

    def check(self) -> None:
        """Raise now what arrived while deferred (or do nothing)."""
        if self.signum is not None and self._raise:
            self._raise = False
            raise Interrupted(self.signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Steps that must not be cut in half (the lab's build starts processes
        it must know about to remove them): a signal only sets `stop` until the
        caller's next check()."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1

    def tracing(self) -> None:
        """From here on a signal only sets `stop`: the run ends with its lines."""
        self.check()
        self._raise = False


SIGNALS = Signals()
