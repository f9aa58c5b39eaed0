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
from ..explain.categories import CATEGORIES, entry
from ..groups import Groups
from ..textsafe import csv_cell, html_text, markdown_text, printable
from .capture import Recorder, _iso

if TYPE_CHECKING:
    from ..kernel.decode import Drop
    from ..kernel.loader import Hook, Stats

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
    verdicts: list[dict[str, Any]] = []
    # By the category's rank ("other", unspecific and often the node's own noise, last), then most drops first.
    for cat, n in sorted(by_category.items(), key=lambda kv: (entry(kv[0]).rank, -kv[1])):
        places = [x for x in group_list if x["category"] == cat]
        where = "; ".join(f"{x['reason'] or '-'} at {x['location'] or '?'}"
                          + (f", {x['pod_label']} {x['direction']}" if x["pod_label"] else "")
                          + (f" ({_n(x['count'])})" if len(places) > 1 else "") for x in places[:3])
        if len(places) > 3:
            where += f"; {len(places) - 3} more"
        verdicts.append({"category": cat, "drops": n, "verdict": entry(cat).verdict, "where": where,
                         "hint": places[0]["hint"] or "(no event delivered: counts only)"})
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
                   "pcap_packets": recorder.pcap.packets if recorder.pcap else None},
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


def _group_rows(s: Summary) -> list[list[str]]:
    return [[g["pod_label"] or "-", g["direction"] or "-", g["netns_name"] or str(g["netns"]), g["category"],
             g["reason"] or "-", g["location"] or "?", _n(g["count"]), f"{g['rate_per_s']:g}",
             _clock(g["first_seen"]), _clock(g["last_seen"])] for g in s["groups"]]


GROUP_HEADER = ["pod", "direction", "netns", "category", "reason", "location", "drops", "per s", "first seen",
                "last seen"]
FLOW_HEADER = ["flow", "proto", "events", "category", "reason", "pod"]


def _endpoint(addr: str | None, port: int | None) -> str:
    if port is None:
        return addr or "-"
    return f"[{addr}]:{port}" if addr and ":" in addr else f"{addr}:{port}"


def _flow_rows(s: Summary) -> list[list[str]]:
    def events(f: dict[str, Any]) -> str:
        error = f.get("events_error") or 0
        return _n(f["events"]) + (f" (±{_n(error)})" if error else "")
    return [[f"{_endpoint(f['src'], f['sport'])} -> {_endpoint(f['dst'], f['dport'])}", f["proto"] or "-",
             events(f), f["category"], f["reason"] or "-", f["pod"] or "-"] for f in s["top_flows"]]


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
    return (f"{_n(t['drops'])} drops in {w['seconds']:g} s ({w['start']} to {w['end']}, {w['ended']}) on "
            f"{_node(s)}, kernel {s['node']['kernel']}: {cats}")


def _verdict_text(v: dict[str, Any]) -> str:
    """A verdict after its category."""
    return f" ({_n(v['drops'])} drops, {v['where']}): {v['verdict']}. {v['hint']}"


def _losses(s: Summary) -> str:
    t = s["totals"]
    text = (f"events: {_n(t['events_delivered'])} delivered, {_n(t['events_written'])} written, "
            f"{_n(t['events_lost'])} lost, {_n(t['events_sampled_out'])} sampled out; counts are exact")
    if t.get("events_file_error"):
        text += f"; {t['events_file_error']}"
    return text


def _footer(s: Summary) -> str:
    return f"Filters: {'; '.join(s['filters']) or 'none'}. Pods: {s['pods'] or 'not attributed'}. {_losses(s)}."


def to_markdown(s: Summary) -> str:
    md = markdown_text

    def table(header: list[str], rows: list[list[str]]) -> str:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(md(c) for c in r) + " |" for r in rows]
        return "\n".join(out)
    parts = [f"## netdrop capture: {md(_node(s))}", "", md(_headline(s)), "", "### What to check first", ""]
    for v in s["verdicts"]:
        parts.append(f"- **{md(v['category'])}**{md(_verdict_text(v))}")
    if not s["verdicts"]:
        parts.append("- no drops in the window")
    for n in s.get("notices", []):
        parts.append(f"- notice: {md(n)}")
    parts += ["", "### Drops by pod, category, reason and location", "", table(GROUP_HEADER, _group_rows(s))]
    if s["top_flows"]:
        parts += ["", "### Top flows (from delivered events)", "", table(FLOW_HEADER, _flow_rows(s))]
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
    w.writerow(["pod_namespace", "pod_name", "direction", "netns", "netns_name", "category", "reason",
                "location", "drops", "rate_per_s", "first_seen", "last_seen", "events", "hint"])
    for g in s["groups"]:
        pod = g["pod"] or {}
        w.writerow([cell(pod.get("namespace")), cell(pod.get("name")), cell(g["direction"]), g["netns"],
                    cell(g["netns_name"]), cell(g["category"]), cell(g["reason"]), cell(g["location"]), g["count"],
                    g["rate_per_s"], cell(g["first_seen"]), cell(g["last_seen"]), g["events"], cell(g["hint"])])
    return buf.getvalue()


def to_table(s: Summary, width: int | None = None) -> str:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Text objects only, never markup: "[fd00::1]:53" or a pod's "[bold]" is text;
    # printable() first, as rich passes ESC through to the terminal.
    def text(plain: str, style: str = "") -> Text:
        return Text(printable(plain), style=style)

    con = Console(record=True, width=width or 140, file=io.StringIO())
    con.print(Text.assemble(text("netdrop capture", "bold"), ": ", text(_headline(s))))
    con.print(Text("\nWhat to check first", style="bold"))
    for v in s["verdicts"]:
        con.print(Text.assemble("• ", text(v["category"], "bold"), text(_verdict_text(v))))
    for n in s.get("notices", []):
        con.print(Text.assemble("• ", ("notice", "bold yellow"), ": ", text(n)))
    for title, header, rows in (("Drops by pod, category, reason and location", GROUP_HEADER, _group_rows(s)),
                                ("Top flows (from delivered events)", FLOW_HEADER, _flow_rows(s))):
        t = Table(title=title, title_justify="left")
        for h in header:
            t.add_column(h, overflow="fold")
        for r in rows:
            t.add_row(*(text(c) for c in r))
        con.print(t)
    if note := _flows_note(s):
        con.print(text(note, "italic"))
    con.print(text(_losses(s)))
    out: str = con.export_text()
    return out


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


def to_html(s: Summary) -> str:
    e = html_text

    def table(tid: str, header: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{e(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f'<table id="{tid}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    # The colour comes from our own table, never from the file: a category is only text.
    verdicts = "".join(
        f'<li><b style="color:{entry(v["category"]).colour}">{e(v["category"])}</b>'
        f'{e(_verdict_text(v))}</li>'
        for v in s["verdicts"]) or "<li>no drops in the window</li>"
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
<h2>What to check first</h2>
<ul id="verdicts">{verdicts}</ul>
<h2>Drops per second by category</h2>
{timeline_svg(s)}
<h2>Drops by pod, category, reason and location</h2>
{table("groups", GROUP_HEADER, _group_rows(s))}
<h2>Top flows (from delivered events)</h2>
{table("flows", FLOW_HEADER, _flow_rows(s))}
{flows_note}
<p class="meta">{e(_footer(s))} Hooks: {e(hooks)}.</p>
</body></html>
"""


def render(s: Summary, fmt: str, width: int | None = None) -> str:
    if fmt == "json":
        # ensure_ascii (the default): control characters and all non-ASCII as \u escapes.
        return json.dumps(s, indent=2) + "\n"
    if fmt == "markdown":
        return to_markdown(s)
    if fmt == "csv":
        return to_csv(s)
    if fmt == "html":
        return to_html(s)
    return to_table(s, width)


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
_GROUP: Schema = {
    "pod": Opt(_POD), "pod_label": Opt(str), "direction": Opt(str), "netns": int, "netns_name": Opt(str),
    "category": str, "reason": Opt(str), "location": Opt(str), "count": int, "rate_per_s": float,
    "first_seen": Opt(str), "last_seen": Opt(str), "events": int, "latest?": object, "hint": Opt(str),
    "detail?": object}
_FLOW: Schema = {
    "proto": Opt(str), "src": Opt(str), "sport": Opt(int), "dst": Opt(str), "dport": Opt(int), "events": int,
    "events_error?": int, "category": str, "reason": Opt(str), "pod": Opt(str), "first_seen?": Opt(str),
    "last_seen?": Opt(str)}
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
               "events_file_error?": Opt(str), "pcap_packets?": Opt(int)},
    "by_category": MapOf(int),
    "by_pod?": MapOf(int),
    "verdicts": [{"category": str, "drops": int, "verdict": str, "where": str, "hint": str}],
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
