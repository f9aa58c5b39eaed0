"""jsonout: one JSON object per drop per line (watch --json).

Node text stays as it came: json.dumps (ensure_ascii) writes control characters
and all non-ASCII as \\u escapes, so a line is safe on a terminal as it is."""

from __future__ import annotations

import json
from typing import TextIO

from ..explain.verdict import Verdict
from ..kernel.decode import Drop
from ..pods.attribute import NO_POD, Attribution


def peer_record(who: Attribution) -> dict[str, object] | None:
    """The pod at the other end ({namespace, name, direction}), or None: no pod
    there, or one the API did not name (as `pod` is null for it)."""
    peer = who.peer
    if peer is None or not peer.known:
        return None
    return {"namespace": peer.namespace, "name": peer.name, "direction": who.peer_direction}


def drop_record(drop: Drop, verdict: Verdict, who: Attribution = NO_POD) -> dict[str, object]:
    """The documented keys of a drop, in a stable order."""
    return {
        "time": drop.time.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "reason": drop.reason,
        "category": verdict.category,
        # Expected on every healthy node (explain/benign.py): counted, set aside by the views.
        "benign": verdict.benign,
        "hint": verdict.hint,
        "location": drop.location,
        "netns": drop.netns,
        "ifname": drop.ifname,
        "ifindex": drop.ifindex,
        "proto": drop.proto,
        "src": drop.src,
        "dst": drop.dst,
        "sport": drop.sport,
        "dport": drop.dport,
        "len": drop.len,
        "mtu": drop.mtu,
        "out_ifname": drop.out_ifname,
        "pod": who.pod.to_json() if who.pod else None,
        "direction": who.direction,
        "peer": peer_record(who),
        "conntrack": drop.conntrack,
        "detail": verdict.detail,
    }


class JsonLines:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def emit(self, drop: Drop, verdict: Verdict, who: Attribution) -> None:
        self.stream.write(json.dumps(drop_record(drop, verdict, who), separators=(",", ":")) + "\n")

    def flush(self) -> None:
        """Called after each batch of events, not per event: a storm stays cheap."""
        self.stream.flush()
