"""stackview: a group's sampled kernel stacks in summary.json and its renderings.

A group keeps up to groups.STACKS_KEPT distinct kernel stacks of its events
with how many events had each (groups.Group.stacks). summary.json holds them
as "stacks": [{"events": N, "frames": ["__udp4_lib_rcv+0x4bc", ...]}] (most
events first, the dropping function first) and "stacks_other_events": the
events whose stack was none of those. The Markdown and HTML renderings list
them per group after the group table; a summary.json may be anyone's file,
so every frame is text escaped for its reader where it is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..textsafe import html_text, markdown_text

if TYPE_CHECKING:
    from ..groups import Group

# Frames listed per stack in Markdown and HTML (summary.json keeps them all):
# past a dozen they are the softirq and syscall entry every drop shares.
FRAMES_SHOWN = 12


def records(g: Group) -> dict[str, Any]:
    """The group's summary.json keys for its stacks."""
    ranked = sorted(g.stacks.items(), key=lambda kv: -kv[1])
    return {"stacks": [{"events": n, "frames": list(frames)} for frames, n in ranked],
            "stacks_other_events": g.stacks_other}


def _title(g: dict[str, Any]) -> str:
    where = f"{g.get('reason') or '-'} at {g.get('location') or '?'}"
    pod = g.get("pod_label")
    node = g.get("node")
    return where + (f", {pod}" if pod else "") + (f" (node {node})" if node else "")


def _sampled(g: dict[str, Any]) -> str:
    with_stack = sum(s["events"] for s in g["stacks"]) + (g.get("stacks_other_events") or 0)
    return f"{with_stack:,} of {g['events']:,} events had a stack"


def _frames(stack: dict[str, Any]) -> tuple[list[str], int]:
    frames: list[str] = stack["frames"]
    return frames[:FRAMES_SHOWN], max(0, len(frames) - FRAMES_SHOWN)


def _events(n: int) -> str:
    return f"{n:,} event" + ("" if n == 1 else "s")


def _with_stacks(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [g for g in groups if g.get("stacks")]


def markdown(groups: list[dict[str, Any]]) -> list[str]:
    """A "Kernel stacks" section of the groups that have any (none: no lines)."""
    md = markdown_text
    shown = _with_stacks(groups)
    if not shown:
        return []
    out = ["", "### Kernel stacks (sampled from events, the dropping function first)", ""]
    for g in shown:
        out.append(f"- **{md(_title(g))}**: {md(_sampled(g))}")
        for stack in g["stacks"]:
            frames, more = _frames(stack)
            out.append(f"  - {_events(stack['events'])}:")
            out += [f"    {i}. {md(f)}" for i, f in enumerate(frames, 1)]
            if more:
                out.append(f"    {len(frames) + 1}. {md(f'... {more} more frames')}")
        if other := g.get("stacks_other_events"):
            out.append(f"  - {md(f'{other:,} events with other stacks')}")
    return out


def html(groups: list[dict[str, Any]]) -> str:
    """An HTML section of the groups that have stacks ("" if none)."""
    e = html_text
    shown = _with_stacks(groups)
    if not shown:
        return ""
    items = []
    for g in shown:
        stacks = []
        for stack in g["stacks"]:
            frames, more = _frames(stack)
            rows = "".join(f"<li><code>{e(f)}</code></li>" for f in frames)
            if more:
                rows += f"<li>... {more} more frames</li>"
            stacks.append(f"<li>{_events(stack['events'])}:<ol class=\"frames\">{rows}</ol></li>")
        if other := g.get("stacks_other_events"):
            stacks.append(f"<li>{int(other):,} events with other stacks</li>")
        items.append(f"<li><b>{e(_title(g))}</b>: {e(_sampled(g))}<ul>{''.join(stacks)}</ul></li>")
    return ('<h2>Kernel stacks (sampled from events, the dropping function first)</h2>'
            f'<ul id="stacks">{"".join(items)}</ul>')
