"""table: the node's namespaces, their addresses and host veths, kept one change at a time.

NetnsInfo is what netdrop knows of one namespace: where it is, its global
addresses, and the host side of its veth: the node-side interface whose index
the namespace's veth names as its peer (IFLA_LINK), and which names it back.
Whatever the CNI calls it (veth*, cali*, lxc*, ...). NodeTable is that state on
plain data, changed by what NodeScanner (scan) reads; NodeSnapshot is a frozen
view of it. Nothing here does I/O or knows about Kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .namespaces import NETNS_RUN_DIR, FoundNetns

PENDING_SECONDS = 30.0   # a namespace without address or veth is looked at again this long (CNI at work)

# veth ifindex -> (name, peer ifindex (IFLA_LINK), peer's namespace id (IFLA_LINK_NETNSID))
Veth = tuple[str, int, int | None]
Veths = dict[int, Veth]


@dataclass(frozen=True)
class HostVeth:
    ifindex: int
    name: str


@dataclass(frozen=True)
class NetnsInfo:
    inode: int
    names: tuple[str, ...]       # /run/netns names (CNI sandboxes: cni-<uuid>)
    pids: tuple[int, ...]        # a few processes living in it
    ips: tuple[str, ...]         # global addresses
    host_veth: HostVeth | None   # its veth's peer in the node namespace

    @property
    def path(self) -> str:
        """A path that enters it: its /run/netns name, else a process living in it."""
        return str(NETNS_RUN_DIR / self.names[0]) if self.names else f"/proc/{self.pids[0]}/ns/net"

    @property
    def label(self) -> str:
        if self.names:
            return self.names[0]
        return f"pid {self.pids[0]}" if self.pids else str(self.inode)


@dataclass(frozen=True)
class NodeSnapshot:
    node_netns: int
    node_ips: tuple[str, ...]
    namespaces: dict[int, NetnsInfo] = field(default_factory=dict)   # all but the node's

    def pod_like(self) -> list[NetnsInfo]:
        """Namespaces wired to the node by a veth: pod sandboxes, as far as the node can tell."""
        return [n for n in self.namespaces.values() if n.host_veth is not None]


def host_veth(node_veths: Veths, veths: Veths, nsid: int | None) -> HostVeth | None:
    """The node-side end of a namespace's veth. Interface indexes repeat across
    namespaces (every pod has an eth0 numbered 2 or 3), so the pair must name
    each other and the node's end must point into this namespace (nsid: the
    id the node's namespace has for it)."""
    if nsid is None:
        return None
    for ifindex, (_name, peer, _peer_ns) in veths.items():
        node_side = node_veths.get(peer)
        if node_side and node_side[1] == ifindex and node_side[2] == nsid:
            return HostVeth(peer, node_side[0])
    return None


# ------------------------------------------------------------------ the incremental state

@dataclass
class NodeTable:
    """The node's namespaces as last seen, changed one piece at a time. Plain
    data in, plain data out; the I/O is NodeScanner's. Used from one thread."""

    node_inode: int
    node_ips: tuple[str, ...] = ()
    node_veths: Veths = field(default_factory=dict)
    found: dict[int, FoundNetns] = field(default_factory=dict)     # where each namespace is
    spaces: dict[int, NetnsInfo] = field(default_factory=dict)     # what was read in each
    nsids: dict[int, int] = field(default_factory=dict)            # inode -> the node's id for it
    first_seen: dict[int, float] = field(default_factory=dict)
    _snapshot: NodeSnapshot | None = None

    def _dirty(self) -> None:
        self._snapshot = None

    def snapshot(self) -> NodeSnapshot:
        """The same object until something changes: who rebuilds on a new one rebuilds only then."""
        if self._snapshot is None:
            self._snapshot = NodeSnapshot(self.node_inode, self.node_ips, dict(self.spaces))
        return self._snapshot

    def set_node_ips(self, ips: tuple[str, ...]) -> None:
        if ips != self.node_ips:
            self.node_ips = ips
            self._dirty()

    def set_node_veths(self, veths: Veths) -> set[int]:
        """All node veths at once (a dump); the namespaces whose host side changed."""
        touched = set(self.node_veths.keys() ^ veths.keys()) | \
            {i for i in veths.keys() & self.node_veths.keys() if veths[i] != self.node_veths[i]}
        out: set[int] = set()
        for ifindex in touched:
            out |= self.link(ifindex, veths.get(ifindex))[0]
        return out

    def link(self, ifindex: int, veth: Veth | None) -> tuple[set[int], set[int]]:
        """A node link came, changed (veth) or went (None). Returns the namespaces
        to look at again (its peer's, by namespace id, and the one whose host veth
        it was) and the namespace ids no known namespace has yet."""
        old = self.node_veths.pop(ifindex, None)
        if veth is not None:
            self.node_veths[ifindex] = veth
        owners: set[int] = set()
        unknown: set[int] = set()
        for v in (old, veth):
            if v is None or v[2] is None:
                continue
            owner = self.owner_of_nsid(v[2])
            if owner is not None:
                owners.add(owner)
            elif v is veth:     # a veth that went into a namespace gone too: nothing to find
                unknown.add(v[2])
        # A namespace whose host veth was this index: gone or re-wired.
        owners |= {ino for ino, info in self.spaces.items() if info.host_veth and info.host_veth.ifindex == ifindex}
        return owners, unknown

    def owner_of_nsid(self, nsid: int) -> int | None:
        return next((ino for ino, n in self.nsids.items() if n == nsid), None)

    def add_found(self, found: dict[int, FoundNetns], now: float) -> set[int]:
        """Namespaces found (a listing): the new ones, to be read. Known ones get their new names."""
        new = set()
        for ino, where in found.items():
            if ino == self.node_inode:
                continue
            if ino not in self.found:
                new.add(ino)
                self.first_seen.setdefault(ino, now)
            self.found[ino] = where
            info = self.spaces.get(ino)
            if info is not None and (info.names, info.pids) != (tuple(where["names"]), tuple(where["pids"])):
                self.spaces[ino] = NetnsInfo(ino, tuple(where["names"]), tuple(where["pids"]), info.ips,
                                             info.host_veth)
                self._dirty()
        return new

    def named_listing(self, named: dict[int, FoundNetns], now: float) -> tuple[set[int], set[int]]:
        """/run/netns listed again: (new namespaces, known ones that lost their
        last name: gone unless a process still holds them)."""
        lost = {ino for ino, where in self.found.items() if where["names"] and ino not in named}
        for ino in lost:
            pids = self.found[ino]["pids"]
            self.add_found({ino: {"path": f"/proc/{pids[0]}/ns/net" if pids else self.found[ino]["path"],
                                  "names": [], "pids": pids}}, now)
        return self.add_found(named, now), lost

    def drop_names(self, names: set[str], now: float) -> set[int]:
        """/run/netns names deleted: the namespaces left without any (gone, unless a
        process holds them)."""
        lost = set()
        for ino, where in list(self.found.items()):
            if not any(n in names for n in where["names"]):
                continue
            left = [n for n in where["names"] if n not in names]
            pids = where["pids"]
            path = where["path"] if left else f"/proc/{pids[0]}/ns/net" if pids else where["path"]
            self.add_found({ino: {"path": path, "names": left, "pids": pids}}, now)
            if not left:
                lost.add(ino)
        return lost

    def read(self, inode: int, ips: tuple[str, ...], veths: Veths, nsid: int | None) -> None:
        """What was read inside a namespace (its addresses, its veths) and the node's id for it."""
        where = self.found.get(inode)
        if where is None:
            return
        if nsid is not None:
            self.nsids[inode] = nsid
        info = NetnsInfo(inode, tuple(where["names"]), tuple(where["pids"]), ips,
                         host_veth(self.node_veths, veths, self.nsids.get(inode)))
        if self.spaces.get(inode) != info:
            self.spaces[inode] = info
            self._dirty()

    def forget(self, inode: int) -> None:
        self.found.pop(inode, None)
        self.nsids.pop(inode, None)
        self.first_seen.pop(inode, None)
        if self.spaces.pop(inode, None) is not None:
            self._dirty()

    def complete(self, inode: int) -> bool:
        info = self.spaces.get(inode)
        return info is not None and bool(info.ips) and info.host_veth is not None

    def pending(self, now: float) -> set[int]:
        """Namespaces lately found, wired to the node by a veth but without an
        address yet: CNI is still at work inside, and nothing there notifies us.
        One without a veth waits for the node's link event."""
        return {ino for ino, info in self.spaces.items() if info.host_veth is not None and not info.ips
                and now - self.first_seen.get(ino, now) < PENDING_SECONDS}

    def wired(self) -> set[int]:
        """Namespaces a node veth leads into (by namespace id): the only ones a pod can be in.
        Others (another lab's, a VPN's) are never read."""
        owner = {n: i for i, n in self.nsids.items()}
        return {owner[v[2]] for v in self.node_veths.values() if v[2] is not None and v[2] in owner}

    def lacking_nsid(self, now: float | None = None) -> list[int]:
        """Namespaces the node has no id for (yet); with now, only those found lately."""
        return [i for i in self.found if i not in self.nsids
                and (now is None or now - self.first_seen.get(i, now) < PENDING_SECONDS)]

    def set_nsid(self, inode: int, nsid: int | None) -> None:
        if nsid is not None and inode in self.found:
            self.nsids[inode] = nsid
