"""env: what one run of netdrop is given from outside, in one object.

The standard streams and whether they are terminals (stdin: keys for the
live console), colour and the
terminal's width, the clocks, who runs it, and where the machine keeps
tracefs and the named network namespaces. cli.main(argv, env) hands it to
the command (commands/): a test makes one with StringIO streams and its own
directories (`Environment(stdout=io.StringIO(), euid=0)`), and reads what a
user would see, without patching anything. A name Environment does not know
is refused (TypeError), so a test cannot set something that is then ignored.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .node.namespaces import NETNS_RUN_DIR

if TYPE_CHECKING:
    from rich.console import Console

# Where tracefs is mounted, in the order bcc looks (the second under debugfs, on older set-ups).
TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _columns() -> int | None:
    """$COLUMNS, where it is a number of columns."""
    text = os.environ.get("COLUMNS", "")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 4 and int(text) > 0 else None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):   # closed, or the terminal is gone (EIO)
        return False


@dataclass(frozen=True, kw_only=True)
class Environment:
    # The streams of the process at the time the Environment is made (not at
    # import: pytest's capsys and a redirected sys.stdout are honoured).
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    # None: whatever the stream's isatty() says; True/False decide it (a test
    # renders the live console as a terminal would, into a StringIO).
    stdin_tty: bool | None = None     # a terminal on stdin makes the live console interactive (keys)
    stdout_tty: bool | None = None
    stderr_tty: bool | None = None
    # https://no-color.org: colour unless NO_COLOR is set (to anything).
    color: bool = field(default_factory=lambda: "NO_COLOR" not in os.environ)
    width: int | None = None    # the terminal's columns; None: rich asks the terminal ($COLUMNS, ioctl)
    # $COLUMNS (None: not set): how wide a report is where no terminal says it (report_width).
    columns: int | None = field(default_factory=_columns)
    now: Callable[[], datetime] = _utc_now              # wall clock, UTC: windows and timestamps
    monotonic: Callable[[], float] = time.monotonic     # intervals: how long since, when next
    euid: int = field(default_factory=os.geteuid)       # root loads BPF programs; anyone else is told so
    tracefs: tuple[Path, ...] = TRACEFS_CANDIDATES      # where tracefs may be mounted, in order
    netns_dir: Path = NETNS_RUN_DIR                     # named network namespaces (`ip netns`)

    @property
    def stdin_isatty(self) -> bool:
        return self.stdin_tty if self.stdin_tty is not None else _isatty(self.stdin)

    @property
    def stdout_isatty(self) -> bool:
        return self.stdout_tty if self.stdout_tty is not None else _isatty(self.stdout)

    @property
    def stderr_isatty(self) -> bool:
        return self.stderr_tty if self.stderr_tty is not None else _isatty(self.stderr)

    def report_width(self) -> int:
        """The columns a report (doctor, summary) is laid out for: the width given,
        else $COLUMNS; else on a terminal its width, and into a pipe or a file 80
        (layout.DEFAULT_WIDTH): the width terminals open with and a ticket is read
        at. Not the width of a terminal on stdin or stderr: `> report.txt` typed in a
        wide terminal is read elsewhere, and the same command writes the same file."""
        from .layout import DEFAULT_WIDTH

        if given := self.width or self.columns:
            return given
        return self.console().width if self.stdout_isatty else DEFAULT_WIDTH

    def but(self, **changes: Any) -> Environment:
        """A copy with these fields changed (unknown names: TypeError)."""
        return replace(self, **changes)

    def console(self, *, stderr: bool = False) -> Console:
        """A rich Console writing to stdout (or stderr), with this environment's
        terminal flag, colour and width."""
        from rich.console import Console

        stream, tty = (self.stderr, self.stderr_isatty) if stderr else (self.stdout, self.stdout_isatty)
        return Console(file=stream, force_terminal=tty, no_color=not self.color, width=self.width)
