"""decode: raw kernel records -> Drop, with names instead of numbers.

The one step that translates `_raw` values: reason numbers through the
running kernel's enum, locations through /proc/kallsyms, addresses into
text, monotonic nanoseconds into UTC wall-clock time.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from . import event as ev
from .facts import Kallsyms

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD

# enum ip_conntrack_info (include/uapi/linux/netfilter/nf_conntrack_common.h)
CT_INFO = {0: "established", 1: "related", 2: "new", 3: "established-reply", 4: "related-reply",
           7: "untracked"}
IPS_SRC_NAT, IPS_DST_NAT = 0x10, 0x20
TCP_FLAG_NAMES = ((0x01, "FIN"), (0x02, "SYN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK"), (0x20, "URG"))

_L4_NAMES = {0: "hopopt", 1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 47: "gre", 50: "esp"}


@dataclass(frozen=True)
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


class Decoder:
    def __init__(self, reasons: dict[int, str], kallsyms: Kallsyms, has_reason: bool = True,
                 mono_to_wall: float | None = None) -> None:
        self.reasons = reasons
        self.kallsyms = kallsyms
        self.has_reason = has_reason
        # CLOCK_MONOTONIC (bpf_ktime_get_ns) -> Unix time, fixed once at start.
        self.mono_to_wall = time.time() - time.monotonic() if mono_to_wall is None else mono_to_wall

    def reason_name(self, code: int) -> str | None:
        if not self.has_reason:
            return None
        return self.reasons.get(code, f"REASON_{code}")

    def location_name(self, addr: int) -> str | None:
        return self.kallsyms.lookup(addr) if addr else None

    def decode(self, raw: ev.NdEvent, packet: bytes = b"") -> Drop:
        flags = raw.flags_raw
        family = {ETH_P_IP: 4, ETH_P_IPV6: 6}.get(raw.l3proto_raw)
        src = dst = proto = None
        if family == 4:
            src = socket.inet_ntop(socket.AF_INET, bytes(raw.saddr_raw[:4]))
            dst = socket.inet_ntop(socket.AF_INET, bytes(raw.daddr_raw[:4]))
        elif family == 6:
            src = str(ipaddress.IPv6Address(bytes(raw.saddr_raw)))
            dst = str(ipaddress.IPv6Address(bytes(raw.daddr_raw)))
        if family:
            proto = _L4_NAMES.get(raw.l4proto_raw, str(raw.l4proto_raw))
        has_l4 = bool(flags & ev.ND_F_L4)
        has_route = bool(flags & ev.ND_F_HAS_ROUTE)
        return Drop(
            time=datetime.fromtimestamp(raw.ts_ns_raw / 1e9 + self.mono_to_wall, tz=UTC),
            reason=self.reason_name(raw.reason_raw),
            reason_raw=raw.reason_raw,
            location=self.location_name(raw.location_raw),
            location_raw=raw.location_raw,
            netns=raw.netns,
            ifindex=raw.ifindex or None,
            ifname=raw.ifname_raw.decode(errors="replace") or None,
            dev_mtu=raw.dev_mtu or None,
            out_ifindex=raw.out_ifindex if has_route else None,
            out_ifname=(raw.out_ifname_raw.decode(errors="replace") or None) if has_route else None,
            mtu=raw.mtu if has_route and raw.mtu else None,
            family=family,
            proto=proto,
            src=src,
            dst=dst,
            sport=raw.sport if has_l4 else None,
            dport=raw.dport if has_l4 else None,
            len=raw.len,
            df=bool(flags & ev.ND_F_DF),
            fragment=bool(flags & ev.ND_F_FRAGMENT),
            icmp_sent=(raw.icmp_type, raw.icmp_code) if flags & ev.ND_F_ICMP_SENT else None,
            pod_raw=raw.pod_raw,
            packet=packet,
            conntrack=_conntrack(raw),
            nat=_nat(raw),
            tcp_flags=raw.tcp_flags_raw if raw.l4proto_raw == 6 and has_l4 else None,
        )


def _conntrack(raw: ev.NdEvent) -> str | None:
    if not raw.flags_raw & ev.ND_F_NFCT_READ:
        return None
    if raw.flags_raw & ev.ND_F_CT or raw.ctinfo_raw == 7:
        return CT_INFO.get(raw.ctinfo_raw, f"ctinfo {raw.ctinfo_raw}")
    return "none"


def _nat(raw: ev.NdEvent) -> str | None:
    if not raw.flags_raw & ev.ND_F_CT:
        return None
    kinds = [n for bit, n in ((IPS_SRC_NAT, "snat"), (IPS_DST_NAT, "dnat")) if raw.ct_status_raw & bit]
    return "+".join(kinds) or None
