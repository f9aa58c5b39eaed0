"""jsonout: one JSON object per drop per line (watch --json).

Node text stays as it came: json.dumps (ensure_ascii) writes control characters
and all non-ASCII as \\u escapes, so a line is safe on a terminal as it is."""

from __future__ import annotations

import json
from datetime import datetime
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


def drop_record(drop: Drop, verdict: Verdict, who: Attribution = NO_POD, stacks: bool = False) -> dict[str, object]:
    """The documented keys of a drop, in a stable order; stacks (--stacks): and
    "stack", its kernel stack (kernel/stacks.py) or null, last."""
    record: dict[str, object] = {
        "time": drop_record_time(drop.time),
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
    if stacks:
        record["stack"] = list(drop.stack) if drop.stack is not None else None
    return record


_encode = json.JSONEncoder(separators=(",", ":")).encode
# A str as json.dumps writes it (ensure_ascii): "..." with \\uXXXX escapes.
_string = json.encoder.encode_basestring_ascii


# drop_record()'s keys in its order, split by what changes from one drop of a
# group to the next (the flow) and what does not (everything else).
_HEAD = ("reason", "category", "benign", "hint", "location", "netns", "ifname", "ifindex", "proto")
_TAIL = ("mtu", "out_ifname", "pod", "direction", "peer", "conntrack", "detail")
_MEMO_ENTRIES = 4096


class LineEncoder:
    """drop_record() as one JSON line, byte for byte what json.dumps makes of
    it (tests/unit/sinks/test_jsonout.py), at a fraction of the cost: in a storm the
    drops of a group differ only in time and flow, so the rest of the line is
    encoded once per verdict, pod and device, and the time once per second.
    Building the dict and dumping it costs ~6 us per line, the most of what
    `watch --json` would cost per event."""

    def __init__(self, stacks: bool = False) -> None:
        self.stacks = stacks
        # A stack's "stack" part, once per distinct stack (they are few).
        self._stacks: dict[tuple[str, ...], str] = {}
        # (verdict, attribution, the drop's static fields) -> the encoded parts. Keyed by the
        # identity of the verdict and attribution (the classifier and the pod index hand out
        # the same objects for the same answer); the value holds them, so no id is reused
        # while its entry lives.
        self._parts: dict[tuple[object, ...], tuple[str, str, object, object]] = {}
        self._seconds: dict[tuple[object, ...], tuple[str, str]] = {}
        self._flow: tuple[object, ...] = ()     # the last line's parts and flow,
        self._rest = ""                         # and its text after the time

    def line(self, drop: Drop, verdict: Verdict, who: Attribution = NO_POD) -> str:
        key = (id(verdict), id(who), drop.reason, drop.location, drop.netns, drop.ifname, drop.ifindex, drop.proto,
               drop.mtu, drop.out_ifname, drop.conntrack)
        parts = self._parts.get(key)
        if parts is None:
            if len(self._parts) >= _MEMO_ENTRIES:
                self._parts.clear()
            record = drop_record(drop, verdict, who)
            head = ",".join(f"{_encode(k)}:{_encode(record[k])}" for k in _HEAD)
            tail = ",".join(f"{_encode(k)}:{_encode(record[k])}" for k in _TAIL)
            parts = self._parts[key] = (head, tail, verdict, who)
        t = drop.time
        second = (t.year, t.month, t.day, t.hour, t.minute, t.second, t.tzinfo)
        stamp = self._seconds.get(second)
        if stamp is None:
            if len(self._seconds) >= _MEMO_ENTRIES:
                self._seconds.clear()
            # As drop_record() writes this second, around its (always written) microseconds.
            before, _, after = drop_record_time(t.replace(microsecond=0)).partition(".000000")
            stamp = self._seconds[second] = (before, after)
        flow = (parts, drop.src, drop.dst, drop.sport, drop.dport, drop.len, drop.stack)
        if flow != self._flow:      # a storm of one flow: its line but for the time, again and again
            src, dst, sport, dport, length, stack = flow[1:]
            self._flow = flow
            self._rest = (f',{parts[0]},'
                          f'"src":{"null" if src is None else _string(src)},'
                          f'"dst":{"null" if dst is None else _string(dst)},'
                          f'"sport":{"null" if sport is None else int(sport)},'
                          f'"dport":{"null" if dport is None else int(dport)},'
                          f'"len":{int(length)},{parts[1]}{self._stack(stack) if self.stacks else ""}}}\n')
        return f'{{"time":"{stamp[0]}.{t.microsecond:06d}{stamp[1]}"{self._rest}'

    def _stack(self, stack: tuple[str, ...] | None) -> str:
        """',"stack":[...]' as drop_record(stacks=True) has it."""
        if stack is None:
            return ',"stack":null'
        part = self._stacks.get(stack)
        if part is None:
            if len(self._stacks) >= _MEMO_ENTRIES:
                self._stacks.clear()
            part = self._stacks[stack] = f',"stack":{_encode(list(stack))}'
        return part


def drop_record_time(t: datetime) -> str:
    """The "time" of drop_record(): UTC as ...Z, microseconds always written."""
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


def summary_time(t: datetime | None) -> str | None:
    """A time in summary.json (its window, a group's first and last drop): UTC as
    ...Z to the millisecond, the resolution a person reads a window at."""
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z") if t else None


class JsonLines:
    def __init__(self, stream: TextIO, stacks: bool = False) -> None:
        self.stream = stream
        self._line = LineEncoder(stacks).line

    def emit(self, drop: Drop, verdict: Verdict, who: Attribution) -> None:
        self.stream.write(self._line(drop, verdict, who))

    def flush(self) -> None:
        """Called after each batch of events, not per event: a storm stays cheap."""
        self.stream.flush()
