"""Ring buffer records as the kernel writes them: golden events (tests/golden/events.jsonl,
recorded from the kernel) with the time and packet bytes a test needs."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from tracer.kernel import event as ev

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "events.jsonl"
HEADS = [bytes.fromhex(json.loads(line)["raw_hex"]) for line in GOLDEN.read_text().splitlines()]
_CAPLEN = ev.NdEvent.caplen.offset
# An IPv4 header and a UDP header (what headers_only keeps of a datagram), and a TCP one with options.
UDP_HEADERS = bytes.fromhex("4500001c1c46400040110000c0a80001c0a800c79c4000350008" "0000")
TCP_HEADERS = bytes.fromhex("450000341c46400040060000c0a80001c0a800c7") + bytes(32)


def record(ts_ns: int, packet: bytes = UDP_HEADERS, which: int = 0) -> bytes:
    """A golden record with its nd_event.ts_ns set and `packet` after it (caplen set)."""
    head = bytearray(HEADS[which % len(HEADS)])
    struct.pack_into("=Q", head, 0, ts_ns)
    struct.pack_into("=H", head, _CAPLEN, len(packet))
    return bytes(head) + packet


def now_ns() -> int:
    return time.monotonic_ns()
