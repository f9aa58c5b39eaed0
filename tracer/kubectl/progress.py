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


def table(rows: list[NodeState]) -> Table:
    t = Table(box=None, pad_edge=False, padding=(0, 1), show_edge=False, expand=False)
    t.add_column("NODE", no_wrap=True, overflow="ellipsis", max_width=28)
    t.add_column("STATE", no_wrap=True, min_width=9)
    t.add_column("PACKETS", justify="right", no_wrap=True)
    t.add_column("EVENTS", justify="right", no_wrap=True)
    t.add_column("LOST", justify="right", no_wrap=True)
    t.add_column("MESSAGE", no_wrap=True, overflow="ellipsis", ratio=1)
    for r in rows:
        t.add_row(Text(printable(r.node)), Text(r.state, style=_STYLES.get(r.state, "")), _num(r.packets),
                  _num(r.events), _num(r.lost), Text(printable(" ".join(r.message.split()))))
    return t


def headline(key: str, rows: list[NodeState], left: float | None) -> Text:
    done = sum(r.state == "Done" for r in rows)
    failed = sum(r.failed for r in rows)
    parts = [f"capture {key}: {done}/{len(rows)} nodes done"]
    if failed:
        parts.append(f"{failed} failed")
    if left is not None:
        parts.append(f"{max(0, int(left))} s left" if left > 0 else "time is up")
    return Text(printable(", ".join(parts)))


def view(key: str, rows: list[NodeState], left: float | None) -> RenderableType:
    return Group(headline(key, rows, left), table(rows))


def to_text(renderable: RenderableType, width: int) -> str:
    """A rendering as plain text at `width` columns (what `get` prints, what tests read)."""
    buf = io.StringIO()
    Console(width=width, force_terminal=False, color_system=None, file=buf).print(renderable)
    return buf.getvalue()
