"""summary: what a capture found, as summary.json, and rendered for people.

build() assembles summary.json from the exact kernel counters (groups) and
what the recorder saw; render() turns a summary back into a table, Markdown
for the ticket, JSON, CSV or one self-contained HTML page with a timeline
chart (inline SVG, no scripts, nothing fetched). load() reads a summary.json
back, which may be anyone's file: it is checked before anything renders it.

summary.json keeps node text as it came (JSON escapes control characters);
each rendering escapes it for its reader with the one tracer/textsafe.py
function of its kind, where it writes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from ..errors import UserError
from ..explain.benign import why_at
from ..explain.categories import CATEGORIES, entry
from ..groups import Groups
from ..layout import wrap
from ..textsafe import csv_cell, html_text, markdown_text, printable
from . import stackview
from .capture import Recorder, _iso
from .jsonout import peer_record

if TYPE_CHECKING:
    from ..kernel.decode import Drop
    from ..kernel.hooks import Hook
from ..kernel.loader import Stats

Summary = dict[str, Any]    # summary.json as parsed: checked by load() against SCHEMA

FORMATS = ("table", "markdown", "json", "csv", "html")

def build(groups: Groups, recorder: Recorder, *, ended: datetime, reason_ended: str, stats: Stats,
          hooks: Iterable[Hook], filters: list[str], pods: str | None, node: str | None, names: dict[int, str],
          notices: Iterable[str] = ()) -> Summary:
    seconds = max((ended - recorder.started).total_seconds(), 1e-9)
    rows = sorted(groups.groups.values(), key=lambda g: -g.count)
    group_list: list[dict[str, Any]] = []
    for g in rows:
        if not g.count:
            continue
        who = g.attribution
        group_list.append({
            "pod": who.pod.to_json() if who and who.pod else None,
            "pod_label": who.pod.label if who and who.pod else None,
            "direction": who.direction if who else None,
            "peer": peer_record(who) if who else None,
            "peer_label": who.peer.label if who and who.peer else None,
            "netns": g.netns, "netns_name": names.get(g.netns),
            "category": g.category,
            # From the counter key (reason, location, packet facts), as the console decides
            # it: the same answer for a group whether or not events reached it.
            "benign": g.benign,
            "reason": g.reason, "location": g.location,
            "count": g.count, "rate_per_s": round(g.count / seconds, 3),
            "first_seen": _iso(g.first_seen), "last_seen": _iso(g.last_seen),
            "events": g.events,
            "latest": _latest(g.latest), "hint": g.hint,
            "detail": g.detail,
            **stackview.records(g),
        })
    by_category = {c: sum(x["count"] for x in group_list if x["category"] == c) for c in CATEGORIES}
    by_category = {c: n for c, n in by_category.items() if n}
    by_pod: dict[str, int] = {}
    for x in group_list:
        label = x["pod_label"] or "(no pod)"
        by_pod[label] = by_pod.get(label, 0) + x["count"]
    verdicts = _verdicts(group_list)
    timeline = [{"second": _iso(datetime.fromtimestamp(sec, UTC)), **dict(c)}
                for sec, c in sorted(recorder.timeline.items())]
    return {
        "netdrop": "capture",
        "window": {"start": _iso(recorder.started), "end": _iso(ended), "seconds": round(seconds, 3),
                   "ended": reason_ended},
        "node": {"hostname": socket.gethostname(), "kubernetes_node": node, "kernel": platform.release()},
        "hooks": [{"name": h.name, "attached": h.attached, "detail": h.detail} for h in hooks],
        "filters": filters,
        "pods": pods,
        "totals": {"drops": stats.matched, "events_delivered": stats.events, "events_written": recorder.written,
                   "events_lost": stats.lost, "events_sampled_out": stats.sampled_out,
                   "drops_not_grouped": stats.counter_full, "max_events": recorder.max_events,
                   "events_file_error": recorder.write_error,
                   "pcap_packets": recorder.pcap.packets if recorder.pcap else None,
                   "benign_drops": sum(x["count"] for x in group_list if x["benign"])},
        "by_category": by_category,
        "by_pod": dict(sorted(by_pod.items(), key=lambda kv: -kv[1])),
        "verdicts": verdicts,
        "notices": list(notices),
        "groups": group_list,
        "top_flows": recorder.top_flows(),
        # Beyond this many distinct flows, flows share counters (tracer/topk.py): the
        # top flows' counts may be over by their events_error; group counts stay exact.
        "top_flows_exact": recorder.flows.exact,
        "top_flows_capacity": recorder.flows.capacity,
        "timeline": timeline,
    }


# ---------------------------------------------------------------- several nodes

def merge(parts: list[Summary]) -> Summary:
    """Captures of several nodes as one summary: overall (every group, flow and
    verdict of all nodes, each group with its node; totals added up; the
    timeline added second by second) with each node's own summary in "nodes".
    render() shows both: overall first, then each node."""
    if len(parts) == 1:
        return parts[0]
    nodes = [_node(p) for p in parts]
    groups = [{**g, "node": node, "netns_name": f"{node}: {g['netns_name'] or g['netns']}"}
              for node, p in zip(nodes, parts, strict=True) for g in p["groups"]]
    groups.sort(key=lambda g: -g["count"])
    flows = [{**f, "node": node} for node, p in zip(nodes, parts, strict=True) for f in p["top_flows"]]
    flows.sort(key=lambda f: -f["events"])
    by_category: dict[str, int] = {}
    by_pod: dict[str, int] = {}
    for p in parts:
        for c, n in p["by_category"].items():
            by_category[c] = by_category.get(c, 0) + n
        for label, n in p["by_pod"].items():
            by_pod[label] = by_pod.get(label, 0) + n
    seconds: dict[str, dict[str, int]] = {}
    for p in parts:
        for row in p["timeline"]:
            acc = seconds.setdefault(row["second"], {})
            for c, n in row.items():
                if c != "second" and isinstance(n, int):
                    acc[c] = acc.get(c, 0) + n
    starts = [p["window"]["start"] for p in parts]
    ends = [p["window"]["end"] for p in parts]
    start, end = min(starts), max(ends)
    t0, t1 = _parse_time(start), _parse_time(end)
    span = (t1 - t0).total_seconds() if t0 is not None and t1 is not None else 0.0
    seconds_longest = max(p["window"]["seconds"] for p in parts)
    totals: dict[str, Any] = {}
    for key in parts[0]["totals"]:
        values = [p["totals"].get(key) for p in parts]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            totals[key] = sum(values)
        elif key == "events_file_error":
            totals[key] = "; ".join(f"{n}: {v}" for n, v in zip(nodes, values, strict=True) if v) or None
        else:
            totals[key] = None
    return {
        "netdrop": "capture",
        "window": {"start": start, "end": end, "seconds": round(max(span, seconds_longest), 3),
                   "ended": "; ".join(dict.fromkeys(p["window"]["ended"] for p in parts))},
        "node": {"hostname": ", ".join(dict.fromkeys(p["node"]["hostname"] for p in parts)),
                 "kubernetes_node": f"{len(parts)} nodes ({', '.join(nodes)})",
                 "kernel": ", ".join(dict.fromkeys(p["node"]["kernel"] for p in parts))},
        # A hook counts as attached overall only where it was on every node.
        "hooks": [{**h, "attached": all(any(o["name"] == h["name"] and o["attached"] for o in p["hooks"])
                                        for p in parts)} for h in parts[0]["hooks"]],
        "filters": [f"{n}: {f}" for n, p in zip(nodes, parts, strict=True) for f in p["filters"]],
        "pods": "; ".join(f"{n}: {p['pods']}" for n, p in zip(nodes, parts, strict=True) if p["pods"]) or None,
        "totals": totals,
        "by_category": dict(sorted(by_category.items(), key=lambda kv: -kv[1])),
        "by_pod": dict(sorted(by_pod.items(), key=lambda kv: -kv[1])),
        "verdicts": _verdicts(groups),
        "notices": [f"{n}: {x}" for n, p in zip(nodes, parts, strict=True) for x in p.get("notices", [])],
        "groups": groups,
        "top_flows": flows,
        "top_flows_exact": all(p.get("top_flows_exact", True) for p in parts),
        "top_flows_capacity": sum(p.get("top_flows_capacity") or 0 for p in parts),
        "timeline": [{"second": sec, **c} for sec, c in sorted(seconds.items())],
        "nodes": parts,
    }


def _parse_time(iso: str) -> datetime | None:
    try:
        return datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None


BENIGN_VERDICT = "expected on a healthy node, nothing to fix (docs/benign.md)"


def _verdicts(group_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per category, benign drops apart in their own: by impact (the
    category's rank in the registry: a path that refuses packets before a port
    nobody listens on), then most drops first; benign ones after all others."""
    buckets: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for x in group_list:                      # most drops first already
        buckets.setdefault((x["category"], x["benign"]), []).append(x)
    verdicts: list[dict[str, Any]] = []
    for (cat, benign), places in buckets.items():
        where = "; ".join(f"{x['reason'] or '-'} at {x['location'] or '?'}"
                          + (f", {_ends(x)}" if x["pod_label"] else "")
                          + (f" ({_n(x['count'])})" if len(places) > 1 else "") for x in places[:3])
        if len(places) > 3:
            where += f"; {len(places) - 3} more"
        first = places[0]
        if benign:      # each kind's why, as the where lists them
            hint = "; ".join(dict.fromkeys(why_at(x["reason"], x["location"]) or "" for x in places[:3]))
        else:
            hint = first["hint"] or "(no event delivered: counts only)"
        verdicts.append({"category": cat, "benign": benign, "drops": sum(x["count"] for x in places),
                         "verdict": BENIGN_VERDICT if benign else entry(cat).verdict, "where": where,
                         "hint": hint})
    verdicts.sort(key=lambda v: (v["benign"], entry(v["category"]).rank, -v["drops"]))
    return verdicts


def _ends(g: dict[str, Any]) -> str:
    """A group's pods and its direction: "default/web -> default/db from-pod"."""
    return f"{_pods(g)} {g['direction']}" if g.get("direction") else _pods(g)


def _latest(d: Drop | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"time": _iso(d.time), "flow": d.flow, "src": d.src, "dst": d.dst, "sport": d.sport, "dport": d.dport,
            "proto": d.proto, "len": d.len, "ifname": d.ifname, "mtu": d.mtu, "out_ifname": d.out_ifname}


# ---------------------------------------------------------------- rendering

def _n(x: object) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


def _clock(iso: str | None) -> str:
    """The time of day of a timestamp: the window's dates are in the headline."""
    if not iso:
        return "-"
    _, _, time = iso.partition("T")
    return (time or iso).rstrip("Z")


def _pods(g: dict[str, Any]) -> str:
    """The pod column: "default/web -> default/db" where the other end is a pod too."""
    pod: str = g["pod_label"] or "-"
    peer, peer_dir = g.get("peer_label"), (g.get("peer") or {}).get("direction")
    if not peer:
        return pod
    # peer_direction (pods/attribute.py): "from-pod" when the packet came from the peer.
    return f"{peer} -> {pod}" if peer_dir == "from-pod" else f"{pod} -> {peer}"


def _shown(items: list[dict[str, Any]], show_benign: bool) -> list[dict[str, Any]]:
    """Verdicts or groups a view lists: benign ones only when asked (--all)."""
    return items if show_benign else [x for x in items if not x.get("benign")]


def _group_rows(s: Summary, show_benign: bool = True) -> list[list[str]]:
    return [[_pods(g), g["direction"] or "-", g["netns_name"] or str(g["netns"]),
             g["category"] + (" (benign)" if g.get("benign") else ""),
             g["reason"] or "-", g["location"] or "?", _n(g["count"]), f"{g['rate_per_s']:g}",
             _clock(g["first_seen"]), _clock(g["last_seen"])] for g in _shown(s["groups"], show_benign)]


GROUP_HEADER = ["pod", "direction", "netns", "category", "reason", "location", "drops", "per s", "first seen",
                "last seen"]
FLOW_HEADER = ["flow", "proto", "events", "category", "reason", "pod"]


def _endpoint(addr: str | None, port: int | None) -> str:
    if port is None:
        return addr or "-"
    return f"[{addr}]:{port}" if addr and ":" in addr else f"{addr}:{port}"


def _flow_rows(s: Summary, show_benign: bool = True) -> list[list[str]]:
    def events(f: dict[str, Any]) -> str:
        error = f.get("events_error") or 0
        return _n(f["events"]) + (f" (±{_n(error)})" if error else "")
    return [[f"{_endpoint(f['src'], f['sport'])} -> {_endpoint(f['dst'], f['dport'])}", f["proto"] or "-",
             events(f), f["category"] + (" (benign)" if f.get("benign") else ""), f["reason"] or "-",
             f["pod"] or "-"] for f in _shown(s["top_flows"], show_benign)]


def _flows_note(s: Summary) -> str | None:
    """Said in every rendering when the flow counter overflowed (tracer/topk.py)."""
    if s.get("top_flows_exact", True):
        return None
    return (f"top flows approximate beyond {_n(s.get('top_flows_capacity', '?'))} distinct flows: an event count "
            f"may be over by the ± shown; counts per group stay exact")


def _node(s: Summary) -> str:
    node: str = s["node"]["kubernetes_node"] or s["node"]["hostname"]
    return node


def _headline(s: Summary) -> str:
    w, t = s["window"], s["totals"]
    cats = ", ".join(f"{c} {_n(n)}" for c, n in s["by_category"].items()) or "none"
    benign = f" ({_n(t['benign_drops'])} of them benign)" if t.get("benign_drops") else ""
    return (f"{_n(t['drops'])} drops in {w['seconds']:g} s ({w['start']} to {w['end']}, {w['ended']}) on "
            f"{_node(s)}, kernel {s['node']['kernel']}: {cats}{benign}")


def _verdict_lines(v: dict[str, Any]) -> tuple[str, str, str]:
    """A verdict in three lines, after its category: drops and what they mean,
    where, and the hint. Markdown cuts each to a line (_cut); the table wraps each
    to a few lines of its width (summarytable)."""
    return (f": {_n(v['drops'])} drops: {v['verdict']}", f"where: {v['where']}", str(v["hint"]))


def _verdict_label(v: dict[str, Any]) -> str:
    label: str = v["category"]
    return label + (", benign" if v.get("benign") else "")


def _set_aside(s: Summary, show_benign: bool) -> str | None:
    """The one line that says benign drops were counted but are not listed."""
    if show_benign:
        return None
    n = sum(v["drops"] for v in s["verdicts"] if v.get("benign"))
    return f"{_n(n)} benign drops not listed (--all to list them)" if n else None


def _cut(text: str, width: int) -> str:
    """text on one line of at most width, cut between words (never inside a quoted command)."""
    return wrap(text, width, quoted=True, max_lines=1)[0] if len(text) > width else text


# A verdict's line in Markdown, cut beyond (between words, never inside a quoted command):
# what netdrop writes fits whole, its decisive fact often last; anyone's file may not.
MARKDOWN_LINE = 400


def _losses(s: Summary) -> str:
    t = s["totals"]
    text = (f"events: {_n(t['events_delivered'])} delivered, {_n(t['events_written'])} written, "
            f"{_n(t['events_lost'])} lost, {_n(t['events_sampled_out'])} sampled out; counts are exact")
    if t.get("events_file_error"):
        text += f"; {t['events_file_error']}"
    return text


def _footer(s: Summary) -> str:
    return f"Filters: {'; '.join(s['filters']) or 'none'}. Pods: {s['pods'] or 'not attributed'}. {_losses(s)}."


def to_markdown(s: Summary, show_benign: bool = False) -> str:
    md = markdown_text

    def table(header: list[str], rows: list[list[str]]) -> str:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(md(c) for c in r) + " |" for r in rows]
        return "\n".join(out)
    parts = [f"## netdrop capture: {md(_node(s))}", "", md(_headline(s)), "", "### What to check first", ""]
    for v in _shown(s["verdicts"], show_benign):
        first, where, hint = _verdict_lines(v)
        # Three source lines, joined by hard line breaks (two trailing spaces): one bullet.
        parts += [f"- **{md(_verdict_label(v))}**{md(_cut(first, MARKDOWN_LINE))}  ",
                  f"  {md(_cut(where, MARKDOWN_LINE))}  ", f"  {md(_cut(hint, MARKDOWN_LINE))}"]
    if not s["verdicts"]:
        parts.append("- no drops in the window")
    if aside := _set_aside(s, show_benign):
        parts.append(f"- {md(aside)}")
    for n in s.get("notices", []):
        parts.append(f"- notice: {md(n)}")
    parts += ["", "### Drops by pod, category, reason and location", "",
              table(GROUP_HEADER, _group_rows(s, show_benign))]
    parts += stackview.markdown(_shown(s["groups"], show_benign))
    if flows := _flow_rows(s, show_benign):
        parts += ["", "### Top flows (from delivered events)", "", table(FLOW_HEADER, flows)]
        if note := _flows_note(s):
            parts += ["", md(note)]
    parts += ["", md(_footer(s)), ""]
    return "\n".join(parts)


def to_csv(s: Summary) -> str:
    """The groups, one a row: text through csv_cell, counts and rates as numbers."""
    def cell(text: str | None) -> str:
        return csv_cell(text or "")
    buf = io.StringIO()
    w = csv.writer(buf)
    several = "nodes" in s      # merge(): each row says its node
    w.writerow([*(["node"] if several else []), "pod_namespace", "pod_name", "direction", "netns", "netns_name",
                "category", "reason", "location", "drops", "rate_per_s", "first_seen", "last_seen", "events", "hint",
                "benign", "peer_namespace", "peer_name", "peer_direction"])
    for g in s["groups"]:
        pod, peer = g["pod"] or {}, g.get("peer") or {}
        w.writerow([*([cell(g.get("node"))] if several else []), cell(pod.get("namespace")), cell(pod.get("name")),
                    cell(g["direction"]), g["netns"],
                    cell(g["netns_name"]), cell(g["category"]), cell(g["reason"]), cell(g["location"]), g["count"],
                    g["rate_per_s"], cell(g["first_seen"]), cell(g["last_seen"]), g["events"], cell(g["hint"]),
                    "true" if g.get("benign") else "false", cell(peer.get("namespace")), cell(peer.get("name")),
                    cell(peer.get("direction"))])
    return buf.getvalue()


def timeline_svg(s: Summary, width: int = 900, height: int = 260) -> str:
    """Drops per second by category, stacked bars, as inline SVG."""
    e = html_text
    points = s["timeline"]
    cats = [c for c in CATEGORIES if any(p.get(c) for p in points)]
    pad_l, pad_b, pad_t = 60, 30, 10
    plot_w, plot_h = width - pad_l - 160, height - pad_b - pad_t
    peak = max([sum(p.get(c, 0) for c in cats) for p in points] + [1])
    n = max(len(points), 1)
    bar = plot_w / n
    out = [f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img" aria-label="drops per second by category">',
           f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" y2="{pad_t + plot_h}" stroke="#444"/>',
           f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + plot_h}" stroke="#444"/>',
           f'<text x="{pad_l - 6}" y="{pad_t + 10}" text-anchor="end" font-size="11">{_n(peak)}/s</text>',
           f'<text x="{pad_l - 6}" y="{pad_t + plot_h}" text-anchor="end" font-size="11">0</text>']
    for i, p in enumerate(points):
        y = pad_t + plot_h
        for c in cats:
            v = p.get(c, 0)
            if not v:
                continue
            h = v / peak * plot_h
            y -= h
            out.append(f'<rect class="bar" data-category="{c}" data-second="{e(p["second"])}" '
                       f'x="{pad_l + i * bar:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" height="{h:.1f}" '
                       f'fill="{entry(c).colour}"><title>{e(p["second"])}: {_n(v)} {c}</title></rect>')
    if points:
        out.append(f'<text x="{pad_l}" y="{height - 8}" font-size="11">{e(points[0]["second"])}</text>')
        out.append(f'<text x="{pad_l + plot_w}" y="{height - 8}" font-size="11" text-anchor="end">'
                   f'{e(points[-1]["second"])}</text>')
    for j, c in enumerate(cats):
        y = pad_t + 14 + j * 18
        out.append(f'<rect x="{width - 150}" y="{y - 10}" width="12" height="12" fill="{entry(c).colour}"/>'
                   f'<text x="{width - 132}" y="{y}" font-size="12">{c}</text>')
    out.append("</svg>")
    return "\n".join(out)


def heatmap(s: Summary, show_benign: bool = False) -> str:
    """Drops per pod (rows) and category (columns), each cell's background as dark
    as its count (on a log scale, so one group of thousands does not make the
    rest white): where the trouble sits, at a glance. Colours from our own
    table and numbers; pod names only as escaped text."""
    e = html_text
    groups = _shown(s["groups"], show_benign)
    counts: dict[tuple[str, str], int] = {}
    totals: dict[str, int] = {}
    for g in groups:
        if g["count"] <= 0:           # anyone's file: a count below one is nothing to map
            continue
        pod = _pods(g) if g["pod_label"] else "(no pod)"
        counts[pod, g["category"]] = counts.get((pod, g["category"]), 0) + g["count"]
        totals[pod] = totals.get(pod, 0) + g["count"]
    if not counts:
        return '<p class="meta" id="heatmap">no drops to map</p>'
    cats = [c for c in CATEGORIES if any(c == cat for _, cat in counts)]
    cats += sorted({cat for _, cat in counts} - set(cats))      # a file may name others: they are text
    pods = sorted(totals, key=lambda p: (-totals[p], p))
    peak = math.log1p(max(counts.values()))
    head = "".join(f"<th>{e(c)}</th>" for c in cats)
    rows = []
    for pod in pods:
        cells = []
        for c in cats:
            n = counts.get((pod, c), 0)
            if not n:
                cells.append('<td class="heat" data-count="0"></td>')
                continue
            alpha = 0.15 + 0.85 * math.log1p(n) / peak if peak else 1.0
            ink = "#fff" if alpha > 0.6 else "#222"
            cells.append(f'<td class="heat" data-count="{n}" style="background:rgba(192,57,43,{alpha:.2f});'
                         f'color:{ink}">{_n(n)}</td>')
        rows.append(f"<tr><th>{e(pod)}</th>{''.join(cells)}</tr>")
    return (f'<table id="heatmap"><thead><tr><th>pod</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def to_html(s: Summary, show_benign: bool = False) -> str:
    e = html_text

    def table(tid: str, header: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{e(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f'<table id="{tid}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    # The colour comes from our own table, never from the file: a category is only text.
    verdicts = "".join(
        f'<li><b style="color:{entry(v["category"]).colour}">{e(_verdict_label(v))}</b>'
        + "<br>".join(e(line) for line in _verdict_lines(v)) + "</li>"
        for v in _shown(s["verdicts"], show_benign)) or "<li>no drops in the window</li>"
    if aside := _set_aside(s, show_benign):
        verdicts += f'<li id="benign-aside">{e(aside)}</li>'
    verdicts += "".join(f"<li><b>notice</b>: {e(n)}</li>" for n in s.get("notices", []))
    title = f"netdrop capture: {_node(s)}"
    note = _flows_note(s)
    flows_note = f'<p class="meta" id="flows-note">{e(note)}</p>' if note else ""
    hooks = "; ".join(h["name"] + (" ✓" if h["attached"] else " ✗") for h in s["hooks"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 24px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
.meta {{ color: #555; }}
</style></head>
<body>
<h1>{e(title)}</h1>
<p id="headline">{e(_headline(s))}</p>
<h2>Drops by pod and category</h2>
{heatmap(s, show_benign)}
<h2>What to check first</h2>
<ul id="verdicts">{verdicts}</ul>
<h2>Drops per second by category</h2>
{timeline_svg(s)}
<h2>Drops by pod, category, reason and location</h2>
{table("groups", GROUP_HEADER, _group_rows(s, show_benign))}
{stackview.html(_shown(s["groups"], show_benign))}
<h2>Top flows (from delivered events)</h2>
{table("flows", FLOW_HEADER, _flow_rows(s, show_benign))}
{flows_note}
<p class="meta">{e(_footer(s))} Hooks: {e(hooks)}.</p>
{"".join(_html_node(p, i, show_benign) for i, p in enumerate(s.get("nodes", [])))}
</body></html>
"""


def _html_node(s: Summary, i: int, show_benign: bool) -> str:
    """One node's part of a page of several (merge()): its headline, verdicts and groups."""
    e = html_text
    verdicts = "".join(f"<li><b>{e(_verdict_label(v))}</b>" + "<br>".join(e(line) for line in _verdict_lines(v))
                       + "</li>" for v in _shown(s["verdicts"], show_benign)) or "<li>no drops in the window</li>"
    head = "".join(f"<th>{e(h)}</th>" for h in GROUP_HEADER)
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in _group_rows(s, show_benign))
    return (f'<section id="node-{i}"><h2>Node {e(_node(s))}</h2><p class="headline">{e(_headline(s))}</p>'
            f"<ul>{verdicts}</ul><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></section>")


def render(s: Summary, fmt: str, width: int | None = None, show_benign: bool = False) -> str:
    """s in a format; show_benign (--all) lists benign verdicts and groups in the
    views for people (json and csv always hold everything, marked)."""
    if fmt == "json":
        # ensure_ascii (the default): control characters and all non-ASCII as \u escapes.
        return json.dumps(s, indent=2) + "\n"
    if fmt == "csv":
        return to_csv(s)    # several nodes: a node column
    if fmt == "html":
        return to_html(s, show_benign)
    # Several nodes (merge()): overall first, then each node on its own.
    parts = [s, *s.get("nodes", [])]
    if fmt == "markdown":
        return "\n".join(to_markdown(p, show_benign) for p in parts)
    from .summarytable import to_table      # it reads this module's helpers

    return "\n".join(to_table(p, width, show_benign) for p in parts)


# ---------------------------------------------------------------- reading summary.json back

MAX_BYTES = 64 * 1024 * 1024    # a real summary is kilobytes: its groups are bounded by the kernel's map
MAX_DEPTH = 32                  # summary.json nests 4 deep; json.dumps(indent=...) recurses in Python


@dataclass(frozen=True)
class Opt:
    """A value that may also be null."""

    of: Schema


@dataclass(frozen=True)
class MapOf:
    """An object of any keys, each value of one schema."""

    of: Schema


# A type (str, int, float meaning any number, bool, object meaning anything), Opt,
# MapOf, [item schema] or {key: schema} (a key ending in "?" may be absent).
Schema: TypeAlias = type | Opt | MapOf | list["Schema"] | dict[str, "Schema"]

_POD: Schema = {"namespace?": Opt(str), "name?": Opt(str), "uid?": Opt(str), "node?": Opt(str),
                "hostNetwork?": bool}
_PEER: Schema = {"namespace?": Opt(str), "name?": Opt(str), "direction?": Opt(str)}
_GROUP: Schema = {
    "pod": Opt(_POD), "pod_label": Opt(str), "direction": Opt(str), "peer?": Opt(_PEER), "peer_label?": Opt(str),
    "netns": int, "netns_name": Opt(str), "category": str, "benign?": bool, "reason": Opt(str),
    "location": Opt(str), "count": int, "rate_per_s": float,
    "first_seen": Opt(str), "last_seen": Opt(str), "events": int, "latest?": object, "hint": Opt(str),
    "detail?": object, "stacks?": [{"events": int, "frames": [str]}], "stacks_other_events?": int}
_FLOW: Schema = {
    "proto": Opt(str), "src": Opt(str), "sport": Opt(int), "dst": Opt(str), "dport": Opt(int), "events": int,
    "events_error?": int, "category": str, "benign?": bool, "reason": Opt(str), "pod": Opt(str),
    "first_seen?": Opt(str), "last_seen?": Opt(str)}
# What the renderings read, with the types build() writes.
SCHEMA: Schema = {
    "netdrop": str,
    "window": {"start": str, "end": str, "seconds": float, "ended": str},
    "node": {"hostname": str, "kubernetes_node": Opt(str), "kernel": str},
    "hooks": [{"name": str, "attached": bool, "detail?": Opt(str)}],
    "filters": [str],
    "pods": Opt(str),
    "totals": {"drops": int, "events_delivered": int, "events_written": int, "events_lost": int,
               "events_sampled_out": int, "drops_not_grouped?": int, "max_events?": Opt(int),
               "events_file_error?": Opt(str), "pcap_packets?": Opt(int), "benign_drops?": int},
    "by_category": MapOf(int),
    "by_pod?": MapOf(int),
    "verdicts": [{"category": str, "benign?": bool, "drops": int, "verdict": str, "where": str,
                  "hint": str}],
    "notices?": [str],
    "groups": [_GROUP],
    "top_flows": [_FLOW],
    "top_flows_exact?": bool,
    "top_flows_capacity?": int,
    "timeline": [{"second": str, **{f"{c}?": int for c in CATEGORIES}}],
}


class _Invalid(Exception):
    """Where summary.json departs from SCHEMA, as one line."""


def load(path: str | Path) -> Summary:
    """summary.json, read and checked, or UserError with one line saying what is wrong.

    The file may be anyone's (a shared directory, a ticket's attachment): a FIFO
    or a device must not block or stream forever, a huge file must not fill
    memory, deep nesting must not blow the stack, and every value a rendering
    reads must have the type it expects."""
    shown = printable(str(path))
    raw = _read_capped(Path(path), shown)
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise UserError(f"{shown}: not UTF-8 text, not a netdrop summary") from None
    except RecursionError:
        raise UserError(f"{shown}: nested too deeply, not a netdrop summary") from None
    except ValueError as exc:
        raise UserError(f"{shown}: not valid JSON ({printable(str(exc))[:200]})") from None
    try:
        _check_depth(data)
        if not isinstance(data, dict):
            raise _Invalid(f"the top level is {_kind(data)}, expected an object")
        if data.get("netdrop") != "capture":
            raise _Invalid('not a netdrop capture summary (no "netdrop": "capture")')
        _check(data, SCHEMA, "")
    except _Invalid as exc:
        raise UserError(f"{shown}: {exc}") from None
    return data


def _read_capped(path: Path, shown: str) -> bytes:
    # O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting
    # for a writer; fstat then refuses it, and devices, before any read.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UserError(f"no capture summary at {shown} (make one with: netdrop capture --output DIR)") from None
    except OSError as exc:
        raise UserError(f"cannot read {shown}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{shown}: not a regular file ({_file_kind(st.st_mode)}), not a netdrop summary")
        if st.st_size > MAX_BYTES:
            raise UserError(f"{shown}: {st.st_size:,} bytes, over the {MAX_BYTES >> 20} MiB a summary may have")
        chunks, size = [], 0
        while size <= MAX_BYTES:      # at most MAX_BYTES + 1: the file may grow while read
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UserError(f"cannot read {shown}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise UserError(f"{shown}: over the {MAX_BYTES >> 20} MiB a summary may have")
    return b"".join(chunks)


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a file"


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _check_depth(data: object) -> None:
    """Without recursion: what json.loads accepted may still be too deep to render."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            raise _Invalid(f"nested more than {MAX_DEPTH} deep, not a netdrop summary")
        stack.extend((child, depth + 1) for child in children)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _expected(schema: Schema) -> str:
    if isinstance(schema, Opt):
        return _expected(schema.of) + " or null"
    if isinstance(schema, list):
        return "a list"
    if isinstance(schema, (dict, MapOf)):
        return "an object"
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(schema, "a value")


def _fits(value: object, schema: Schema) -> bool:
    """Whether value has the outer shape schema asks for (its contents aside)."""
    if isinstance(schema, list):
        return isinstance(value, list)
    if isinstance(schema, (dict, MapOf)):
        return isinstance(value, dict)
    if isinstance(schema, Opt):
        return value is None or _fits(value, schema.of)
    if schema is object:
        return True
    if schema in (int, float) and isinstance(value, bool):
        return False            # JSON true is no count
    if schema is float:
        return isinstance(value, (int, float))
    return isinstance(value, schema)


def _check(value: object, schema: Schema, where: str) -> None:
    if not _fits(value, schema):
        raise _Invalid(f"{where or 'the top level'} is {_kind(value)}, expected {_expected(schema)}")
    if isinstance(schema, Opt):
        schema = schema.of
    if isinstance(schema, list) and isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, schema[0], f"{where}[{i}]")
    elif isinstance(schema, dict) and isinstance(value, dict):
        for key, sub in schema.items():
            name = key.removesuffix("?")
            inner = f"{where}.{name}" if where else name
            if name in value:
                _check(value[name], sub, inner)
            elif not key.endswith("?"):
                raise _Invalid(f"{inner} is missing")
    elif isinstance(schema, MapOf) and isinstance(value, dict):
        for key, item in value.items():
            _check(item, schema.of, f"{where}[{json.dumps(printable(key)[:40])}]")
