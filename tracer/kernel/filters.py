"""filters: what the user asked to see, as typed values for the BPF maps.

Nothing here ever becomes C source: the loader writes these values into the
filter maps of bpf/netdrop.c (filter_netns, filter_ip, filter_port). Within
one kind any value matches; all kinds given must match.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

NETNS_RUN_DIR = Path("/run/netns")


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


def resolve_netns(spec: str, run_dir: Path = NETNS_RUN_DIR) -> int:
    """--netns NAME|PATH|INODE -> namespace inode."""
    if spec.isdigit():
        inode = int(spec)
        if inode not in known_netns_inodes(run_dir):
            raise UserError(f"unknown network namespace inode {inode}: no process or /run/netns entry holds it")
        return inode
    path = Path(spec) if "/" in spec else run_dir / spec
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        known = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
        hint = f" (known: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''})" if known else ""
        raise UserError(f"unknown network namespace {spec!r}: {path} does not exist{hint}") from None
    except PermissionError:
        raise UserError(f"cannot open network namespace {path}: permission denied (run as root)") from None


def known_netns_inodes(run_dir: Path = NETNS_RUN_DIR) -> dict[int, str]:
    """Every network namespace we can see, inode -> a name to show: the
    /run/netns name, else 'pid N' of a process living in it."""
    from ..pods.nodeview import discover_namespaces

    return {ino: (found["names"] or [f"pid {found['pids'][0]}"])[0]
            for ino, found in discover_namespaces(run_dir).items()}


def parse_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise UserError(f"not an IP address: {text!r}") from None


def parse_port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UserError(f"not a port number (1-65535): {text!r}")
    return int(text)


def ip_key_bytes(addr: str) -> bytes:
    """IPv4 as ::ffff:a.b.c.d, the key layout of filter_ip (struct nd_ip_key)."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return b"\x00" * 10 + b"\xff\xff" + ip.packed
    return ip.packed
