"""html: a summary as one self-contained page: a heat map, a timeline chart (inline SVG),
the verdicts and tables; no scripts, nothing fetched, node text through html_text()."""

from __future__ import annotations

import math

from ...explain.categories import CATEGORIES, entry
from ...textsafe import html_text
from .. import stackview
from .schema import Summary
from .views import (FLOW_HEADER, GROUP_HEADER, flow_rows, flows_note, footer, group_rows, headline, node_name,
                    number, pods_cell, set_aside, shown, verdict_label, verdict_lines)


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
           f'<text x="{pad_l - 6}" y="{pad_t + 10}" text-anchor="end" font-size="11">{number(peak)}/s</text>',
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
                       f'fill="{entry(c).colour}"><title>{e(p["second"])}: {number(v)} {c}</title></rect>')
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
    groups = shown(s["groups"], show_benign)
    counts: dict[tuple[str, str], int] = {}
    totals: dict[str, int] = {}
    for g in groups:
        if g["count"] <= 0:           # anyone's file: a count below one is nothing to map
            continue
        pod = pods_cell(g) if g["pod_label"] else "(no pod)"
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
                         f'color:{ink}">{number(n)}</td>')
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
        f'<li><b style="color:{entry(v["category"]).colour}">{e(verdict_label(v))}</b>'
        + "<br>".join(e(line) for line in verdict_lines(v)) + "</li>"
        for v in shown(s["verdicts"], show_benign)) or "<li>no drops in the window</li>"
    if aside := set_aside(s, show_benign):
        verdicts += f'<li id="benign-aside">{e(aside)}</li>'
    verdicts += "".join(f"<li><b>notice</b>: {e(n)}</li>" for n in s.get("notices", []))
    title = f"netdrop capture: {node_name(s)}"
    note = flows_note(s)
    note_html = f'<p class="meta" id="flows-note">{e(note)}</p>' if note else ""
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
<p id="headline">{e(headline(s))}</p>
<h2>Drops by pod and category</h2>
{heatmap(s, show_benign)}
<h2>What to check first</h2>
<ul id="verdicts">{verdicts}</ul>
<h2>Drops per second by category</h2>
{timeline_svg(s)}
<h2>Drops by pod, category, reason and location</h2>
{table("groups", GROUP_HEADER, group_rows(s, show_benign))}
{stackview.html(shown(s["groups"], show_benign))}
<h2>Top flows (from delivered events)</h2>
{table("flows", FLOW_HEADER, flow_rows(s, show_benign))}
{note_html}
<p class="meta">{e(footer(s))} Hooks: {e(hooks)}.</p>
{"".join(_html_node(p, i, show_benign) for i, p in enumerate(s.get("nodes", [])))}
</body></html>
"""


def _html_node(s: Summary, i: int, show_benign: bool) -> str:
    """One node's part of a page of several (merge()): its headline, verdicts and groups."""
    e = html_text
    verdicts = "".join(f"<li><b>{e(verdict_label(v))}</b>" + "<br>".join(e(line) for line in verdict_lines(v))
                       + "</li>" for v in shown(s["verdicts"], show_benign)) or "<li>no drops in the window</li>"
    head = "".join(f"<th>{e(h)}</th>" for h in GROUP_HEADER)
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in group_rows(s, show_benign))
    return (f'<section id="node-{i}"><h2>Node {e(node_name(s))}</h2><p class="headline">{e(headline(s))}</p>'
            f"<ul>{verdicts}</ul><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></section>")
