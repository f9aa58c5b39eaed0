"""node: where the checks look (the node's namespace and its pods'), and how they read it.

Interface names, neighbour entries and the files of shared directories are set
by pods and node users: what is read here is never followed, never waited on,
and what does not have the shape expected reads as nothing.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..explain import evidence
from ..jsonvalues import string, sub
from ..node.nsexec import read_in_netns

if TYPE_CHECKING:
    from ..node.table import NetnsInfo


@dataclass
class Node:
    """Where the checks look: the node's namespace (path None: ours) and its pods'."""

    path: str | None
    label: str
    pods: list[NetnsInfo] = field(default_factory=list)   # pod sandboxes (a veth to the node)
    pod_names: dict[int, str] = field(default_factory=dict)  # inode -> pod name, when known
    cni_dir: Path = Path("/var/lib/cni/networks")
    _facts: evidence.Evidence | None = field(default=None, repr=False)

    def facts(self) -> evidence.Evidence:
        """The node namespace's devices, sysctls, VXLAN, xfrm and BPF programs
        (explain/evidence.py: what explains drops there), read once per run."""
        if self._facts is None:
            self._facts = evidence.read_namespace(0, self.path, None, 0.0)
        return self._facts

    # path: where to look; False (the default): the node's namespace, None: ours
    def ip_json(self, *args: str, path: str | None | Literal[False] = False) -> list[dict[str, Any]]:
        """`ip -j ...` objects; what is not a list of objects reads as nothing
        (interface names and neighbour entries are set by pods: never trusted)."""
        out = read_in_netns(self.path if path is False else path, "ip", "-j", *args)
        try:
            doc = json.loads(out) if out else []
        except (ValueError, RecursionError):
            return []
        return [x for x in doc if isinstance(x, dict)] if isinstance(doc, list) else []

    def sysctl(self, name: str, path: str | None | Literal[False] = False) -> str | None:
        out = read_in_netns(self.path if path is False else path, "cat", "/proc/sys/" + name.replace(".", "/"))
        return out.strip() if out is not None else None


def pod_label(node: Node, info: NetnsInfo) -> str:
    return node.pod_names.get(info.inode) or f"sandbox {info.label}"


def read_small(path: Path, limit: int = 4096) -> str | None:
    """A small regular file in a directory others can write to: never follows a
    link, never blocks on a FIFO, reads at most limit bytes; None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def links_by_name(node: Node, path: str | None | Literal[False] = False) -> dict[str, dict[str, Any]]:
    """Interfaces by name, those with a name and an MTU only."""
    return {name: link for link in node.ip_json("-d", "link", "show", path=path)
            if (name := string(link, "ifname")) and isinstance(mtu := link.get("mtu"), int)
            and not isinstance(mtu, bool) and mtu > 0}


def link_kind(link: dict[str, Any]) -> str | None:
    """Its type (info_kind: veth, bridge, vxlan, ...)."""
    kind = sub(link, "linkinfo").get("info_kind")
    return kind if isinstance(kind, str) else None
