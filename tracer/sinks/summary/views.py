"""views: what every view for people shows of a summary, as text.

The headline, a verdict's lines, the rows of the groups and of the top flows and
the footer: the table, Markdown and HTML lay these out, each escaping them for
its reader where it writes. Node text comes out as it is in summary.json.
"""

from __future__ import annotations

from typing import Any

from .schema import Summary


def number(x: object) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


def clock(iso: str | None) -> str:
    """The time of day of a timestamp: the window's dates are in the headline."""
    if not iso:
        return "-"
    _, _, time = iso.partition("T")
    return (time or iso).rstrip("Z")


def pods_cell(g: dict[str, Any]) -> str:
    """The pod column: "default/web -> default/db" where the other end is a pod too."""
    pod: str = g["pod_label"] or "-"
    peer, peer_dir = g.get("peer_label"), (g.get("peer") or {}).get("direction")
    if not peer:
        return pod
    # peer_direction (pods/attribute.py): "from-pod" when the packet came from the peer.
    return f"{peer} -> {pod}" if peer_dir == "from-pod" else f"{pod} -> {peer}"


def shown(items: list[dict[str, Any]], show_benign: bool) -> list[dict[str, Any]]:
    """Verdicts or groups a view lists: benign ones only when asked (--all)."""
    return items if show_benign else [x for x in items if not x.get("benign")]


def group_rows(s: Summary, show_benign: bool = True) -> list[list[str]]:
    return [[pods_cell(g), g["direction"] or "-", g["netns_name"] or str(g["netns"]),
             g["category"] + (" (benign)" if g.get("benign") else ""),
             g["reason"] or "-", g["location"] or "?", number(g["count"]), f"{g['rate_per_s']:g}",
             clock(g["first_seen"]), clock(g["last_seen"])] for g in shown(s["groups"], show_benign)]


GROUP_HEADER = ["pod", "direction", "netns", "category", "reason", "location", "drops", "per s", "first seen",
                "last seen"]
FLOW_HEADER = ["flow", "proto", "events", "category", "reason", "pod"]


def _endpoint(addr: str | None, port: int | None) -> str:
    if port is None:
        return addr or "-"
    return f"[{addr}]:{port}" if addr and ":" in addr else f"{addr}:{port}"


def flow_rows(s: Summary, show_benign: bool = True) -> list[list[str]]:
    def events(f: dict[str, Any]) -> str:
        error = f.get("events_error") or 0
        return number(f["events"]) + (f" (±{number(error)})" if error else "")
    return [[f"{_endpoint(f['src'], f['sport'])} -> {_endpoint(f['dst'], f['dport'])}", f["proto"] or "-",
             events(f), f["category"] + (" (benign)" if f.get("benign") else ""), f["reason"] or "-",
             f["pod"] or "-"] for f in shown(s["top_flows"], show_benign)]


def flows_note(s: Summary) -> str | None:
    """Said in every rendering when the flow counter overflowed (tracer/topk.py)."""
    if s.get("top_flows_exact", True):
        return None
    return (f"top flows approximate beyond {number(s.get('top_flows_capacity', '?'))} distinct flows: an event count "
            f"may be over by the ± shown; counts per group stay exact")


def node_name(s: Summary) -> str:
    node: str = s["node"]["kubernetes_node"] or s["node"]["hostname"]
    return node


def headline(s: Summary) -> str:
    w, t = s["window"], s["totals"]
    cats = ", ".join(f"{c} {number(n)}" for c, n in s["by_category"].items()) or "none"
    benign = f" ({number(t['benign_drops'])} of them benign)" if t.get("benign_drops") else ""
    return (f"{number(t['drops'])} drops in {w['seconds']:g} s ({w['start']} to {w['end']}, {w['ended']}) on "
            f"{node_name(s)}, kernel {s['node']['kernel']}: {cats}{benign}")


def verdict_lines(v: dict[str, Any]) -> tuple[str, str, str]:
    """A verdict in three lines, after its category: drops and what they mean,
    where, and the hint. Markdown cuts each to a line (_cut); the table wraps each
    to a few lines of its width (table.py)."""
    return (f": {number(v['drops'])} drops: {v['verdict']}", f"where: {v['where']}", str(v["hint"]))


def verdict_label(v: dict[str, Any]) -> str:
    label: str = v["category"]
    return label + (", benign" if v.get("benign") else "")


def set_aside(s: Summary, show_benign: bool) -> str | None:
    """The one line that says benign drops were counted but are not listed."""
    if show_benign:
        return None
    n = sum(v["drops"] for v in s["verdicts"] if v.get("benign"))
    return f"{number(n)} benign drops not listed (--all to list them)" if n else None


def losses(s: Summary) -> str:
    t = s["totals"]
    text = (f"events: {number(t['events_delivered'])} delivered, {number(t['events_written'])} written, "
            f"{number(t['events_lost'])} lost, {number(t['events_sampled_out'])} sampled out; counts are exact")
    if t.get("events_file_error"):
        text += f"; {t['events_file_error']}"
    return text


def footer(s: Summary) -> str:
    return f"Filters: {'; '.join(s['filters']) or 'none'}. Pods: {s['pods'] or 'not attributed'}. {losses(s)}."


def ends(g: dict[str, Any]) -> str:
    """A group's pods and its direction: "default/web -> default/db from-pod"."""
    return f"{pods_cell(g)} {g['direction']}" if g.get("direction") else pods_cell(g)
