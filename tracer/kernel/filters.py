"""filters: what the kernel side is told to look for, as typed values for the BPF maps.

Filters is what the user asked to see (filter_netns, filter_ip, filter_port of
bpf/maps.h: within one kind any value matches; all kinds given must
match); KernelPods the pods of this node (the pod maps), which
tracer/pods/attribute.py builds. Nothing here ever becomes C source: the
loader writes these values into the maps.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..errors import UserError


@dataclass(frozen=True)
class Filters:
    netns: frozenset[int] = field(default_factory=frozenset)
    ips: frozenset[str] = field(default_factory=frozenset)
    ports: frozenset[int] = field(default_factory=frozenset)

    def describe(self, netns_names: dict[int, str] | None = None) -> list[str]:
        names = netns_names or {}
        parts = []
        if self.netns:
            parts.append("netns " + ", ".join(
                f"{names[i]} ({i})" if i in names else str(i) for i in sorted(self.netns)))
        if self.ips:
            parts.append("ip " + ", ".join(sorted(self.ips)))
        if self.ports:
            parts.append("port " + ", ".join(str(p) for p in sorted(self.ports)))
        return parts


@dataclass(frozen=True)
class KernelPods:
    """The contents of the pod maps of bpf/maps.h. Values: (tag, selected)."""

    node_netns: int
    netns: dict[int, tuple[int, bool]]
    veth: dict[tuple[int, int], tuple[int, bool]]     # (node netns, ifindex)
    ips: dict[str, tuple[int, bool]]
    hostports: dict[int, tuple[int, bool]]             # hostNetwork pods' own ports
    node_ips: frozenset[str]
    filter: bool                                       # keep only selected pods' drops


def parse_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise UserError(f"not an IP address: {text!r}") from None


def ip_key_bytes(addr: str) -> bytes:
    """IPv4 as ::ffff:a.b.c.d, the key layout of filter_ip (struct nd_ip_key)."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return b"\x00" * 10 + b"\xff\xff" + ip.packed
    return ip.packed
