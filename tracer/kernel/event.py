"""Python mirror of the records in bpf/netdrop.h that Python builds or unpacks itself.

The maps read only through bcc (counts, count_slots, cpu_state) need none:
bcc gives their values with the field names of the C.

tests/unit/kernel/test_event_layout.py parses the header (bpfsource.HEADER) and
checks that every field, size and offset agrees. A field whose value is
still kernel data to be translated by decode.py carries the suffix
`_raw` here (reason_raw: an enum number; location_raw: a kernel address ...);
the test compares names with the suffix removed.
"""

from __future__ import annotations

import ctypes
import struct

ND_IFNAMSIZ = 16

ND_F_DF = 0x01
ND_F_ICMP_SENT = 0x02
ND_F_HAS_ROUTE = 0x04
ND_F_L4 = 0x08
ND_F_FRAGMENT = 0x10
ND_F_CT = 0x20
ND_F_NFCT_READ = 0x40

ND_FILTER_NETNS = 0x01
ND_FILTER_IP = 0x04
ND_FILTER_PORT = 0x08
ND_FILTER_READY = 0x80

ND_DIR_IN_POD = 1
ND_DIR_FROM_POD = 2
ND_DIR_TO_POD = 3
ND_DIR_MASK = 3

ND_POD_TAG = 0x01
ND_POD_FILTER = 0x02

ND_PF_KNOWN = 0x80
ND_PF_TYPE_MASK = 0x07
ND_PF_DST_SHIFT = 3
ND_PF_DST_MASK = 0x38
ND_DST_UNREAD = 0
ND_DST_LOCAL = 1
ND_DST_BROADCAST = 2
ND_DST_MULTICAST = 3
ND_DST_UNICAST = 4
ND_DST_NOT_IP = 5

ND_EVENT_WINDOW_NS = 100000000
ND_MAX_SNAPLEN = 2048
ND_NETNS_INLINE = 4
ND_COUNT_SLOTS = 256
ND_POD_MEMO = 64
ND_STACK_DEPTH = 40
ND_STACK_ENTRIES = 1024


class NdEvent(ctypes.Structure):
    """struct nd_event"""

    _fields_ = [
        ("ts_ns_raw", ctypes.c_uint64),
        ("location_raw", ctypes.c_uint64),
        ("reason_raw", ctypes.c_uint32),
        ("netns", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("dev_mtu", ctypes.c_uint32),
        ("out_ifindex", ctypes.c_uint32),
        ("mtu", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
        ("pod_raw", ctypes.c_uint32),
        ("l3proto_raw", ctypes.c_uint16),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("l4proto_raw", ctypes.c_uint8),
        ("flags_raw", ctypes.c_uint8),
        ("icmp_type", ctypes.c_uint8),
        ("icmp_code", ctypes.c_uint8),
        ("caplen", ctypes.c_uint16),
        ("ct_status_raw", ctypes.c_uint32),
        ("ctinfo_raw", ctypes.c_uint8),
        ("tcp_flags_raw", ctypes.c_uint8),
        ("cause_raw", ctypes.c_uint8),
        ("facts", ctypes.c_uint8),
        ("saddr_raw", ctypes.c_uint8 * 16),
        ("daddr_raw", ctypes.c_uint8 * 16),
        ("ifname_raw", ctypes.c_char * ND_IFNAMSIZ),
        ("out_ifname_raw", ctypes.c_char * ND_IFNAMSIZ),
        ("stack_id", ctypes.c_int32),
    ]


# A counter key as netdrop reads it: (netns, reason, location address, pod tag, packet facts).
CounterKey = tuple[int, int, int, int, int]


class NdPodVal(ctypes.Structure):
    """struct nd_pod_val"""

    _fields_ = [("tag", ctypes.c_uint32), ("selected", ctypes.c_uint32)]


class NdIfKey(ctypes.Structure):
    """struct nd_if_key"""

    _fields_ = [("netns", ctypes.c_uint32), ("ifindex", ctypes.c_uint32)]


class NdIpKey(ctypes.Structure):
    """struct nd_ip_key"""

    _fields_ = [("addr_raw", ctypes.c_uint8 * 16)]


class NdFilterCfg(ctypes.Structure):
    """struct nd_filter_cfg"""

    _fields_ = [
        ("flags_raw", ctypes.c_uint32),
        ("events_per_window", ctypes.c_uint32),
        ("netns_inline_n", ctypes.c_uint32),
        ("netns_inline", ctypes.c_uint32 * ND_NETNS_INLINE),
        ("pod_flags_raw", ctypes.c_uint32),
        ("node_netns", ctypes.c_uint32),
        ("snaplen", ctypes.c_uint32),
        ("headers_only", ctypes.c_uint32),
        ("pod_gen", ctypes.c_uint32),
    ]


MIRRORS = {
    "nd_event": NdEvent,
    "nd_if_key": NdIfKey,
    "nd_ip_key": NdIpKey,
    "nd_filter_cfg": NdFilterCfg,
    "nd_pod_val": NdPodVal,
}


# ctypes scalar types -> struct format characters (standard sizes, no alignment:
# the padding comes from the mirror's own offsets, see record_struct).
_STRUCT_CODES: dict[type, str] = {ctypes.c_uint8: "B", ctypes.c_uint16: "H", ctypes.c_uint32: "I",
                                  ctypes.c_uint64: "Q", ctypes.c_int32: "i"}


def record_struct(mirror: type[ctypes.Structure]) -> struct.Struct:
    """One struct.Struct that unpacks a whole record in one step, derived from
    the ctypes mirror (so bpf/netdrop.h stays the one description of the
    bytes): each field at the mirror's offset, padding as 'x', byte arrays and
    char arrays as bytes. Native byte order: the kernel wrote the record on
    this machine. Unpacking gives the fields in _fields_ order."""
    fmt, at = "=", 0
    for spec in mirror._fields_:
        name, ctype = spec[0], spec[1]
        f = getattr(mirror, name)
        if f.offset > at:
            fmt += f"{f.offset - at}x"
        elem = getattr(ctype, "_type_", None)
        if issubclass(ctype, ctypes.Array):
            if elem not in (ctypes.c_uint8, ctypes.c_char):
                raise TypeError(f"{mirror.__name__}.{name}: only byte arrays unpack as bytes")
            fmt += f"{f.size}s"
        else:
            fmt += _STRUCT_CODES[ctype]
        at = f.offset + f.size
    size = ctypes.sizeof(mirror)
    if size > at:
        fmt += f"{size - at}x"
    return struct.Struct(fmt)


EVENT = record_struct(NdEvent)
EVENT_FIELDS: tuple[str, ...] = tuple(spec[0] for spec in NdEvent._fields_)
