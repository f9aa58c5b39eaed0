"""verdict: what explaining a drop gives (Verdict), and what classify and netfilter_verdict share.

The ICMP and TCP constants, a kernel function name matched against patterns,
and the two phrases every hint builds on (where the packet was, where it went).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from ..kernel.decode import Drop

# ICMP type/code pairs as icmp:icmp_send reports them (include/uapi/linux/icmp.h).
ICMP_DEST_UNREACH = 3
ICMP_FRAG_NEEDED = (3, 4)
ICMP_PORT_UNREACH = (3, 3)
ICMP_NET_HOST_UNREACH = ((3, 0), (3, 1), (3, 6), (3, 7))   # net, host, net unknown, host unknown

# TCP header flags (include/net/tcp.h: TCPHDR_SYN, TCPHDR_ACK).
TCP_SYN, TCP_ACK = 0x02, 0x10


@dataclass(frozen=True)
class Verdict:
    category: str
    hint: str
    detail: dict[str, object] | None = None    # what told a netfilter or conntrack drop apart (JSON "detail")
    # Expected on every healthy node (explain/benign.py says which and why):
    # counted always, set aside by the console and the summaries unless --all.
    benign: bool = False


def name_matches(name: str | None, patterns: Iterable[str]) -> bool:
    """A kernel name (drop reason, function) against shell-style patterns, case-sensitive."""
    return name is not None and any(fnmatch.fnmatchcase(name, p) for p in patterns)


def on_device(drop: Drop) -> str:
    """" on cni0", or nothing when the event names no device."""
    return f" on {drop.ifname}" if drop.ifname else ""


def destination(drop: Drop) -> str:
    if drop.dst is None:
        return "its destination"
    return f"{drop.dst}:{drop.dport}" if drop.dport is not None else drop.dst
