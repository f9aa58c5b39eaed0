"""build: summary.json from a capture's exact kernel counters (groups) and what its recorder saw."""

from __future__ import annotations

import platform
import socket
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ...explain.benign import why_at
from ...explain.categories import CATEGORIES, entry
from ...groups import Groups
from .. import stackview
from ..capture import Recorder
from ..jsonout import peer_record, summary_time
from .schema import Summary
from .views import ends, number

if TYPE_CHECKING:
    from ...kernel.decode import Drop
    from ...kernel.hooks import Hook
    from ...kernel.loader import Stats


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
            "first_seen": summary_time(g.first_seen), "last_seen": summary_time(g.last_seen),
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
    verdicts = rank_verdicts(group_list)
    timeline = [{"second": summary_time(datetime.fromtimestamp(sec, UTC)), **dict(c)}
                for sec, c in sorted(recorder.timeline.items())]
    return {
        "netdrop": "capture",
        "window": {"start": summary_time(recorder.started), "end": summary_time(ended), "seconds": round(seconds, 3),
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


BENIGN_VERDICT = "expected on a healthy node, nothing to fix (docs/benign.md)"


def rank_verdicts(group_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per category, benign drops apart in their own: by impact (the
    category's rank in the registry: a path that refuses packets before a port
    nobody listens on), then most drops first; benign ones after all others."""
    buckets: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for x in group_list:                      # most drops first already
        buckets.setdefault((x["category"], x["benign"]), []).append(x)
    verdicts: list[dict[str, Any]] = []
    for (cat, benign), places in buckets.items():
        where = "; ".join(f"{x['reason'] or '-'} at {x['location'] or '?'}"
                          + (f", {ends(x)}" if x["pod_label"] else "")
                          + (f" ({number(x['count'])})" if len(places) > 1 else "") for x in places[:3])
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


def _latest(d: Drop | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"time": summary_time(d.time), "flow": d.flow, "src": d.src, "dst": d.dst, "sport": d.sport,
            "dport": d.dport, "proto": d.proto, "len": d.len, "ifname": d.ifname, "mtu": d.mtu,
            "out_ifname": d.out_ifname}
