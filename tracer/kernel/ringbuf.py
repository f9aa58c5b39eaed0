"""ringbuf: the events' BPF ring buffer, read in batches.

On x86-64 through the map's own mappings (RingReader); elsewhere through
libbpf's reader in the compiled bcc module. EventReader chooses and hands out
raw records (the bytes of each sample: struct nd_event, then its packet).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import select
import struct
import time
from typing import Any

_U32 = struct.Struct("=I")
# The BPF ring buffer's layout (kernel/bpf/ringbuf.c, include/uapi/linux/bpf.h):
# page 0 holds the consumer position (the reader writes it), page 1 the
# producer position, then the data pages, mapped twice in a row so that a
# record running past the end reads on contiguously. Each record is an
# 8-byte header (u32 length with the BUSY and DISCARD bits, u32 page offset)
# and its data, padded to 8 bytes.
_RB_BUSY = 1 << 31
_RB_DISCARD = 1 << 30
_RB_HDR = 8
# Reading the ring in Python relies on loads not passing loads (the record's
# header, then its data): true of x86-64 (TSO). Elsewhere libbpf's reader (with
# its acquire loads), through bcc.
DIRECT_RING = platform.machine() == "x86_64"


class RingReader:
    """Consumer of a BPF ring buffer map through its own mappings: a batch of
    records costs one loop in Python, where libbpf's reader under bcc calls
    back into Python through ctypes for every record (1.8 us per event here)."""

    def __init__(self, map_fd: int, data_size: int) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._ring = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._cons = memoryview(self._consumer).cast("Q")     # [0]: consumer position
        self._prod = memoryview(self._ring)[:8].cast("Q")     # [0]: producer position
        self._data, self._mask = page, data_size - 1
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    def read(self, max_events: int | None) -> list[bytes]:
        """The committed records from the consumer position on (at most
        max_events), handing their space back to the kernel."""
        cons, prod = self._cons[0], self._prod[0]
        ring, data, mask, unpack = self._ring, self._data, self._mask, _U32.unpack_from
        out: list[bytes] = []
        append = out.append
        left = -1 if max_events is None else max_events
        while cons < prod and left:
            at = data + (cons & mask)
            header, = unpack(ring, at)
            if header & (_RB_BUSY | _RB_DISCARD):
                if header & _RB_BUSY:       # reserved, not yet committed: the rest waits
                    break
                cons += ((header & ~_RB_DISCARD) + _RB_HDR + 7) & ~7
                continue
            append(ring[at + _RB_HDR:at + _RB_HDR + header])
            cons += (header + _RB_HDR + 7) & ~7
            left -= 1
        self._cons[0] = cons
        return out

    def wait(self, timeout_ms: int) -> None:
        """Until the kernel announces a record (bpf_ringbuf_submit with a
        wakeup), or timeout_ms."""
        self._epoll.poll(timeout_ms / 1000)

    def close(self) -> None:
        self._epoll.close()
        self._cons.release()
        self._prod.release()
        self._consumer.close()
        self._ring.close()


_SMALL_BATCH = 64           # read(): fewer records than this wait _GATHER_SECONDS for more
_GATHER_SECONDS = 0.002
_string_at = ctypes.string_at


class EventReader:
    """The events map of a compiled module (bcc's), read directly or through bcc."""

    def __init__(self, bpf: Any, ringbuf_pages: int, direct: bool = DIRECT_RING) -> None:
        self._bpf = bpf
        self._events: list[bytes] = []
        self._batch: int | None = None
        self._ring: RingReader | None = None
        if direct:
            self._ring = RingReader(bpf[b"events"].map_fd, ringbuf_pages * os.sysconf("SC_PAGE_SIZE"))
        else:
            bpf[b"events"].open_ring_buffer(self._on_event)

    def _on_event(self, _ctx: object, data: int, size: int) -> int:
        # One copy, nothing parsed: the callback runs once per event, and
        # decode.py unpacks the bytes in one step later.
        self._events.append(_string_at(data, size))
        # A full batch: -1 makes ring_buffer__poll() return (bcc 0.26's RingBuf
        # passes our int through), so the event loop gets to its stop check and
        # tick under a storm that never empties the ring. libbpf's
        # ringbuf_process_ring() has already moved its consumer position past
        # this sample when it calls us, so the sample is taken first: returning
        # -1 *instead of* taking it would lose one event per full batch, uncounted
        # (tests/kernel/kernel/test_counts.py).
        return -1 if self._batch is not None and len(self._events) >= self._batch else 0

    def read(self, timeout_ms: int, max_events: int | None) -> list[bytes]:
        """Records delivered since the last call (waits up to timeout_ms for the
        first); at most max_events, None: until the ring is empty."""
        if self._ring is not None:
            limit = None if max_events is None else max(1, max_events)
            records = self._ring.read(limit)
            if not records:
                self._ring.wait(timeout_ms)
                records = self._ring.read(limit)
            if timeout_ms and 0 < len(records) < _SMALL_BATCH and (limit is None or len(records) < limit):
                # A few records: in a storm the reader has caught up with the
                # producer and would take them a handful at a time, paying the
                # event loop's per-batch cost for each handful (11 records a
                # call, ~1 us each). A moment's wait gathers a real batch; a
                # lone drop is late by as much.
                time.sleep(_GATHER_SECONDS)
                records += self._ring.read(None if limit is None else limit - len(records))
            return records
        self._batch = None if max_events is None else max(1, max_events)
        self._bpf.ring_buffer_poll(timeout_ms)
        if not self._events:
            # The program wakes the reader for one event in 64 (bpf/netdrop.c,
            # wakeup_flags): the others are in the ring, unannounced.
            self._bpf.ring_buffer_consume()
        out, self._events = self._events, []
        return out

    def close(self) -> None:
        ring, self._ring = self._ring, None
        if ring is not None:
            ring.close()
