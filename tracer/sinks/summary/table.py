"""table: a capture's summary as text for the width it gets (summary --format table).

What to check first comes as blocks, wrapped at spaces, a quoted command of a
hint never broken nor cut (tracer/layout.py); the groups and the top flows as
tables where every cell fits on one line, else as a block per row, its count
and cause first. Node text goes through printable() before anything lays it
out: rich passes ESC through to the terminal.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from rich.cells import cell_len

from ...layout import DEFAULT_WIDTH, MIN_WIDTH, wrap
from ...textsafe import printable
from .schema import Summary
from .views import (FLOW_HEADER, GROUP_HEADER, flow_rows, flows_note, group_rows, headline, losses, set_aside, shown,
                    verdict_label, verdict_lines)

# At most this many lines in the table, cut between words beyond: what netdrop writes
# fits whole at 80 columns (a where names three places), anyone's file may not.
VERDICT_LINES = 2      # a verdict's sentence
WHERE_LINES = 4        # where
HINT_LINES = 6         # its hint


def to_table(s: Summary, width: int | None = None, show_benign: bool = False) -> str:
    """The summary as text for width columns: verdicts as blocks, wrapped at spaces
    (a quoted command in a hint is never broken nor cut), then the groups and the
    top flows as tables where every cell fits on one line, else each a block."""
    width = max(width or DEFAULT_WIDTH, MIN_WIDTH)
    # printable() first: rich passes ESC through to the terminal.
    out = wrap(printable(headline(s)), width, first="netdrop capture: ")
    out += ["", "What to check first"]
    for v in shown(s["verdicts"], show_benign):
        first, where, hint = (printable(line) for line in verdict_lines(v))
        out += wrap(printable(verdict_label(v)) + first, width, first="• ", rest="    ", max_lines=VERDICT_LINES)
        out += wrap(where, width, first="    ", rest="      ", max_lines=WHERE_LINES)
        out += wrap(hint, width, quoted=True, first="    ", rest="    ", max_lines=HINT_LINES)
    if aside := set_aside(s, show_benign):
        out += wrap(aside, width, first="• ", rest="  ")
    for n in s.get("notices", []):
        out += wrap(printable(n), width, quoted=True, first="• notice: ", rest="  ")
    out += _rows_for(width, "Drops by pod, category, reason and location", GROUP_HEADER,
                     group_rows(s, show_benign), _group_block)
    out += _rows_for(width, "Top flows (from delivered events)", FLOW_HEADER, flow_rows(s, show_benign),
                     _flow_block)
    if note := flows_note(s):
        out += wrap(printable(note), width)
    out += wrap(printable(losses(s)), width)
    return "\n".join(out) + "\n"


Fields = list[str]      # a block's line: its parts, joined by " · ", each kept whole where it fits


def _rows_for(width: int, title: str, header: list[str], rows: list[list[str]],
              block: Callable[[list[str]], tuple[Fields, Fields]]) -> list[str]:
    """A section: a table if every cell fits on one line at width, else a block per
    row: its count and cause flush, the rest indented below."""
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    if not rows:
        return ["", title, "    none"]
    table = Table(title=title, title_justify="left")
    for h in header:
        table.add_column(h, overflow="fold")
    for r in rows:
        table.add_row(*(Text(printable(c)) for c in r))      # Text, never markup: "[fd00::1]:53" is text
    con = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    # Measured unbounded (Measurement.get clamps to the width it is given): the width every cell fits in.
    if Measurement.get(con, con.options.update_width(1_000_000), table).maximum <= width:
        con.print(table)
        return ["", *(line.rstrip() for line in con.export_text().rstrip("\n").splitlines())]
    out = ["", title]
    for r in rows:
        for fields, first in zip(block([printable(c) for c in r]), ("", "    "), strict=True):
            # A field wider than a line (anyone's long name) folds like any word.
            whole = [f for f in fields if cell_len(f) <= width - 4]
            out += wrap(" · ".join(fields), width, whole=whole, first=first, rest="    ")
    return out


def _group_block(r: list[str]) -> tuple[Fields, Fields]:
    pod, direction, netns, category, reason, location, drops, rate, first, last = r
    ends = "no pod" if pod == "-" else f"pod {pod}" + (f" {direction}" if direction != "-" else "")
    return ([f"{drops} drops", category, f"{reason} at {location}"],
            [ends, f"netns {netns}", f"{rate} per s", f"seen {first} to {last}"])


def _flow_block(r: list[str]) -> tuple[Fields, Fields]:
    flow, proto, events, category, reason, pod = r
    count = f"{events} event{'' if events == '1' else 's'}"
    return [f"{flow} {proto}"], [count, category, reason, "no pod" if pod == "-" else f"pod {pod}"]
