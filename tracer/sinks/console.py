"""console: the live view of `netdrop watch`, built with rich.

render() turns plain state into a rich renderable, so tests print it into a
string with rich.console.Console(record=True) and read it like a user would.

Everything shown that came from the node or the cluster (interface, pod and
namespace names, hints quoting rule comments) goes through text(): a rich Text,
never markup, with control characters escaped (textsafe.printable), since rich
passes ESC through to the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Group as RichGroup
from rich.console import RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..explain.categories import entry
from ..groups import Groups
from ..kernel.loader import Hook, Stats
from ..pods.attribute import Attribution
from ..textsafe import printable

@dataclass
class View:
    """Everything the screen shows besides the groups."""

    hooks: list[Hook] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    netns_names: dict[int, str] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)
    elapsed: float = 0.0
    remaining: float | None = None
    title: str = "netdrop watch"
    note: str | None = None
    pods: str | None = None       # the pod selection and the state of the pod source
    width: int | None = None      # the terminal's columns, if known: narrow ones get a compact table
    notices: list[str] = field(default_factory=list)   # latent risks seen (conntrack clash_resolve ...)


def text(plain: str, style: str = "") -> Text:
    """Text for the terminal: not markup, control characters escaped."""
    return Text(printable(plain), style=style)


def netns_label(inode: int, names: dict[int, str], inode_too: bool = True) -> Text:
    name = names.get(inode)
    if not name:
        return Text(str(inode))
    label = text(name)
    if inode_too:
        label.append(f"\n{inode}", style="dim")
    return label


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def pod_cell(who: Attribution | None) -> Text:
    if who is None or who.pod is None:
        return Text("-", style="dim")
    cell = text(who.pod.label, style="bold" if who.pod.known else "italic")
    if who.direction:
        cell.append(f"\n{who.direction}", style="dim")
    return cell


COMPACT_BELOW = 110   # terminal columns: narrower screens get the compact table


def groups_table(groups: Groups, view: View, limit: int = 20) -> Table:
    compact = view.width is not None and view.width < COMPACT_BELOW
    table = Table(expand=True, show_lines=True,
                  title="Drops by pod, namespace, category, reason and location", title_justify="left")
    # Bounded identity columns, so that the flow and the why keep most of the width.
    if compact:
        table.add_column("pod · netns", max_width=22, overflow="fold")
        table.add_column("why · where", min_width=14, max_width=16, overflow="fold")
        table.add_column("drops", justify="right", no_wrap=True)
    else:
        table.add_column("pod", max_width=30, overflow="fold")
        table.add_column("netns", max_width=20, no_wrap=True, overflow="ellipsis")
        table.add_column("category", min_width=9, no_wrap=True)
        table.add_column("reason / location", min_width=14, max_width=24, overflow="fold")
        table.add_column("drops", justify="right", no_wrap=True)
        table.add_column("/s", justify="right", no_wrap=True)
    table.add_column("latest flow · why", ratio=1, min_width=24)
    rows = groups.rows()
    for g in rows[:limit]:
        flow = Text()
        if g.latest is not None:
            d = g.latest
            where = f" on {d.ifname}" if d.ifname else ""
            mtu = f" mtu {d.mtu}" if d.mtu else ""
            flow.append(printable(f"{d.flow} len {d.len}{mtu}{where}") + "\n")
            flow.append(printable(g.hint or ""), style="dim")
        else:
            flow.append("(no event delivered for this group yet)", style="dim")
        category = text(g.category, style=entry(g.category).style)
        reason = Text.assemble(text(g.reason or "-"), "\n", text(g.location or "?", "dim"))
        rate = f"{g.rate:,.0f}" if g.rate else ""
        if compact:
            who = pod_cell(g.attribution)
            who.append("\n")
            who.append_text(netns_label(g.netns, view.netns_names))
            table.add_row(who, Text.assemble(category, "\n", reason), f"{g.count:,}" + (f"\n{rate}/s" if rate else ""),
                          flow)
        else:
            table.add_row(pod_cell(g.attribution), netns_label(g.netns, view.netns_names), category, reason,
                          f"{g.count:,}", rate, flow)
    if len(rows) > limit:
        table.caption = f"{len(rows) - limit} more groups not shown"
    if not rows:
        table.add_row(*([""] * (len(table.columns) - 1)), Text("no drops yet", style="dim"))
    return table


def recent_table(groups: Groups, view: View) -> Table:
    table = Table(expand=True, title="Recent drops", title_justify="left", box=None)
    for col in ("time", "pod", "netns", "dev", "flow", "len", "reason", "category"):
        table.add_column(col, no_wrap=True, overflow="ellipsis",
                         max_width={"pod": 30, "netns": 20}.get(col), ratio=1 if col == "flow" else None)
    for d, v, who in reversed(groups.recent):
        # Text, not markup: "[fd00::1]:53" must not be read as a style tag.
        pod = text(who.pod.label if who.pod else "-", style="" if who.pod else "dim")
        table.add_row(d.time.strftime("%H:%M:%S.%f")[:-3], pod, netns_label(d.netns, view.netns_names, False),
                      text(d.ifname or "-"), text(d.flow), str(d.len), text(d.reason or "-"),
                      text(v.category, style=entry(v.category).style))
    return table


def status_line(view: View) -> Text:
    s = view.stats
    line = Text()
    line.append(f"{s.matched:,} drops counted", style="bold")
    line.append(f" · {s.events:,} events delivered · ")
    line.append(f"{s.lost:,} events lost", style="bold red" if s.lost else "")
    if s.sampled_out:
        line.append(f" · {s.sampled_out:,} sampled out (over the event rate limit; counts stay exact)")
    if s.counter_full:
        line.append(f" · {s.counter_full:,} drops not grouped (counter map full)", style="bold red")
    line.append(f" · elapsed {_duration(view.elapsed)}")
    if view.remaining is not None:
        line.append(f" · time left {_duration(view.remaining)}", style="bold")
    # Hook details, filters (namespace names), pods and notices (rule comments) are node text.
    line.append("\nhooks: ")
    line.append(printable("; ".join(
        f"{'✓' if h.attached else '✗'} {h.name}" + (f" ({h.detail})" if h.detail else "") for h in view.hooks)))
    line.append("\nfilters: " + printable("; ".join(view.filters) if view.filters else "none (all namespaces)"))
    if view.pods:
        line.append("\npods: " + printable(view.pods))
    for notice in view.notices:
        line.append("\nnotice: " + printable(notice), style="yellow")
    if view.note:
        line.append("\n" + printable(view.note), style="italic")
    return line


def summary_lines(groups: Groups, names: dict[int, str], limit: int = 20) -> list[str]:
    """The exact counts per group in plain text, for the end of `watch --json` (stderr)."""
    lines: list[str] = []
    rows = sorted(groups.rows(), key=lambda g: -g.count)
    for g in rows[:limit]:
        who = (g.attribution.pod.label + f" {g.attribution.direction}"
               if g.attribution and g.attribution.pod else "no pod")
        netns = f"{g.netns} ({names[g.netns]})" if g.netns in names else str(g.netns)
        line = f"{g.count:,} {g.category} {g.reason or '-'} at {g.location or '?'}, netns {netns}, {who}"
        lines.append(printable(line))
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more groups")
    return lines


def render(groups: Groups, view: View) -> RenderableType:
    return RichGroup(
        Panel(status_line(view), title=view.title, title_align="left"),
        groups_table(groups, view),
        recent_table(groups, view),
    )
