"""counts: the kernel counters' history, one edge every interval.

At each edge (a reading of Tracer.counts(), every 5 s) it keeps the change of
every key since the previous edge, only the keys that changed: a capture that
starts at t subtracts the counters at the edge at or before t from the
counters now, and gets exactly the drops counted since that edge.

The counters only grow (bpf/netdrop.c, count(): the counts hash and the
per-CPU slots, never deleted, only added to), so an edge's counters are the
previous edge's plus the changes. A key first read at an edge was 0 at every
edge before it: a capture that started earlier counts it in full. The first
reading after load is the first edge; a capture that starts before the
oldest edge kept is cut to it (at() says so by an edge later than asked).

Memory: keys are interned once (the kernel's map holds at most MAX_COUNTERS
of them, never removed), an edge's changes are three arrays (key ids,
packets, bytes), each of the smallest item size its values fit, and an edge
whose key ids are the previous edge's shares that array. Edges older than
`keep` seconds go first, then the oldest while over `budget` bytes.
"""

from __future__ import annotations

import sys
import threading
from array import array
from bisect import bisect_right
from collections.abc import Mapping
from typing import NamedTuple

from ..kernel.loader import Count, CounterKey
from .events import object_bytes

INTERVAL = 5.0                      # seconds between edges
KEEP = 30 * 60.0                    # how long edges are kept
BUDGET = 24 * 1024 * 1024           # bytes: 30 min of 10,000 keys all changing (scripts/flightmem.py)

_EMPTY = array("B")                 # every edge without changes shares it
_UNSIGNED = (("B", 0xFF), ("H", 0xFFFF), ("I", 0xFFFFFFFF), ("Q", 2**64 - 1))
# An edge's entry: the _Edge tuple (5 fields), its time (a float), its charge
# (an int) and its pointer in the list.
_EDGE_ENTRY = sys.getsizeof((0, 0, 0, 0, 0)) + sys.getsizeof(0.5) + sys.getsizeof(2**40) + 8


class _Edge(NamedTuple):
    time: float
    ids: array[int]          # the keys that changed since the previous edge, ascending
    packets: array[int]      # their change, in the same order
    bytes: array[int]
    charge: int              # bytes charged for this edge's arrays and entry


def _cached(v: object) -> bool:
    """CPython's preallocated small ints: shared, nothing of the key's own."""
    return isinstance(v, int) and -5 <= v <= 256


def _smallest(values: list[int]) -> array[int]:
    """The values in an array of the smallest unsigned item size that holds them."""
    if not values:
        return _EMPTY
    top = max(values)
    code = next(code for code, most in _UNSIGNED if top <= most)
    return array(code, values)


class CounterHistory:
    """Counter edges every `interval` s for `keep` s within `budget` bytes. Thread-safe."""

    def __init__(self, interval: float = INTERVAL, keep: float = KEEP, budget: int = BUDGET) -> None:
        if interval <= 0 or keep <= 0 or budget <= 0:
            raise ValueError("interval, keep and budget must be positive")
        self.interval, self.keep, self.budget = interval, keep, budget
        self._ids: dict[CounterKey, int] = {}
        self._keys: list[CounterKey] = []
        self._key_bytes = 0                 # the interned keys' tuples and ints
        # Per key id: the counters before the oldest edge kept, and at the newest.
        self._base_p, self._base_b = array("Q"), array("Q")
        self._last_p, self._last_b = array("Q"), array("Q")
        self._edges: list[_Edge] = []
        self._times: list[float] = []       # the edges' times, for bisect
        self._edge_bytes = 0
        self._next = float("-inf")
        self._lock = threading.Lock()

    def due(self, now: float) -> bool:
        """Is it time for the next edge (a reading of the counters)?"""
        return now >= self._next

    def tick(self, counts: Mapping[CounterKey, Count], now: float) -> None:
        """An edge at `now`: the counters read then. A key missing from the
        reading is taken as unchanged; a value below the last one (which the
        kernel's counters never show) as unchanged too, so that the history
        only grows."""
        ids, keys = self._ids, self._keys
        last_p, last_b = self._last_p, self._last_b
        changed: list[tuple[int, int, int]] = []
        new: list[tuple[CounterKey, int, int]] = []
        for key, c in counts.items():
            i = ids.get(key)
            if i is None:
                new.append((key, c[0], c[1]))
                continue
            p, b = c[0] - last_p[i], c[1] - last_b[i]
            if (p or b) and p >= 0 and b >= 0:
                changed.append((i, p, b))
        with self._lock:
            for key, p, b in new:
                i = len(keys)
                ids[key] = i
                keys.append(key)
                # The key's tuple and ints, and its id's int, as pymalloc hands them out.
                self._key_bytes += sum(object_bytes(sys.getsizeof(v)) for v in (key, *key, i) if not _cached(v))
                for a in (self._base_p, self._base_b, last_p, last_b):
                    a.append(0)
                if p >= 0 and b >= 0 and (p or b):
                    changed.append((i, p, b))
            changed.sort()
            for i, p, b in changed:
                last_p[i] += p
                last_b[i] += b
            id_list = [c[0] for c in changed]
            prev = self._edges[-1].ids if self._edges else _EMPTY
            id_array = prev if len(prev) == len(id_list) and prev.tolist() == id_list else _smallest(id_list)
            dp, db = _smallest([c[1] for c in changed]), _smallest([c[2] for c in changed])
            charge = _EDGE_ENTRY + sum(sys.getsizeof(a) for a in (dp, db) if a is not _EMPTY)
            if id_array is not prev and id_array is not _EMPTY:
                charge += sys.getsizeof(id_array)
            self._edges.append(_Edge(now, id_array, dp, db, charge))
            self._times.append(now)
            self._edge_bytes += charge
            self._next = now + self.interval
            self._trim(now)

    def _trim(self, now: float) -> None:
        """Drop the oldest edges: those older than `keep` (while the next one
        still answers for now - keep), then while over budget (one kept)."""
        times = self._times
        while len(times) > 1 and times[1] <= now - self.keep:
            self._drop_oldest()
        while len(times) > 1 and self.bytes > self.budget:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        """The oldest edge's changes folded into the base."""
        edges = self._edges
        edge = edges[0]
        base_p, base_b = self._base_p, self._base_b
        for i, p, b in zip(edge.ids, edge.packets, edge.bytes, strict=True):
            base_p[i] += p
            base_b[i] += b
        self._edge_bytes -= edge.charge
        after = edges[1]
        if after.ids is edge.ids and after.ids is not _EMPTY:
            # The ids array it shared is charged to the next edge now.
            size = sys.getsizeof(after.ids)
            edges[1] = after._replace(charge=after.charge + size)
            self._edge_bytes += size
        del edges[0], self._times[0]

    @property
    def bytes(self) -> int:
        """Bytes charged: the edges, the interned keys and the per-key arrays."""
        per_key = sum(sys.getsizeof(a) for a in (self._base_p, self._base_b, self._last_p, self._last_b))
        return (self._edge_bytes + self._key_bytes + per_key + sys.getsizeof(self._ids)
                + sys.getsizeof(self._keys) + sys.getsizeof(self._edges) + sys.getsizeof(self._times))

    @property
    def oldest(self) -> float | None:
        """The oldest edge kept; None before the first reading."""
        with self._lock:
            return self._times[0] if self._times else None

    def __len__(self) -> int:
        return len(self._edges)

    def at(self, t: float) -> tuple[float, dict[CounterKey, Count]] | None:
        """(edge time, the counters then) at the latest edge at or before t, or
        at the oldest edge kept when t is before it (then edge time > t: the
        caller's window is cut). Keys at 0 then are left out. None before the
        first reading."""
        with self._lock:
            if not self._edges:
                return None
            j = max(0, bisect_right(self._times, t) - 1)
            edge_time = self._times[j]
            # From whichever end has fewer changes to add up: the base forwards
            # to edge j, or the newest edge backwards.
            forward = self._edges[:j + 1]
            backward = self._edges[j + 1:]
            if sum(len(e.ids) for e in forward) <= sum(len(e.ids) for e in backward):
                edges, sign, p, b = forward, 1, self._base_p.tolist(), self._base_b.tolist()
            else:
                edges, sign, p, b = backward, -1, self._last_p.tolist(), self._last_b.tolist()
            keys = self._keys[:]
        for edge in edges:
            for i, dp, db in zip(edge.ids, edge.packets, edge.bytes, strict=True):
                p[i] += sign * dp
                b[i] += sign * db
        return edge_time, {keys[i]: Count(p[i], b[i]) for i in range(len(keys)) if p[i] or b[i]}
