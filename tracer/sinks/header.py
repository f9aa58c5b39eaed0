"""header: the console's top lines, and what the screen shows besides the groups (View).

At most HEADER_LINES lines: the counts (drops, events lost, time left), one
short line for hooks, filters and pods, and a notice, the pause or the keys;
--verbose and the `h` key show hooks, filters, pods and notices in full
(full_context). Text from the node goes through text(): a rich Text, never
markup, with control characters escaped (textsafe.printable).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text

from ..kernel.hooks import Hook
from ..kernel.loader import Stats
from ..textsafe import printable
from .keys import UiState

WIDE = 10_000           # a width without bound
HEADER_LINES = 3        # the header's most, whatever the width (unless --verbose)
KEYS_LINE = "↑↓ select  ⏎ details  p pause  s sort  b benign  h help  q quit"


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
    notices: list[str] = field(default_factory=list)   # latent risks seen (conntrack clash_resolve ...)
    verbose: bool = False         # --verbose: hooks, filters, pods and notices in full in the header
    interactive: bool = False     # keys are read: the screen says which


def text(plain: str, style: str = "") -> Text:
    """Text for the terminal: not markup, control characters escaped."""
    return Text(printable(plain), style=style)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _hooks_short(hooks: list[Hook], named: bool = True) -> str:
    """"hooks 2/4 (not: ...)"; not named (narrow): the count, h names them."""
    used = [h for h in hooks if h.attached]
    out = f"hooks {len(used)}/{len(hooks)}"
    missing = [h.name for h in hooks if not h.attached]
    return out + (f" (not: {', '.join(missing)})" if missing and named else "")


def _list_short(items: list[str], limit: int = 40) -> str:
    if not items:
        return ""
    first = items[0] if len(items[0]) <= limit else items[0][:limit - 1] + "…"
    return first + (f" +{len(items) - 1}" if len(items) > 1 else "")


def header(view: View, state: UiState, width: int = WIDE) -> list[Text]:
    """At most HEADER_LINES lines (cut to the width by the caller), unless --verbose.
    Narrower than 100 the hooks not attached are counted, not named: the filters and pods keep the line."""
    s = view.stats
    first = Text(printable(view.title), style="bold")
    first.append(f" · {s.matched:,} drops", style="bold")
    first.append(" · ")
    first.append(f"{s.lost:,} events lost", style="bold red" if s.lost else "")
    if s.counter_full:
        first.append(f" · {s.counter_full:,} not grouped (counter map full)", style="bold red")
    if view.remaining is not None:
        first.append(f" · {_duration(view.remaining)} left", style="bold")
    first.append(f" · {_duration(view.elapsed)} elapsed · {s.events:,} events")
    if s.sampled_out:
        first.append(f" · {s.sampled_out:,} sampled out (counts stay exact)")
    if view.verbose:
        return [first, *full_context(view)]
    second = Text(_hooks_short(view.hooks, named=width >= 100), style="dim")
    second.append(" · filters: " + printable(_list_short(view.filters) or "none"), style="dim")
    if view.pods:
        second.append(" · pods: " + printable(_list_short([view.pods])), style="dim")
    lines = [first, second]
    if state.paused:
        lines.append(Text("paused, counting goes on: p to resume", style="bold yellow")
                     + Text("   " + KEYS_LINE, style="dim"))
    elif view.notices:
        third = text("notice: " + view.notices[0], style="yellow")
        if len(view.notices) > 1:
            third.append(f" (+{len(view.notices) - 1} more: h)", style="yellow")
        lines.append(third)
    elif view.interactive:
        lines.append(Text(KEYS_LINE + f"   sort: {state.sort}", style="dim"))
    return lines[:HEADER_LINES]


def full_context(view: View) -> list[Text]:
    """Hooks, filters, pods, notices and the note in full (--verbose, the `h` key)."""
    lines = [Text("hooks: ") + text("; ".join(
        f"{'✓' if h.attached else '✗'} {h.name}" + (f" ({h.detail})" if h.detail else "") for h in view.hooks))]
    lines.append(text("filters: " + ("; ".join(view.filters) if view.filters else "none (all namespaces)")))
    if view.pods:
        lines.append(text("pods: " + view.pods))
    lines += [text("notice: " + n, style="yellow") for n in view.notices]
    if view.note:
        lines.append(text(view.note, style="italic"))
    return lines
