"""markdown: a summary for the ticket (summary --format markdown), node text through markdown_text()."""

from __future__ import annotations

from ...layout import wrap
from ...textsafe import markdown_text
from .. import stackview
from .schema import Summary
from .views import (FLOW_HEADER, GROUP_HEADER, flow_rows, flows_note, footer, group_rows, headline, node_name,
                    set_aside, shown, verdict_label, verdict_lines)


def _cut(text: str, width: int) -> str:
    """text on one line of at most width, cut between words (never inside a quoted command)."""
    return wrap(text, width, quoted=True, max_lines=1)[0] if len(text) > width else text


# A verdict's line in Markdown, cut beyond (between words, never inside a quoted command):
# what netdrop writes fits whole, its decisive fact often last; anyone's file may not.
MARKDOWN_LINE = 400


def to_markdown(s: Summary, show_benign: bool = False) -> str:
    md = markdown_text

    def table(header: list[str], rows: list[list[str]]) -> str:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(md(c) for c in r) + " |" for r in rows]
        return "\n".join(out)
    parts = [f"## netdrop capture: {md(node_name(s))}", "", md(headline(s)), "", "### What to check first", ""]
    for v in shown(s["verdicts"], show_benign):
        first, where, hint = verdict_lines(v)
        # Three source lines, joined by hard line breaks (two trailing spaces): one bullet.
        parts += [f"- **{md(verdict_label(v))}**{md(_cut(first, MARKDOWN_LINE))}  ",
                  f"  {md(_cut(where, MARKDOWN_LINE))}  ", f"  {md(_cut(hint, MARKDOWN_LINE))}"]
    if not s["verdicts"]:
        parts.append("- no drops in the window")
    if aside := set_aside(s, show_benign):
        parts.append(f"- {md(aside)}")
    for n in s.get("notices", []):
        parts.append(f"- notice: {md(n)}")
    parts += ["", "### Drops by pod, category, reason and location", "",
              table(GROUP_HEADER, group_rows(s, show_benign))]
    parts += stackview.markdown(shown(s["groups"], show_benign))
    if flows := flow_rows(s, show_benign):
        parts += ["", "### Top flows (from delivered events)", "", table(FLOW_HEADER, flows)]
        if note := flows_note(s):
            parts += ["", md(note)]
    parts += ["", md(footer(s)), ""]
    return "\n".join(parts)
