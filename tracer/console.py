"""console: the live view of `netdrop watch`, built with rich.

render() turns plain state into a rich renderable, so tests print it into a
string with rich.console.Console(record=True) and read it like a user would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Group as RichGroup
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .attribute import Attribution
from .groups import Groups
from .loader import Hook, Stats

CATEGORY_STYLE = {
    "mtu": "bold magenta", "netfilter": "bold red", "conntrack": "red", "no-socket": "yellow",
    "no-route": "bold yellow", "neighbor": "cyan", "rp-filter": "blue", "tcp": "green",
    "socket-buffer": "bright_magenta", "qdisc": "bright_blue", "malformed": "bright_red", "other": "white",
}


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


def netns_label(inode: int, names: dict[int, str], inode_too: bool = True) -> Text:
    name = names.get(inode)
    if not name:
        return Text(str(inode))
    text = Text(name)
    if inode_too:
        text.append(f"\n{inode}", style="dim")
    return text


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def pod_cell(who: Attribution | None) -> Text:
    if who is None or who.pod is None:
        return Text("-", style="dim")
    text = Text(who.pod.label, style="bold" if who.pod.known else "italic")
    if who.direction:
        text.append(f"\n{who.direction}", style="dim")
    return text


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
            flow.append(f"{d.flow} len {d.len}{mtu}{where}\n")
            flow.append(g.hint or "", style="dim")
        else:
            flow.append("(no event delivered for this group yet)", style="dim")
        category = Text(g.category, style=CATEGORY_STYLE.get(g.category, ""))
        reason = Text.assemble(g.reason or "-", "\n", (g.location or "?", "dim"))
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
        pod = Text(who.pod.label if who.pod else "-", style="" if who.pod else "dim")
        table.add_row(d.time.strftime("%H:%M:%S.%f")[:-3], pod, netns_label(d.netns, view.netns_names, False),
                      Text(d.ifname or "-"), Text(d.flow), str(d.len), d.reason or "-",
                      Text(v.category, style=CATEGORY_STYLE.get(v.category, "")))
    return table


def status_line(view: View) -> Text:
    s = view.stats
    text = Text()
    text.append(f"{s.matched:,} drops counted", style="bold")
    text.append(f" · {s.events:,} events delivered · ")
    text.append(f"{s.lost:,} events lost", style="bold red" if s.lost else "")
    if s.sampled_out:
        text.append(f" · {s.sampled_out:,} sampled out (over the event rate limit; counts stay exact)")
    if s.counter_full:
        text.append(f" · {s.counter_full:,} drops not grouped (counter map full)", style="bold red")
    text.append(f" · elapsed {_duration(view.elapsed)}")
    if view.remaining is not None:
        text.append(f" · time left {_duration(view.remaining)}", style="bold")
    text.append("\nhooks: ")
    text.append("; ".join(
        f"{'✓' if h.attached else '✗'} {h.name}" + (f" ({h.detail})" if h.detail else "") for h in view.hooks))
    text.append("\nfilters: " + ("; ".join(view.filters) if view.filters else "none (all namespaces)"))
    if view.pods:
        text.append("\npods: " + view.pods)
    for notice in view.notices:
        text.append("\nnotice: " + notice, style="yellow")
    if view.note:
        text.append("\n" + view.note, style="italic")
    return text


def summary_lines(groups: Groups, names: dict[int, str], limit: int = 20) -> list[str]:
    """The exact counts per group in plain text, for the end of `watch --json` (stderr)."""
    lines = []
    rows = sorted(groups.rows(), key=lambda g: -g.count)
    for g in rows[:limit]:
        who = g.attribution.pod.label + f" {g.attribution.direction}" if g.attribution and g.attribution.pod else "no pod"
        netns = f"{g.netns} ({names[g.netns]})" if g.netns in names else str(g.netns)
        lines.append(f"{g.count:,} {g.category} {g.reason or '-'} at {g.location or '?'}, netns {netns}, {who}")
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more groups")
    return lines


def render(groups: Groups, view: View):
    return RichGroup(
        Panel(status_line(view), title=view.title, title_align="left"),
        groups_table(groups, view),
        recent_table(groups, view),
    )
