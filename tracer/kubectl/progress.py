"""progress: each node's state in a capture, as the table `capture` shows live and `get` prints.

One line per node, within 80 columns: node, state, packets (exact, the kernel's
counters), sampled events seen and lost, and the report's message cut to what
is left of the line. Everything in it was written by agents or the API server:
made printable, and given to rich as Text (never as markup).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..captures.report import Report
from ..textsafe import printable

WAITING = "waiting"         # no report yet
MISSING = "no report"       # none by the deadline: the node counts as failed

_STYLES = {"Done": "green", "Failed": "red", MISSING: "red", "Recording": "cyan", WAITING: "dim"}


@dataclass(frozen=True)
class NodeState:
    node: str
    state: str                  # Recording | Done | Failed | waiting | no report
    packets: int | None = None
    events: int | None = None
    lost: int | None = None
    message: str = ""

    @classmethod
    def of(cls, node: str, report: Report | None, *, missing: bool = False) -> NodeState:
        if report is None:
            return cls(node, MISSING if missing else WAITING)
        return cls(node, report.state, report.packets, report.events_seen, report.events_lost, report.message)

    @property
    def failed(self) -> bool:
        return self.state in ("Failed", MISSING)


def states(expected: Iterable[str], reports: Mapping[str, Report], *, deadline_passed: bool = False) -> list[NodeState]:
    """One state per node: the expected ones, then any other node that reported, by name."""
    nodes = sorted(set(expected) | set(reports))
    return [NodeState.of(n, reports.get(n), missing=deadline_passed) for n in nodes]


def _num(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


NODE_WIDTH = 24     # a longer node name is cut (an ellipsis marks it); the failures are said in full below


def table(rows: list[NodeState], width: int = 80) -> Table:
    """One line per node in `width` columns: the message gets what the other columns leave."""
    cells = [(_cut(printable(r.node), NODE_WIDTH), r.state, _num(r.packets), _num(r.events), _num(r.lost),
              printable(" ".join(r.message.split()))) for r in rows]
    heads = ("NODE", "STATE", "PACKETS", "EVENTS", "LOST")
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]
    room = max(10, width - sum(widths) - len(widths))    # one space between columns
    t = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), show_edge=False, expand=False)
    for i, h in enumerate(heads):
        t.add_column(h, no_wrap=True, justify="right" if i >= 2 else "left", width=widths[i])
    t.add_column("MESSAGE", no_wrap=True, max_width=room)
    for c in cells:
        t.add_row(Text(c[0]), Text(c[1], style=_STYLES.get(c[1], "")), c[2], c[3], c[4], Text(_cut(c[5], room)))
    return t


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def headline(key: str, rows: list[NodeState], left: float | None, waiting: float | None = None) -> Text:
    """left: seconds until the capture ends (None: it is over); waiting: once it has ended, the
    seconds the plugin still waits for the nodes' last reports."""
    done = sum(r.state == "Done" for r in rows)
    failed = sum(r.failed for r in rows)
    parts = [f"capture {key}: {done}/{len(rows)} nodes done"]
    if failed:
        parts.append(f"{failed} failed")
    if left is not None and left > 0:
        parts.append(f"{int(left)} s left")
    elif waiting is not None and waiting > 0:
        parts.append(f"ended, reports due within {int(waiting)} s")
    elif left is not None or waiting is not None:
        parts.append("time is up")
    return Text(printable(", ".join(parts)))


def view(key: str, rows: list[NodeState], left: float | None, width: int = 80,
         waiting: float | None = None) -> RenderableType:
    return Group(headline(key, rows, left, waiting), table(rows, width))


def to_text(renderable: RenderableType, width: int) -> str:
    """A rendering as plain text at `width` columns (what `get` prints, what tests read)."""
    buf = io.StringIO()
    Console(width=width, force_terminal=False, color_system=None, file=buf).print(renderable)
    return buf.getvalue()
