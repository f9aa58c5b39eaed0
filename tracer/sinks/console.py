"""console: the live view of `watch` and `demo`, built with rich.

One screen: a header of at most 3 lines (counts, events lost, time left; one
short line for hooks, filters and pods; a notice or the keys), then one line
per group, ranked by recent rate, then count, as many as the terminal holds,
then one line saying what is not shown (benign drops set aside, more groups).
A row's why starts with the fact that decides (its category's lead:
explain/lead.py), since at 80 columns it has about 35 characters; pod names
are shortened to fit (podnames.py), never two pods alike. The rows below the
list show the selected group's whole why and evidence (the first group's
while none is selected), then the recent drops, as room allows. A group opens
into its details (the full hint and its evidence, the rule or the MTU path,
the latest flows, the pods at both ends, first and last seen); `h` shows the
full hooks, filters and pods, as --verbose does in the header.

render() turns plain state into a rich renderable (Screen) that lays itself
out in the width and height rich gives it, so tests print it into a string
with rich.console.Console(record=True, width=..., height=...) and read it
like a user would. The header and View are in header.py, the keys that
change the state in keys.py, the terminal and the loop in tui.py.

Everything shown that came from the node or the cluster (interface, pod and
namespace names, hints quoting rule comments) goes through text(): a rich Text,
never markup, with control characters escaped (textsafe.printable), since rich
passes ESC through to the terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from ..explain.benign import why_at
from ..explain.categories import entry
from ..explain.verdict import Verdict
from ..groups import Group, Groups, ranked
from ..kernel.decode import Drop
from ..pods.attribute import Attribution, PodRef
from ..textsafe import printable
from .header import HEADER_LINES as HEADER_LINES
from .header import WIDE, full_context, header
from .header import View as View
from .header import text as text
from .keys import UiState
from .podnames import Name, end_cut, short_names

PLAIN_ROWS = 50         # groups listed when the output is no terminal (a file, a pipe): no height to fill
KEYS_HELP = (
    ("↑ ↓ (k j), PgUp PgDn, Home End", "select a group"),
    ("Enter or →", "open its details: the full why with its evidence, latest flows, pods at both ends"),
    ("← or Esc", "back to the list"),
    ("p", "pause the display (counting goes on)"),
    ("s", "sort by: recent rate, count, newest, pod"),
    ("b", "show or hide benign drops (those every healthy node makes; always counted)"),
    ("h or ?", "this help: hooks, filters and pods in full"),
    ("q", "quit (Ctrl-C too), with the end-of-run report"),
)


@dataclass(frozen=True)
class Frame:
    """The groups as one tick saw them: copies, so that a key handled in
    another thread renders them while the event loop goes on."""

    groups: tuple[Group, ...]
    recent: tuple[tuple[Drop, Verdict, Attribution], ...] = ()

    @classmethod
    def of(cls, groups: Groups) -> Frame:
        return cls(tuple(groups.snapshot()), tuple(groups.recent))


def _count(n: int) -> str:
    """At most 7 characters: the drops column stays narrow."""
    if n < 1_000_000:
        return f"{n:,}"
    return f"{n / 1e6:.1f}M" if n < 1_000_000_000 else f"{n / 1e9:.1f}G"


def _rate(r: float) -> str:
    if r <= 0:
        return ""
    if r < 10:
        return f"{r:.1f}"
    return f"{r:.0f}" if r < 10_000 else f"{r / 1e3:.0f}k"


def _time(t: datetime | None) -> str:
    return t.strftime("%H:%M:%S UTC") if t else "-"


def netns_name(inode: int, names: dict[int, str]) -> str:
    name = names.get(inode)
    return f"{name} ({inode})" if name else str(inode)


# A pod's text on the screen, at a width: screen_names() shortens names to fit, never two pods alike.
PodName = Callable[[PodRef, int], str]
DIRECTION = len(" from-pod")    # what a pod's direction takes beside its name


def _label(p: PodRef, width: int) -> str:
    return p.label


def who(a: Attribution | None, name: PodName = _label, width: int = WIDE) -> str:
    """The pod and its direction, or both ends: "default/web -> default/db", in
    width (each of both ends in half of it) where name() shortens."""
    if a is None or a.pod is None:
        return "-"
    if a.peer is not None:
        half = max(1, (width - 4) // 2)
        pod, peer = name(a.pod, half), name(a.peer, half)
        # The arrow follows the packet: the peer sent it when our pod receives it.
        if a.direction == "to-pod" or a.peer_direction == "from-pod":
            return f"{peer} -> {pod}"
        return f"{pod} -> {peer}"
    if not a.direction:
        return name(a.pod, width)
    return f"{name(a.pod, width - DIRECTION)} {a.direction}"


def screen_names(pods: Iterable[PodRef], widths: Iterable[int], namespaced: bool) -> PodName:
    """name(pod, width) for the pods on one screen (podnames.short_names). Narrow
    (not namespaced): names without their namespace, which the details give."""
    def full(p: PodRef) -> Name:
        if not p.known or not p.name:
            return Name(p.label)
        return Name(p.name, p.workload, f"{p.namespace}/" if namespaced else "")

    asked = tuple(widths)
    texts = short_names({p: full(p) for p in pods},
                        [w for width in asked for w in (width, (width - 4) // 2, width - DIRECTION)])
    return lambda p, width: texts.get((p, width)) or end_cut(full(p).full, width)


def why(g: Group) -> str:
    if g.hint:
        return g.hint
    if g.benign:
        return why_at(g.reason, g.location) or "benign"
    return "(no event delivered for this group yet)"


def lead(g: Group) -> str | None:
    """The fact that decides, in a few words (the category's lead), or None: the hint leads itself."""
    return entry(g.category).lead_of(g.latest, g.detail) if g.latest is not None and g.hint else None


def why_cell(g: Group, with_where: bool = True) -> Text:
    """A row's why: its lead, then the whole hint (dim) as far as the row goes.
    with_where False (no reason/location column): a group without events leads with both."""
    first = lead(g)
    if first is not None and not why(g).startswith(first):
        return text(first) + text(" · " + why(g), "dim")
    if first is None and not g.hint and not with_where:
        return text(where(g, compact=True)) + text(" · " + why(g), "dim")
    return text(why(g), "" if g.hint else "dim")


def where(g: Group, compact: bool = False) -> str:
    """"PKT_TOO_BIG at ip_forward"; compact (narrow terminals): "PKT_TOO_BIG@ip_forward"."""
    return f"{g.reason or '-'}{'@' if compact else ' at '}{g.location or '?'}"


def shown_rows(groups: tuple[Group, ...] | list[Group], state: UiState) -> tuple[list[Group], list[Group]]:
    """The groups listed, in order, and the benign ones set aside."""
    rows = ranked(groups, state.sort)
    if state.show_benign:
        return rows, []
    return [g for g in rows if not g.benign], [g for g in rows if g.benign]


# ---------------------------------------------------------------- the list

@dataclass(frozen=True)
class Columns:
    """The list's columns at a width: bounded, so that the why keeps the rest.
    Narrower than 160 the reason and location read "REASON@location"; narrower
    than 100 they leave the row (each group's why leads with its decisive fact,
    and the selected group's details below the list give them) and pod names
    go without their namespace; narrower than 70 the category leaves too."""

    pod: int
    category: int
    where: int          # 0: not shown
    namespaced: bool
    compact_where: bool

    @classmethod
    def at(cls, width: int) -> Columns:
        if width < 70:
            return cls(16, 0, 0, False, True)
        if width < 100:
            return cls(22, 9, 0, False, True)
        if width < 160:
            return cls(28, 11, 24, True, True)
        return cls(34, 13, 40, True, False)


def groups_table(rows: list[Group], width: int, selected: object | None = None,
                 name: PodName = _label) -> Table:
    cols = Columns.at(width)
    pods = [text(who(g.attribution, name, cols.pod), "" if g.attribution and g.attribution.pod else "dim")
            for g in rows]
    table = Table(box=None, expand=True, padding=(0, 1), collapse_padding=True, pad_edge=False,
                  header_style="bold dim", show_edge=False)
    # As wide as the names shown need, at most cols.pod: the why gets the rest.
    table.add_column("pod", width=min(cols.pod, max([3, *(p.cell_len for p in pods)])), no_wrap=True,
                     overflow="ellipsis")
    if cols.category:
        table.add_column("category", width=cols.category, no_wrap=True, overflow="ellipsis")
    if cols.where:
        table.add_column("reason@location" if cols.compact_where else "reason at location", width=cols.where,
                         no_wrap=True, overflow="ellipsis")
    table.add_column("drops", width=7, justify="right", no_wrap=True, overflow="ellipsis")
    table.add_column("/s", width=5, justify="right", no_wrap=True, overflow="ellipsis")
    table.add_column("why", ratio=1, no_wrap=True, overflow="ellipsis")
    for g, pod in zip(rows, pods, strict=True):
        style = "reverse" if g.key == selected else "dim" if g.benign else ""
        cells: list[RenderableType] = [pod]
        if cols.category:
            cells.append(text(g.category, entry(g.category).style))
        if cols.where:
            cells.append(text(where(g, cols.compact_where)))
        cells += [_count(g.count), _rate(g.rate), why_cell(g, with_where=bool(cols.where))]
        table.add_row(*cells, style=style)
    if not rows:
        table.add_row(*[""] * (len(table.columns) - 1), Text("no drops yet", style="dim"))
    return table


RECENT_POD = (14, 30)     # the recent drops' pod column: narrower than 120, and wider


def recent_table(recent: tuple[tuple[Drop, Verdict, Attribution], ...], names: dict[int, str],
                 width: int, name: PodName = _label) -> Table:
    table = Table(expand=True, title="Recent drops", title_justify="left", box=None, padding=(0, 1),
                  collapse_padding=True, pad_edge=False, header_style="bold dim")
    wide = width >= 120     # narrower: the flow keeps the room, netns, length and category go
    pod_w = RECENT_POD[wide]
    cols = ("time", "pod", "netns", "dev", "flow", "len", "reason", "category") if wide else (
        "time", "pod", "dev", "flow", "reason")
    for col in cols:
        table.add_column(col, no_wrap=True, overflow="ellipsis",
                         max_width={"pod": pod_w, "netns": 20, "dev": None if wide else 10,
                                    "reason": 16}.get(col),
                         min_width=24 if col == "flow" else None, ratio=1 if col == "flow" else None)
    for d, v, at in reversed(recent):
        # Text, not markup: "[fd00::1]:53" must not be read as a style tag.
        cells: dict[str, str | Text] = {"time": d.time.strftime("%H:%M:%S.%f")[:-3 if wide else -7],
                 "pod": text(name(at.pod, pod_w) if at.pod else "-"),
                 "netns": text(names.get(d.netns) or str(d.netns)),
                 "dev": text(d.ifname or "-"), "flow": text(d.flow), "len": str(d.len),
                 "reason": text(d.reason or "-"), "category": text(v.category, style=entry(v.category).style)}
        table.add_row(*(cells[c] for c in cols))
    return table


def footer(shown: int, listed: int, hidden: list[Group], view: View, state: UiState) -> Text:
    parts: list[Text] = []
    if listed < shown:
        parts.append(Text(f"{shown - listed} more groups" + (": ↓ PgDn" if view.interactive else "")))
    if hidden:
        n = sum(g.count for g in hidden)
        parts.append(Text(f"{n:,} benign drops hidden ({len(hidden)} group{'s' if len(hidden) != 1 else ''}): "
                          + ("b to show" if view.interactive else "--all to show"), style="dim"))
    elif state.show_benign and view.interactive:
        parts.append(Text("benign drops shown (dim): b to hide", style="dim"))
    return Text(" · ").join(parts)


# ---------------------------------------------------------------- details and help

def _evidence(detail: dict[str, object] | None) -> list[str]:
    """Verdict.detail as lines, "key: value", a list of candidates one per line."""
    if not detail:
        return []
    lines: list[str] = []
    for k, v in detail.items():
        if isinstance(v, list):
            lines.append(f"{k}:")
            lines += ["  " + (", ".join(f"{a}: {b}" for a, b in c.items() if b not in (None, ""))
                              if isinstance(c, dict) else str(c)) for c in v]
        elif v not in (None, ""):
            lines.append(f"{k}: {v}")
    return lines


def _path(d: Drop) -> str | None:
    """Where the packet was and where its route led: the MTU path of an MTU drop."""
    parts = []
    if d.ifname:
        parts.append(f"on {d.ifname}" + (f" (mtu {d.dev_mtu})" if d.dev_mtu else ""))
    if d.out_ifname or d.mtu:
        parts.append(f"route out {d.out_ifname or '?'}" + (f" mtu {d.mtu}" if d.mtu else ""))
    if not parts:
        return None
    flags = ", DF" if d.df else ""
    return f"{d.len}-byte packet{flags} " + " -> ".join(parts)


def _pod_line(label: str, pod: PodRef | None, direction: str | None) -> Text:
    line = Text(f"{label}: ", style="bold")
    if pod is None:
        return line + Text("none known", style="dim")
    return line + text(pod.label + (f" ({direction})" if direction else ""))


def _head(g: Group, view: View) -> list[Text]:
    """Who, what and where, the counts and times, the namespace, the pods at both ends."""
    a = g.attribution
    head = text(who(a) if a is not None and a.pod is not None else "no pod", style="bold")
    head.append("  ")
    head.append_text(text(g.category, entry(g.category).style))
    head.append("  ")
    head.append_text(text(where(g)))
    lines = [head,
             Text(f"drops: {g.count:,} ({_rate(g.rate) or '0'}/s) · events delivered: {g.events:,} · "
                  f"first seen {_time(g.first_seen)} · last seen {_time(g.last_seen)}"),
             text(f"netns: {netns_name(g.netns, view.netns_names)}")]
    lines.append(_pod_line("pod", a.pod if a else None, a.direction if a else None))
    if a is not None and a.peer is not None:
        lines.append(_pod_line("other end", a.peer, a.peer_direction))
    return lines


def _title(g: Group, view: View) -> list[Text]:
    """One line above the why below the list: who, what, where, how many."""
    a = g.attribution
    line = text(who(a) if a is not None and a.pod is not None else "no pod", style="bold")
    line.append_text(Text("  ") + text(g.category, entry(g.category).style) + Text("  ") + text(where(g)))
    line.append(f"  {g.count:,} drops" + (f", {_rate(g.rate)}/s" if g.rate > 0 else ""))
    line.no_wrap, line.overflow = True, "ellipsis"
    return [line]


def _why(g: Group, view: View, brief: bool = False) -> list[Text]:
    """The whole why with its evidence; brief (below the list): the evidence in one paragraph."""
    lines = [Text("why: ", style="bold") + text(why(g))]
    if g.benign:
        lines.append(Text("benign: ", style="bold") + text(why_at(g.reason, g.location) or "set aside as benign"))
    evidence = _evidence(g.detail)
    if evidence and brief:
        lines.append(Text("evidence: ", style="bold") + text(" · ".join(e.strip() for e in evidence)))
    elif evidence:
        lines.append(Text("evidence:", style="bold"))
        lines += [text("  " + e) for e in evidence]
    # The MTU path: the device it was on and its route's egress (classify's MTU hint cites the same).
    path = _path(g.latest) if g.latest is not None and g.category == "mtu" else None
    if path:
        lines.append(Text("path: ", style="bold") + text(path))
    return lines


def _why_brief(g: Group, view: View) -> list[Text]:
    return _why(g, view, brief=True)


def _flows(g: Group, view: View) -> list[Text]:
    if not g.latest_drops:
        return []
    lines = [Text(f"latest flows (of the last {len(g.latest_drops)} events):", style="bold")]
    seen: dict[str, tuple[Drop, int]] = {}
    for d in reversed(g.latest_drops):
        flow = d.flow
        seen[flow] = (seen[flow][0], seen[flow][1] + 1) if flow in seen else (d, 1)
    for flow, (d, n) in seen.items():
        extra = [f"len {d.len}", f"on {d.ifname}" if d.ifname else "",
                 f"ct {d.conntrack}" if d.conntrack else "",
                 f"flags {d.tcp_flag_names}" if d.tcp_flags else "", f"×{n}" if n > 1 else ""]
        lines.append(text(f"  {d.time.strftime('%H:%M:%S.%f')[:-3]}  {flow}  "
                          + "  ".join(e for e in extra if e)))
    return lines


STACK_FRAMES_SHOWN = 8      # per stack in the details: the dropping function and its nearest callers


def stack_lines(g: Group, view: View | None = None) -> list[Text]:
    """The group's sampled kernel stacks (groups.Group.stacks), most events
    first: each on wrapped lines, the dropping function first, callers after ←."""
    if not g.stacks:
        return []
    sampled = sum(g.stacks.values()) + g.stacks_other
    lines = [Text(f"kernel stacks ({sampled:,} of {g.events:,} events had one):", style="bold")]
    for frames, n in sorted(g.stacks.items(), key=lambda kv: -kv[1]):
        shown = " ← ".join(frames[:STACK_FRAMES_SHOWN])
        more = len(frames) - STACK_FRAMES_SHOWN
        lines.append(Text(f"  ×{n:,} ", style="bold") + text(shown + (f" ← … {more} more" if more > 0 else "")))
    if g.stacks_other:
        lines.append(Text(f"  ×{g.stacks_other:,} with other stacks", style="dim"))
    return lines


# A group's details, section by section: what Enter opens (a blank line between
# sections), and what the free rows below the list show of the selected group
# (as many lines as fit, in this order). A section is a function of the group
# and the view giving lines (none: left out); append one to show more.
Section = Callable[[Group, View], list[Text]]
DETAILS: list[Section] = [_head, _why, _flows, stack_lines]
BELOW_LIST: list[Section] = [_title, _why_brief]


def details(g: Group, view: View) -> list[Text]:
    """Everything known of one group; node text through text()."""
    lines: list[Text] = []
    for section in DETAILS:
        part = section(g, view)
        if part:
            lines += ([Text("")] if lines else []) + part
    lines.append(Text(""))
    lines.append(Text("← or Esc: back · ↑ ↓: the previous or next group · q: quit", style="dim"))
    return lines


def below_list(g: Group, view: View) -> list[Text]:
    """The selected group's why and evidence, for the rows below the list."""
    return [line for section in BELOW_LIST for line in section(g, view)]


def help_lines(view: View) -> list[Text]:
    lines = [Text("Keys", style="bold")]
    lines += [Text.assemble((f"  {k:<32}", "bold"), v) for k, v in KEYS_HELP]
    lines.append(Text(""))
    return lines + full_context(view) + [Text(""), Text("← or Esc: back", style="dim")]


# ---------------------------------------------------------------- the screen

def _lines(console: Console, options: ConsoleOptions, renderable: RenderableType) -> list[list[Segment]]:
    return console.render_lines(renderable, options.update(height=None), pad=False, new_lines=False)


PANEL_LEAST = 4     # rows kept below the list for the selected group (a blank, its title, its why)


def _names_on(rows: list[Group], recent: tuple[tuple[Drop, Verdict, Attribution], ...], cols: Columns,
              width: int) -> PodName:
    pods = [p for g in rows if g.attribution is not None for p in (g.attribution.pod, g.attribution.peer) if p]
    pods += [at.pod for _d, _v, at in recent if at.pod is not None]
    return screen_names(pods, (cols.pod, RECENT_POD[width >= 120]), cols.namespaced)


class Screen:
    """The whole screen, laid out in the width and height rich gives it.
    fill: as many groups as the height holds (a terminal); else up to
    PLAIN_ROWS, with the recent drops (a file or a pipe gets the last frame).
    Below the list, the selected group's why and evidence (the first group's
    while none is selected), then the recent drops, as room allows.
    spare: lines kept free below (an inline Live must not scroll)."""

    def __init__(self, frame: Frame, view: View, state: UiState | None = None, fill: bool = False,
                 spare: int = 0) -> None:
        self.frame, self.view, self.state, self.fill, self.spare = frame, view, state or UiState(), fill, spare

    def layout(self, height: int | None) -> tuple[list[Group], int, list[Group]]:
        """The rows to list (scrolled so the selected one shows), how many there are, the hidden benign."""
        rows, hidden = shown_rows(self.frame.groups, self.state)
        room = PLAIN_ROWS if height is None else max(1, height)
        start = 0
        keys = [g.key for g in rows]
        if self.state.selected in keys:
            start = max(0, keys.index(self.state.selected) - room + 1)
        return rows[start:start + room], len(rows), hidden

    def focus(self) -> Group | None:
        """The group the rows below the list describe: the selected one, or the first listed."""
        rows, _ = shown_rows(self.frame.groups, self.state)
        return next((g for g in rows if g.key == self.state.selected), rows[0] if rows else None)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        height = options.size.height - self.spare if self.fill else None
        out: list[list[Segment]] = []
        for line in header(self.view, self.state, width):
            if not self.view.verbose:      # one line each, cut: the header stays within HEADER_LINES
                line.no_wrap, line.overflow = True, "ellipsis"
            out += _lines(console, options, line)
        body = None if height is None else max(3, height - len(out))
        groups = {g.key: g for g in self.frame.groups}
        if self.state.help or (self.state.details and self.state.selected in groups):
            lines = (help_lines(self.view) if self.state.help
                     else details(groups[self.state.selected], self.view))   # type: ignore[index]
            rendered = [seg for t in lines for seg in _lines(console, options, t)]
            out += rendered[:body] if body is not None else rendered
        else:
            out += self._list(console, options, width, body)
        for segments in out:
            yield from segments
            yield Segment.line()

    def _list(self, console: Console, options: ConsoleOptions, width: int, body: int | None) -> list[list[Segment]]:
        """The list (its header row, the groups, one line of what is not listed), then
        the focused group's why, then the recent drops, within body lines (None: no bound)."""
        focus = self.focus()
        reserve = PANEL_LEAST if focus is not None else 0
        # header row of the table, then the groups, then one line of what is not listed
        rows, shown, hidden = self.layout(None if body is None else max(1, body - 2 - reserve))
        recent = tuple(r for r in self.frame.recent if self.state.show_benign or not r[1].benign)
        cols = Columns.at(width)
        name = _names_on(rows, recent, cols, width)
        marked = focus.key if focus is not None and self.view.interactive else None
        out = _lines(console, options, groups_table(rows, width, marked, name))
        foot = footer(shown, len(rows), hidden, self.view, self.state)
        if foot.plain:
            foot.no_wrap, foot.overflow = True, "ellipsis"
            out += _lines(console, options, foot)[:1]
        left = None if body is None else body - len(out)
        if focus is not None and (left is None or left >= 3):
            panel = [seg for t in below_list(focus, self.view) for seg in _lines(console, options, t)]
            if left is not None and len(panel) > left - 1:
                cut = Text("… ⏎ for all of it" if self.view.interactive else "…", style="dim")
                panel = panel[:left - 2] + _lines(console, options, cut)
            out += [[]] + panel
            left = None if left is None else left - 1 - len(panel)
        if recent and (left is None or left >= 5):
            recent = recent if left is None else recent[-(left - 3):]
            out += [[]] + _lines(console, options, recent_table(recent, self.view.netns_names, width, name))
        return out


def render(groups: Groups | Frame, view: View, state: UiState | None = None, fill: bool = False) -> Screen:
    return Screen(groups if isinstance(groups, Frame) else Frame.of(groups), view, state, fill)


def summary_lines(groups: Groups, names: dict[int, str], limit: int = 20) -> list[str]:
    """The exact counts per group in plain text, for the end of `watch --json` (stderr)."""
    lines: list[str] = []
    rows = ranked(groups.groups.values(), "count")
    for g in rows[:limit]:
        at = (g.attribution.pod.label + f" {g.attribution.direction}"
              if g.attribution and g.attribution.pod else "no pod")
        netns = f"{g.netns} ({names[g.netns]})" if g.netns in names else str(g.netns)
        benign = " (benign)" if g.benign else ""
        line = f"{g.count:,} {g.category}{benign} {g.reason or '-'} at {g.location or '?'}, netns {netns}, {at}"
        lines.append(printable(line))
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more groups")
    return lines
