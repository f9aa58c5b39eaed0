"""view: doctor's findings for people, laid out for the width they get, and as JSON.

Each finding is a block: its severity and check with what is wrong, then its
evidence, then the fix on lines of its own. Prose wraps at spaces; a command
of the fix stays whole on one line (tracer/layout.py), so it can be copied as
printed, at 80 columns as at 200.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

from ..layout import wrap
from ..textsafe import printable
from .findings import SEVERITIES, Finding, problems
from .node import Node

if TYPE_CHECKING:
    from rich.text import Text

    from ..env import Environment

STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan", "ok": "green", "unchecked": "dim"}
INDENT = " " * (max(len(s) for s in SEVERITIES) + 1)     # the severity's column: "unchecked "
EVIDENCE = INDENT + "· "
FIX = INDENT + "fix: "


def block(f: Finding, width: int) -> list[Text]:
    """One finding in lines of at most width cells (a command longer than that
    on a line of its own). Findings quote node and API text (interface, pod and
    Service names): no control character of theirs reaches the terminal."""
    from rich.text import Text

    check = printable(f.check)
    head = [Text(line) for line in wrap(f"{check} — {printable(f.summary)}", width,
                                        first=f.severity.ljust(len(INDENT)), rest=INDENT)]
    head[0].stylize(STYLE[f.severity], 0, len(f.severity))
    head[0].stylize("bold", len(INDENT), len(INDENT) + len(check))
    lines = head
    for e in f.evidence:
        lines += [Text(line, style="dim") for line in wrap(printable(e), width, first=EVIDENCE,
                                                           rest=" " * len(EVIDENCE))]
    if f.fix:
        fix = [Text(line) for line in wrap(printable(f.fix), width, whole=[printable(c) for c in f.commands],
                                           first=FIX, rest=" " * len(FIX))]
        fix[0].stylize("bold", len(INDENT), len(FIX))
        lines += fix
    return lines


def render(findings: list[Finding], node: Node, width: int) -> Text:
    """The report: a title, then the findings by severity, a blank line between
    blocks of more than one line. Printed as it is (soft_wrap): lines are already
    laid out, and rich must neither wrap nor cut a long command again."""
    from rich.text import Text

    order = {s: i for i, s in enumerate(SEVERITIES)}
    out = Text(f"netdrop doctor: {printable(node.label)}", style="bold")
    one_line = False        # the block before: the title stands apart
    for f in sorted(findings, key=lambda f: order[f.severity]):
        lines = block(f, width)
        # One-line findings (most of the "ok" ones) follow each other without a gap.
        out.append("\n" if one_line and len(lines) == 1 else "\n\n")
        out.append(Text("\n").join(lines))
        one_line = len(lines) == 1
    return out


def write(env: Environment, findings: list[Finding], node: Node) -> None:
    """The report on env's stdout, for its report width (env.report_width)."""
    env.console().print(render(findings, node, env.report_width()), soft_wrap=True)


def to_json(findings: list[Finding], node: Node) -> str:
    return json.dumps({"node": node.label, "findings": [asdict(f) for f in findings],
                       "problems": len(problems(findings))}, indent=2) + "\n"
