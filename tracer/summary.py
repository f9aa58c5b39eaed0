"""summary: what a capture found, as summary.json, and rendered for people.

build() assembles summary.json from the exact kernel counters (groups) and
what the recorder saw; render() turns a summary back into a table, Markdown
for the ticket, JSON, CSV or one self-contained HTML page with a timeline
chart (inline SVG, no scripts, nothing fetched).
"""

from __future__ import annotations

import csv
import html
import io
import json
import platform
import socket
from datetime import datetime, timezone

from .capture import Recorder, _iso
from .classify import CATEGORIES
from .groups import Groups

FORMATS = ("table", "markdown", "json", "csv", "html")

VERDICTS = {
    "mtu": "packets larger than the path MTU were dropped",
    "netfilter": "a firewall rule or chain policy dropped packets",
    "conntrack": "connection tracking refused packets",
    "no-socket": "packets reached a port nobody listens on",
    "no-route": "packets had no route",
    "neighbor": "the next hop did not answer ARP/ND",
    "rp-filter": "packets failed the reverse-path / source check",
    "tcp": "TCP discarded segments",
    "socket-buffer": "receiving sockets were full",
    "qdisc": "queues or traffic control dropped packets",
    "malformed": "malformed packets were dropped",
    "other": "other drops",
}


def build(groups: Groups, recorder: Recorder, *, ended: datetime, reason_ended: str, stats, hooks,
          filters: list[str], pods: str | None, node: str | None, names: dict[int, str],
          notices: list[str] = ()) -> dict:
    seconds = max((ended - recorder.started).total_seconds(), 1e-9)
    rows = sorted(groups.groups.values(), key=lambda g: -g.count)
    group_list = []
    for g in rows:
        if not g.count:
            continue
        who = g.attribution
        group_list.append({
            "pod": who.pod.to_json() if who and who.pod else None,
            "pod_label": who.pod.label if who and who.pod else None,
            "direction": who.direction if who else None,
            "netns": g.netns, "netns_name": names.get(g.netns),
            "category": g.category, "reason": g.reason, "location": g.location,
            "count": g.count, "rate_per_s": round(g.count / seconds, 3),
            "first_seen": _iso(g.first_seen), "last_seen": _iso(g.last_seen),
            "events": g.events,
            "latest": _latest(g.latest), "hint": g.hint,
            "detail": g.detail,
        })
    by_category = {c: sum(x["count"] for x in group_list if x["category"] == c) for c in CATEGORIES}
    by_category = {c: n for c, n in by_category.items() if n}
    by_pod: dict[str, int] = {}
    for x in group_list:
        label = x["pod_label"] or "(no pod)"
        by_pod[label] = by_pod.get(label, 0) + x["count"]
    verdicts = []
    # Most drops first, but "other" (unspecific, often the node's own noise) last.
    for cat, n in sorted(by_category.items(), key=lambda kv: (kv[0] == "other", -kv[1])):
        places = [x for x in group_list if x["category"] == cat]
        where = "; ".join(f"{x['reason'] or '-'} at {x['location'] or '?'}"
                          + (f", {x['pod_label']} {x['direction']}" if x["pod_label"] else "")
                          + (f" ({_n(x['count'])})" if len(places) > 1 else "") for x in places[:3])
        if len(places) > 3:
            where += f"; {len(places) - 3} more"
        verdicts.append({"category": cat, "drops": n, "verdict": VERDICTS[cat], "where": where,
                         "hint": places[0]["hint"] or "(no event delivered: counts only)"})
    timeline = [{"second": _iso(datetime.fromtimestamp(sec, timezone.utc)), **dict(c)}
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
                   "pcap_packets": recorder.pcap.packets if recorder.pcap else None},
        "by_category": by_category,
        "by_pod": dict(sorted(by_pod.items(), key=lambda kv: -kv[1])),
        "verdicts": verdicts,
        "notices": list(notices),
        "groups": group_list,
        "top_flows": recorder.top_flows(),
        "timeline": timeline,
    }


def _latest(d) -> dict | None:
    if d is None:
        return None
    return {"time": _iso(d.time), "flow": d.flow, "src": d.src, "dst": d.dst, "sport": d.sport, "dport": d.dport,
            "proto": d.proto, "len": d.len, "ifname": d.ifname, "mtu": d.mtu, "out_ifname": d.out_ifname}


# ---------------------------------------------------------------- rendering

def _n(x) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


def _clock(iso: str | None) -> str:
    """The time of day of a timestamp: the window's dates are in the headline."""
    return iso.split("T", 1)[1].rstrip("Z") if iso else "-"


def _group_rows(s: dict) -> list[list[str]]:
    return [[g["pod_label"] or "-", g["direction"] or "-", g["netns_name"] or str(g["netns"]), g["category"],
             g["reason"] or "-", g["location"] or "?", _n(g["count"]), f"{g['rate_per_s']:g}",
             _clock(g["first_seen"]), _clock(g["last_seen"])] for g in s["groups"]]


GROUP_HEADER = ["pod", "direction", "netns", "category", "reason", "location", "drops", "per s", "first seen",
                "last seen"]
FLOW_HEADER = ["flow", "proto", "events", "category", "reason", "pod"]


def _flow_rows(s: dict) -> list[list[str]]:
    def ep(a, p):
        return a if p is None else (f"[{a}]:{p}" if a and ":" in a else f"{a}:{p}")
    return [[f"{ep(f['src'], f['sport'])} -> {ep(f['dst'], f['dport'])}", f["proto"] or "-", _n(f["events"]),
             f["category"], f["reason"] or "-", f["pod"] or "-"] for f in s["top_flows"]]


def _headline(s: dict) -> str:
    w, t = s["window"], s["totals"]
    cats = ", ".join(f"{c} {_n(n)}" for c, n in s["by_category"].items()) or "none"
    return (f"{_n(t['drops'])} drops in {w['seconds']:g} s ({w['start']} to {w['end']}, {w['ended']}) on "
            f"{s['node']['kubernetes_node'] or s['node']['hostname']}, kernel {s['node']['kernel']}: {cats}")


def _losses(s: dict) -> str:
    t = s["totals"]
    text = (f"events: {_n(t['events_delivered'])} delivered, {_n(t['events_written'])} written, "
            f"{_n(t['events_lost'])} lost, {_n(t['events_sampled_out'])} sampled out; counts are exact")
    if t.get("events_file_error"):
        text += f"; {t['events_file_error']}"
    return text


def to_markdown(s: dict) -> str:
    def table(header, rows):
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        return "\n".join(out)
    parts = [f"## netdrop capture: {s['node']['kubernetes_node'] or s['node']['hostname']}", "",
             _headline(s), "", "### What to check first", ""]
    for v in s["verdicts"]:
        parts.append(f"- **{v['category']}** ({_n(v['drops'])} drops, {v['where']}): {v['verdict']}. {v['hint']}")
    if not s["verdicts"]:
        parts.append("- no drops in the window")
    for n in s.get("notices", []):
        parts.append(f"- notice: {n}")
    parts += ["", "### Drops by pod, category, reason and location", "", table(GROUP_HEADER, _group_rows(s))]
    if s["top_flows"]:
        parts += ["", "### Top flows (from delivered events)", "", table(FLOW_HEADER, _flow_rows(s))]
    parts += ["", f"Filters: {'; '.join(s['filters']) or 'none'}. Pods: {s['pods'] or 'not attributed'}. "
              f"{_losses(s)}.", ""]
    return "\n".join(parts)


def to_csv(s: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["pod_namespace", "pod_name", "direction", "netns", "netns_name", "category", "reason",
                "location", "drops", "rate_per_s", "first_seen", "last_seen", "events", "hint"])
    for g in s["groups"]:
        pod = g["pod"] or {}
        w.writerow([pod.get("namespace", ""), pod.get("name", ""), g["direction"] or "", g["netns"],
                    g["netns_name"] or "", g["category"], g["reason"] or "", g["location"] or "", g["count"],
                    g["rate_per_s"], g["first_seen"] or "", g["last_seen"] or "", g["events"], g["hint"] or ""])
    return buf.getvalue()


def to_table(s: dict, width: int | None = None) -> str:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    con = Console(record=True, width=width or 140, file=io.StringIO())
    con.print(Text.assemble(("netdrop capture", "bold"), ": ", _headline(s)))
    con.print(Text("\nWhat to check first", style="bold"))
    for v in s["verdicts"]:
        con.print(Text.assemble("• ", (v["category"], "bold"),
                                f" ({_n(v['drops'])} drops, {v['where']}): {v['verdict']}. {v['hint']}"))
    for n in s.get("notices", []):
        con.print(Text.assemble("• ", ("notice", "bold yellow"), f": {n}"))
    for title, header, rows in (("Drops by pod, category, reason and location", GROUP_HEADER, _group_rows(s)),
                                ("Top flows (from delivered events)", FLOW_HEADER, _flow_rows(s))):
        t = Table(title=title, title_justify="left")
        for h in header:
            t.add_column(h, overflow="fold")
        for r in rows:
            t.add_row(*r)
        con.print(t)
    con.print(_losses(s), highlight=False)
    return con.export_text()


CATEGORY_COLORS = {
    "mtu": "#8e44ad", "netfilter": "#c0392b", "conntrack": "#e74c3c", "no-socket": "#f39c12",
    "no-route": "#d35400", "neighbor": "#16a085", "rp-filter": "#2980b9", "tcp": "#27ae60",
    "socket-buffer": "#e84393", "qdisc": "#0984e3", "malformed": "#b71540", "other": "#7f8c8d",
}


def timeline_svg(s: dict, width: int = 900, height: int = 260) -> str:
    """Drops per second by category, stacked bars, as inline SVG."""
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
            out.append(f'<rect class="bar" data-category="{c}" data-second="{html.escape(p["second"])}" '
                       f'x="{pad_l + i * bar:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" height="{h:.1f}" '
                       f'fill="{CATEGORY_COLORS[c]}"><title>{html.escape(p["second"])}: {v} {c}</title></rect>')
    if points:
        out.append(f'<text x="{pad_l}" y="{height - 8}" font-size="11">{html.escape(points[0]["second"])}</text>')
        out.append(f'<text x="{pad_l + plot_w}" y="{height - 8}" font-size="11" text-anchor="end">'
                   f'{html.escape(points[-1]["second"])}</text>')
    for j, c in enumerate(cats):
        y = pad_t + 14 + j * 18
        out.append(f'<rect x="{width - 150}" y="{y - 10}" width="12" height="12" fill="{CATEGORY_COLORS[c]}"/>'
                   f'<text x="{width - 132}" y="{y}" font-size="12">{c}</text>')
    out.append("</svg>")
    return "\n".join(out)


def to_html(s: dict) -> str:
    e = html.escape

    def table(tid, header, rows):
        head = "".join(f"<th>{e(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f'<table id="{tid}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    verdicts = "".join(
        f'<li><b style="color:{CATEGORY_COLORS[v["category"]]}">{e(v["category"])}</b> '
        f'({_n(v["drops"])} drops, {e(v["where"])}): {e(v["verdict"])}. {e(v["hint"])}</li>'
        for v in s["verdicts"]) or "<li>no drops in the window</li>"
    verdicts += "".join(f"<li><b>notice</b>: {e(n)}</li>" for n in s.get("notices", []))
    title = f"netdrop capture: {s['node']['kubernetes_node'] or s['node']['hostname']}"
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
<h2>What to check first</h2>
<ul id="verdicts">{verdicts}</ul>
<h2>Drops per second by category</h2>
{timeline_svg(s)}
<h2>Drops by pod, category, reason and location</h2>
{table("groups", GROUP_HEADER, _group_rows(s))}
<h2>Top flows (from delivered events)</h2>
{table("flows", FLOW_HEADER, _flow_rows(s))}
<p class="meta">Filters: {e('; '.join(s['filters']) or 'none')}. Pods: {e(s['pods'] or 'not attributed')}.
{e(_losses(s))}. Hooks: {e('; '.join(h['name'] + (' ✓' if h['attached'] else ' ✗') for h in s['hooks']))}.</p>
</body></html>
"""


def render(s: dict, fmt: str, width: int | None = None) -> str:
    if fmt == "json":
        return json.dumps(s, indent=2) + "\n"
    if fmt == "markdown":
        return to_markdown(s)
    if fmt == "csv":
        return to_csv(s)
    if fmt == "html":
        return to_html(s)
    return to_table(s, width)
