"""merge: the captures of several nodes as one summary, each node's own kept in "nodes"."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .build import rank_verdicts
from .schema import Summary
from .views import node_name


def merge(parts: list[Summary]) -> Summary:
    """Captures of several nodes as one summary: overall (every group, flow and
    verdict of all nodes, each group with its node; totals added up; the
    timeline added second by second) with each node's own summary in "nodes".
    render() shows both: overall first, then each node."""
    if len(parts) == 1:
        return parts[0]
    nodes = [node_name(p) for p in parts]
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
        "verdicts": rank_verdicts(groups),
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
