"""signals: installing and giving back process signal handlers, for the stop
signals of a run (session.Signals) and the console's Ctrl-Z (sinks/tui.py)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from types import FrameType

Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


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
