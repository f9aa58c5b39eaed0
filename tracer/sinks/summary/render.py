"""render: a summary in the format asked for; the formats for machines (JSON, CSV) here."""

from __future__ import annotations

import csv
import io
import json

from ...textsafe import csv_cell
from .html import to_html
from .markdown import to_markdown
from .schema import Summary
from .table import to_table

FORMATS = ("table", "markdown", "json", "csv", "html")


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
    return "\n".join(to_table(p, width, show_benign) for p in parts)


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
