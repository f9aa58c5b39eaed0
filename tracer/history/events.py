"""events: the sampled drop events of the last while, as the ring buffer gave them.

Each record is kept as poll_records returned it (struct nd_event, then the
packet bytes it carries), grouped by the batch it came in: one list per poll,
so a record costs its bytes object and one list slot, nothing else. A
record's time is its own nd_event.ts_ns (bpf_ktime_get_ns, CLOCK_MONOTONIC,
taken when the kernel dropped the packet), read as wall-clock time with the
offset the decoder uses: a record at or after a counter edge is then a drop
the counters at that edge did not hold yet, however late it was polled.

The ring is bounded by bytes: each record is charged what CPython allocates
for it (its object rounded up to pymalloc's 16-byte blocks, or malloc's header
past pymalloc's 512 bytes) and its list slot, each batch its list and its
entry; the oldest batches go first.
"""

from __future__ import annotations

import struct
import sys
import threading
import time
from collections import deque
from typing import NamedTuple

_TS = struct.Struct("=Q").unpack_from       # nd_event.ts_ns: its first field (kernel/event.py)
_TS_SIZE = 8
_BYTES_HEAD = sys.getsizeof(b"")            # a bytes object's header and its trailing NUL
_SMALL = 512                                # pymalloc serves requests up to this (Objects/obmalloc.c)
_ALIGN = 16                                 # pymalloc's block size step on 64-bit
_MALLOC_HEAD = 16                           # glibc's chunk header and alignment, for larger objects
_SLOT = 8                                   # the record's pointer in its batch's list
# A batch's entry: the _Batch tuple (4 fields), its three ints (times in ns and
# its charge: beyond the small-int cache) and its pointer in the deque.
_BATCH_ENTRY = sys.getsizeof((0, 0, 0, 0)) + 3 * sys.getsizeof(2**62) + 8


def object_bytes(requested: int) -> int:
    """What the allocator really sets aside for an object of `requested` bytes."""
    if requested <= _SMALL:
        return -(-requested // _ALIGN) * _ALIGN
    return -(-(requested + _MALLOC_HEAD) // _ALIGN) * _ALIGN


def record_bytes(record: bytes) -> int:
    """A kept record's charge: its bytes object and its slot in a list."""
    return object_bytes(_BYTES_HEAD + len(record)) + _SLOT


class _Batch(NamedTuple):
    records: list[bytes]     # as polled: never changed once kept
    oldest_ns: int           # the earliest ts_ns among them
    upto_ns: int             # the latest ts_ns among them and every batch before
    charge: int              # bytes charged for the batch, its records included


class EventRing:
    """The newest records within `budget` bytes. Thread-safe: the serve loop
    records while a capture reads."""

    def __init__(self, budget: int, mono_to_wall: float | None = None) -> None:
        """mono_to_wall: CLOCK_MONOTONIC -> Unix time (the decoder's, so that a
        record's time here is the time its decoded event shows)."""
        if budget <= 0:
            raise ValueError("the ring's budget must be positive")
        self.budget = budget
        self.mono_to_wall = time.time() - time.monotonic() if mono_to_wall is None else mono_to_wall
        self.evicted = 0                    # records that made room for newer ones
        self._batches: deque[_Batch] = deque()
        self._bytes = 0
        self._count = 0
        self._upto = 0                      # the latest ts_ns seen
        self._evicted_upto: int | None = None   # the latest ts_ns of any record evicted
        self._started_ns = time.monotonic_ns()     # the kernel's clock (bpf_ktime_get_ns)
        self._lock = threading.Lock()

    def record(self, records: list[bytes]) -> None:
        """Keep one poll's records (the ring takes the list as it is: the
        caller does not change it afterwards). A record too short to hold its
        time is left out: it cannot have come from the kernel."""
        if not records:
            return
        ts = _TS
        oldest = upto = -1
        charge = sys.getsizeof(records) + _BATCH_ENTRY
        try:
            for rec in records:
                t = ts(rec)[0]
                if t > upto:
                    upto = t
                if t < oldest or oldest < 0:
                    oldest = t
                # object_bytes(_BYTES_HEAD + len(rec)), inline: this runs for every event (its
                # slot is in the list's own size)
                n = _BYTES_HEAD + len(rec)
                charge += -(-n // _ALIGN) * _ALIGN if n <= _SMALL else object_bytes(n)
        except struct.error:
            records = [r for r in records if len(r) >= _TS_SIZE]
            self.record(records)
            return
        with self._lock:
            self._upto = upto = max(upto, self._upto)
            self._batches.append(_Batch(records, oldest, upto, charge))
            self._bytes += charge
            self._count += len(records)
            if self._bytes > self.budget:
                self._evict()

    def _evict(self) -> None:
        batches = self._batches
        while self._bytes > self.budget and len(batches) > 1:
            self._drop(batches.popleft())
        if self._bytes > self.budget:
            # One batch over the whole budget: keep its newest records that fit.
            last = batches.pop()
            self._bytes -= last.charge
            self._count -= len(last.records)
            room = self.budget - sys.getsizeof([]) - _BATCH_ENTRY
            cut = len(last.records)
            while cut and room - record_bytes(last.records[cut - 1]) >= 0:
                cut -= 1
                room -= record_bytes(last.records[cut])
            gone, kept = last.records[:cut], last.records[cut:]
            self.evicted += len(gone)
            self._evicted_upto = max([self._evicted_upto or 0, *(_TS(r)[0] for r in gone)])
            if kept:
                charge = sys.getsizeof(kept) + _BATCH_ENTRY + sum(object_bytes(_BYTES_HEAD + len(r)) for r in kept)
                batches.append(_Batch(kept, min(_TS(r)[0] for r in kept), last.upto_ns, charge))
                self._bytes += charge
                self._count += len(kept)

    def _drop(self, batch: _Batch) -> None:
        self._bytes -= batch.charge
        self._count -= len(batch.records)
        self.evicted += len(batch.records)
        # upto_ns bounds every batch before it too: nothing older is later than it.
        self._evicted_upto = max(self._evicted_upto or 0, batch.upto_ns)

    def since(self, t: float) -> list[bytes]:
        """The records kept whose drop happened at or after Unix time t, oldest batch first
        (as finely as a float Unix time tells: a quarter of a microsecond)."""
        t_ns = self._ns(t)
        with self._lock:
            picked: list[_Batch] = []
            for batch in reversed(self._batches):
                if batch.upto_ns < t_ns:        # nothing in it or before it is as late as t
                    break
                picked.append(batch)
        out: list[bytes] = []
        for batch in reversed(picked):
            if batch.oldest_ns >= t_ns:
                out += batch.records
            else:
                out += [r for r in batch.records if _TS(r)[0] >= t_ns]
        return out

    @property
    def reach(self) -> float:
        """Unix time from which the ring holds every record it was given: when
        it was made, or just after the latest record it had to let go."""
        with self._lock:
            ns = self._started_ns if self._evicted_upto is None else max(self._started_ns, self._evicted_upto + 1)
        return self._wall(ns)

    @property
    def oldest(self) -> float | None:
        """Unix time of the oldest record kept; None when it keeps none."""
        with self._lock:
            return self._wall(self._batches[0].oldest_ns) if self._batches else None

    @property
    def bytes(self) -> int:
        """Bytes charged for what is kept (at most the budget)."""
        return self._bytes

    def __len__(self) -> int:
        return self._count

    def _ns(self, t: float) -> int:
        return int(round((t - self.mono_to_wall) * 1e9))

    def _wall(self, ns: int) -> float:
        return ns / 1e9 + self.mono_to_wall
