"""topk: the heaviest keys of an unbounded stream, in bounded memory.

Space-Saving (Metwally, Agrawal, El Abbadi, "Efficient Computation of Frequent
and Top-k Elements in Data Streams", ICDT 2005): at most `capacity` counters.
A key already counted adds one to its counter; a new key, while there is room,
gets a counter of its own; once full, it takes over the smallest counter m,
counting from m + 1 with error m (it may have been any of the keys evicted).

Guarantees, for every key kept: count - error <= true count <= count; any key
whose true count exceeds (all additions) / capacity is kept; while no more than
`capacity` distinct keys were seen, every count is exact (error 0).

The counters sit in a binary min-heap that knows each entry's position, so
that the smallest is at hand and an increment moves its entry down by at most
log2(capacity) places: O(log N) per addition, N entries in memory.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DEFAULT_CAPACITY = 10_000


@dataclass(slots=True)
class _Entry(Generic[K, V]):
    key: K
    count: int
    error: int
    value: V
    pos: int


@dataclass(frozen=True)
class HeavyHitter(Generic[K, V]):
    """A key as reported: its count is at most `error` above the truth."""

    key: K
    count: int
    error: int
    value: V


class SpaceSaving(Generic[K, V]):
    """Counts of keys, at most `capacity` of them kept, each with a value of the
    caller's (made by `new` when a key gets a counter, and handed back on every
    addition so the caller can update it)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.evictions = 0          # keys that lost their counter to a new key
        self._heap: list[_Entry[K, V]] = []
        self._index: dict[K, _Entry[K, V]] = {}

    def __len__(self) -> int:
        return len(self._heap)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    @property
    def exact(self) -> bool:
        """True while every count is exact (never more distinct keys than capacity)."""
        return self.evictions == 0

    def add(self, key: K, new: Callable[[], V]) -> V:
        """Count one occurrence of key; its value, new if the key had no counter."""
        entry = self._index.get(key)
        if entry is not None:
            entry.count += 1
        elif len(self._heap) < self.capacity:
            entry = _Entry(key, 1, 0, new(), len(self._heap))
            self._heap.append(entry)
            self._index[key] = entry
            self._up(entry.pos)
            return entry.value
        else:
            # Take over the smallest counter: the new key may have been any of
            # those evicted before, so it counts from there, with that as error.
            entry = self._heap[0]
            del self._index[entry.key]
            self.evictions += 1
            entry.key, entry.error, entry.value = key, entry.count, new()
            entry.count += 1
            self._index[key] = entry
        self._down(entry.pos)
        return entry.value

    def top(self, n: int) -> list[HeavyHitter[K, V]]:
        """The n largest counts, largest first."""
        best = heapq.nlargest(n, self._heap, key=lambda e: e.count)
        return [HeavyHitter(e.key, e.count, e.error, e.value) for e in best]

    # -- the heap: parent (i - 1) // 2, children 2i + 1 and 2i + 2 --
    def _swap(self, i: int, j: int) -> None:
        h = self._heap
        h[i], h[j] = h[j], h[i]
        h[i].pos, h[j].pos = i, j

    def _up(self, i: int) -> None:
        h = self._heap
        while i > 0 and h[(i - 1) // 2].count > h[i].count:
            self._swap(i, (i - 1) // 2)
            i = (i - 1) // 2

    def _down(self, i: int) -> None:
        h, n = self._heap, len(self._heap)
        while True:
            smallest, left, right = i, 2 * i + 1, 2 * i + 2
            if left < n and h[left].count < h[smallest].count:
                smallest = left
            if right < n and h[right].count < h[smallest].count:
                smallest = right
            if smallest == i:
                return
            self._swap(i, smallest)
            i = smallest
