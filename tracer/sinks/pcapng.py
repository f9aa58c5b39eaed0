"""pcapng: dropped packets for Wireshark, each with a comment saying why it was dropped.

One section, one interface of link type LINKTYPE_RAW (the packet starts at
its IPv4 or IPv6 header, which is where the kernel's copy starts), nanosecond
timestamps, and one Enhanced Packet Block per dropped packet carrying an
opt_comment. Format: the pcapng specification (IETF draft-ietf-opsawg-pcapng).
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import BinaryIO

LINKTYPE_RAW = 101
SHB, IDB, EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_ENDOFOPT, OPT_COMMENT = 0, 1
SHB_USERAPPL = 4
IF_NAME, IF_DESCRIPTION, IF_TSRESOL = 2, 3, 9


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _options(*opts: tuple[int, bytes]) -> bytes:
    return b"".join(_option(c, v) for c, v in opts) + struct.pack("<HH", OPT_ENDOFOPT, 0)


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


class PcapngWriter:
    def __init__(self, stream: BinaryIO, snaplen: int, application: str = "netdrop"):
        self.stream = stream
        self.snaplen = snaplen
        self.packets = 0
        shb = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + _options((SHB_USERAPPL, application.encode()))
        idb = struct.pack("<HHI", LINKTYPE_RAW, 0, snaplen) + _options(
            (IF_NAME, b"netdrop"),
            (IF_DESCRIPTION, b"packets the kernel dropped, from their IP header (skb:kfree_skb)"),
            (IF_TSRESOL, bytes([9])))
        stream.write(_block(SHB, shb) + _block(IDB, idb))

    def write(self, when: datetime, packet: bytes, orig_len: int, comment: str) -> None:
        ns = int(when.timestamp() * 1_000_000_000)
        body = struct.pack("<IIIII", 0, ns >> 32, ns & 0xFFFFFFFF, len(packet), max(orig_len, len(packet)))
        body += _pad(packet) + _options((OPT_COMMENT, comment.encode()))
        self.stream.write(_block(EPB, body))
        self.packets += 1

    def flush(self) -> None:
        self.stream.flush()


def read_blocks(data: bytes) -> list[tuple[int, bytes]]:
    """(block type, body) of each block: enough to check our own files in tests."""
    out, off = [], 0
    while off < len(data):
        kind, total = struct.unpack_from("<II", data, off)
        out.append((kind, data[off + 8: off + total - 4]))
        off += total
    return out
