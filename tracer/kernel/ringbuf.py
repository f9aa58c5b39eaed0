"""ringbuf: a BPF ring buffer map read through its own mappings.

The loader (tracer/kernel/loader.py) hands the ring's map fd here on x86-64;
elsewhere it reads through bcc (libbpf's reader).
"""

from __future__ import annotations

import mmap
import os
import platform
import select
import struct

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
# its acquire loads), through bcc, as before.
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
