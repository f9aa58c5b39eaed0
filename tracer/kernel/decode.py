"""decode: raw kernel records -> Drop, with names instead of numbers.

The one step that translates `_raw` values: reason numbers through the
running kernel's enum, locations through /proc/kallsyms, addresses into
text, monotonic nanoseconds into UTC wall-clock time.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from dataclasses import dataclass, fields, make_dataclass
from datetime import UTC, datetime
from collections.abc import Callable
from typing import Any, TypeVar

from . import event as ev
from . import registry
from .facts import Kallsyms
from .stacks import Stack

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD

# enum ip_conntrack_info (include/uapi/linux/netfilter/nf_conntrack_common.h)
CT_INFO = {0: "established", 1: "related", 2: "new", 3: "established-reply", 4: "related-reply",
           7: "untracked"}
IPS_SRC_NAT, IPS_DST_NAT = 0x10, 0x20
TCP_FLAG_NAMES = ((0x01, "FIN"), (0x02, "SYN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK"), (0x20, "URG"))

# nd_event.cause's names (registry.py: one per function hook that tells one), and the causes
# whose note carries nf_conntrack_max in nd_event.ct_status.
CAUSES = {code: c.name for code, c in registry.CAUSES.items()}
_CT_MAX_CAUSES = frozenset(code for code, c in registry.CAUSES.items() if c.carries_ct_max)

T = TypeVar("T")

_L4_NAMES = {0: "hopopt", 1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 47: "gre", 50: "esp"}


@dataclass(frozen=True, slots=True)
class Drop:
    """One dropped packet, decoded."""

    time: datetime
    reason: str | None        # kernel name without SKB_DROP_REASON_, None if the kernel has none
    reason_raw: int           # the enum number: the counter key, and shown if the enum lacks it
    location: str | None      # function that dropped it, e.g. "ip_forward"
    location_raw: int         # the kernel address: the counter key
    netns: int                # inode of the network namespace
    ifindex: int | None
    ifname: str | None
    dev_mtu: int | None
    out_ifindex: int | None   # the route's egress device, if the skb had a route
    out_ifname: str | None
    mtu: int | None           # MTU of that route
    family: int | None        # 4, 6 or None when no IP header could be read
    proto: str | None         # "tcp", "udp", "icmp", ... or the protocol number
    src: str | None
    dst: str | None
    sport: int | None
    dport: int | None
    len: int
    df: bool                  # IPv4 don't-fragment set (IPv6 never fragments in flight)
    fragment: bool
    icmp_sent: tuple[int, int] | None  # (type, code) of the ICMP error the kernel sent
    pod_raw: int = 0          # pod tag from the kernel's pod maps: id << 2 | direction (attribute.py)
    packet: bytes = b""       # the packet from its IP header, only when capturing (capture --pcap)
    conntrack: str | None = None  # "new", "established", ..., "untracked", "none" (no entry); None: unknown
    nat: str | None = None    # "dnat", "snat", "snat+dnat": what the connection's NAT did
    tcp_flags: int | None = None
    # What a function hook (bpf/funchooks.c) saw of this packet just before it
    # was dropped: one of CAUSES' values, None if no hook saw it (or none is attached).
    cause: str | None = None
    ct_max: int | None = None  # with cause "ct-table-full": nf_conntrack_max, where the kernel shows it
    # The kernel stack from the dropping function down (kernel/stacks.py), when stacks are read.
    stack: Stack | None = None
    # What the kernel had decided about the destination (ND_PF_*, kernel/pktfacts.py):
    # explain/benign.py decides by it, as it does for the counter key that holds the same.
    facts: int = 0

    @property
    def tcp_flag_names(self) -> str:
        return ",".join(n for bit, n in TCP_FLAG_NAMES if (self.tcp_flags or 0) & bit)

    @property
    def flow(self) -> str:
        """src:sport -> dst:dport proto, as a person writes it."""
        if self.src is None:
            return "(no IP header)"

        def ep(addr: str | None, port: int | None) -> str:
            # src and dst come from one IP header: dst is None only when src is, handled above
            host = f"[{addr}]" if self.family == 6 and port is not None else f"{addr}"
            return f"{host}:{port}" if port is not None else host

        return f"{ep(self.src, self.sport)} -> {ep(self.dst, self.dport)} {self.proto or ''}".rstrip()


# A decoded value memo (addresses, device names) holds at most this many
# entries: a storm of new flows from ever-new addresses must not grow it.
MEMO_ENTRIES = 65536

# Drop is frozen: its generated __init__ sets each of its 28 fields through
# object.__setattr__ (2 us per event, measured). The decoder builds a Drop as
# this unfrozen twin (same slots in the same order, so the layouts agree) with
# plain stores, then makes it a Drop: 0.8 us. Nothing else ever sees the twin.
_DropBuilder = make_dataclass("_DropBuilder", [(f.name, f.type) for f in fields(Drop)], slots=True)

if tuple(f.name for f in fields(_DropBuilder)) != Drop.__slots__:    # pragma: no cover - import-time check
    raise ImportError("decode._DropBuilder must have Drop's slots in Drop's order")

# decode_record unpacks an event into local names in the order of the header's
# fields: a change of the header must be a change here too.
_EXPECTED_FIELDS = ("ts_ns_raw", "location_raw", "reason_raw", "netns", "ifindex", "dev_mtu", "out_ifindex", "mtu",
                    "len", "pod_raw", "l3proto_raw", "sport", "dport", "l4proto_raw", "flags_raw", "icmp_type",
                    "icmp_code", "caplen", "ct_status_raw", "ctinfo_raw", "tcp_flags_raw", "cause_raw", "facts",
                    "saddr_raw", "daddr_raw", "ifname_raw", "out_ifname_raw", "stack_id")
if ev.EVENT_FIELDS != _EXPECTED_FIELDS:    # pragma: no cover - import-time check
    raise ImportError("bpf/netdrop.h's nd_event changed: update decode.decode_record's unpacking")

_UNPACK = ev.EVENT.unpack_from
_TS = struct.Struct("=Q").unpack_from     # nd_event.ts_ns, its first field
_WALL = datetime.fromtimestamp            # tz positional: 0.1 us less than tz=UTC
_HEAD = ev.EVENT.size
# Module constants, not ev.X attribute lookups: decode_record runs for every event.
_F_DF, _F_ICMP_SENT, _F_HAS_ROUTE, _F_L4, _F_FRAGMENT, _F_CT, _F_NFCT_READ = (
    ev.ND_F_DF, ev.ND_F_ICMP_SENT, ev.ND_F_HAS_ROUTE, ev.ND_F_L4, ev.ND_F_FRAGMENT, ev.ND_F_CT, ev.ND_F_NFCT_READ)
_FAMILY = {ETH_P_IP: 4, ETH_P_IPV6: 6}
_PF_DST_MASK, _PF_NOT_IP = ev.ND_PF_DST_MASK, ev.ND_DST_NOT_IP << ev.ND_PF_DST_SHIFT


class Decoder:
    def __init__(self, reasons: dict[int, str], kallsyms: Kallsyms, has_reason: bool = True,
                 mono_to_wall: float | None = None,
                 stacks: Callable[[int, int], Stack | None] | None = None) -> None:
        """stacks(stack_id, location address): the named kernel stack of an
        event (stacks.Symbolizer); None: events are decoded without their stack."""
        self.reasons = reasons
        self.stacks = stacks
        self.kallsyms = kallsyms
        self.has_reason = has_reason
        # CLOCK_MONOTONIC (bpf_ktime_get_ns) -> Unix time, fixed once at start.
        self.mono_to_wall = time.time() - time.monotonic() if mono_to_wall is None else mono_to_wall
        # Per-event work done once per distinct value (a storm repeats them):
        # (reason, location, device, egress device) and (family, protocol, source, destination).
        self._names: dict[tuple[int, int, bytes, bytes], tuple[str | None, str | None, str | None, str | None]] = {}
        self._addrs: dict[tuple[int, int, bytes, bytes], _Addresses] = {}
        self._rest: tuple[object, ...] = ()     # the last record's fields but its time (decode_again)

    def reason_name(self, code: int) -> str | None:
        if not self.has_reason:
            return None
        return self.reasons.get(code, f"REASON_{code}")

    def location_name(self, addr: int) -> str | None:
        return self.kallsyms.lookup(addr) if addr else None

    def decode(self, raw: ev.NdEvent | bytes, packet: bytes = b"") -> Drop:
        """One record: a ctypes copy or its bytes (the header alone, packet given apart)."""
        return self.decode_record(bytes(raw), packet)

    def decode_record(self, rec: bytes, packet: bytes | None = None) -> Drop:
        """A record as the ring buffer holds it: struct nd_event, then caplen
        bytes of the packet (packet=None: taken from rec), in one unpack."""
        (ts, location_raw, reason_raw, netns, ifindex, dev_mtu, out_ifindex, mtu, length, pod_raw, l3proto, sport,
         dport, l4proto, flags, icmp_type, icmp_code, caplen, ct_status, ctinfo, tcp_flags, cause, facts, saddr,
         daddr, ifname, out_ifname, stack_id) = _UNPACK(rec)
        if packet is None:
            packet = rec[_HEAD:_HEAD + caplen] if caplen else b""
        if facts & _PF_DST_MASK == _PF_NOT_IP:      # a netlink message, not IP: no addresses to read
            l3proto = flags = 0
        has_l4 = flags & _F_L4
        has_route = flags & _F_HAS_ROUTE
        # What a storm repeats, translated once per distinct value (bounded memos).
        names_key = (reason_raw, location_raw, ifname, out_ifname)
        names = self._names.get(names_key)
        if names is None:
            names = self._memo(self._names, names_key, (self.reason_name(reason_raw), self.location_name(location_raw),
                                                        _device(ifname), _device(out_ifname)))
        addrs_key = (l3proto, l4proto, saddr, daddr)
        addrs = self._addrs.get(addrs_key)
        if addrs is None:
            addrs = self._memo(self._addrs, addrs_key, _addresses(l3proto, l4proto, saddr, daddr))
        rest = (
            names[0],
            reason_raw,
            names[1],
            location_raw,
            netns,
            ifindex or None,
            names[2],
            dev_mtu or None,
            out_ifindex if has_route else None,
            names[3] if has_route else None,
            mtu if has_route and mtu else None,
            addrs[0],
            addrs[1],
            addrs[2],
            addrs[3],
            sport if has_l4 else None,
            dport if has_l4 else None,
            length,
            bool(flags & _F_DF),
            bool(flags & _F_FRAGMENT),
            (icmp_type, icmp_code) if flags & _F_ICMP_SENT else None,
            pod_raw,
            packet,
            _conntrack(flags, ctinfo) if flags & _F_NFCT_READ else None,
            _NAT[ct_status & _IPS_NAT] if flags & _F_CT else None,
            tcp_flags if l4proto == 6 and has_l4 else None,
            CAUSES.get(cause) if cause else None,
            ct_status if cause in _CT_MAX_CAUSES and not flags & _F_CT and ct_status else None,
            self.stacks(stack_id, location_raw) if self.stacks is not None and stack_id >= 0 else None,
            facts,
        )
        self._rest = rest
        d: Drop = _DropBuilder(_WALL(ts / 1e9 + self.mono_to_wall, UTC), *rest)
        d.__class__ = Drop      # a _DropBuilder until now
        return d

    def decode_again(self, rec: bytes) -> Drop:
        """The record after the one decode_record() just decoded, when the two
        differ in their timestamp alone (the first 8 bytes): a storm of one flow
        is that, record after record. Only the time is translated."""
        d: Drop = _DropBuilder(_WALL(_TS(rec)[0] / 1e9 + self.mono_to_wall, UTC), *self._rest)
        d.__class__ = Drop
        return d

    @staticmethod
    def _memo(memo: dict[Any, Any], key: object, value: T) -> T:
        if len(memo) >= MEMO_ENTRIES:
            memo.clear()
        memo[key] = value
        return value


_Addresses = tuple[int | None, str | None, str | None, str | None]    # family, proto, src, dst


def _addresses(l3proto: int, l4proto: int, saddr: bytes, daddr: bytes) -> _Addresses:
    family = _FAMILY.get(l3proto)
    if family == 4:
        return 4, _L4_NAMES.get(l4proto) or str(l4proto), socket.inet_ntop(socket.AF_INET, saddr[:4]), \
            socket.inet_ntop(socket.AF_INET, daddr[:4])
    if family == 6:
        return 6, _L4_NAMES.get(l4proto) or str(l4proto), str(ipaddress.IPv6Address(saddr)), \
            str(ipaddress.IPv6Address(daddr))
    return None, None, None, None


def _device(raw: bytes) -> str | None:
    """The kernel's name is NUL-terminated in its IFNAMSIZ buffer."""
    return raw.split(b"\0", 1)[0].decode(errors="replace") or None


def _conntrack(flags: int, ctinfo: int) -> str:
    """The conntrack state of an event whose skb's _nfct was read (ND_F_NFCT_READ)."""
    if flags & _F_CT or ctinfo == 7:
        return CT_INFO.get(ctinfo, f"ctinfo {ctinfo}")
    return "none"


# What the connection's NAT did, from its status bits (include/uapi/linux/netfilter/nf_conntrack_common.h).
_IPS_NAT = IPS_SRC_NAT | IPS_DST_NAT
_NAT = {0: None, IPS_SRC_NAT: "snat", IPS_DST_NAT: "dnat", _IPS_NAT: "snat+dnat"}
