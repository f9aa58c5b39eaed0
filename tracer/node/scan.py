"""scan: the node's namespaces looked up, all at once (scan) or what changed (refresh).

NodeScanner reads the node namespace's links and addresses and each pod
namespace's through rtnetlink sockets (rtnl), and keeps what it read in a
NodeTable (table). scan() reads everything: at start, then as a slow safety
net; refresh(changes) only what the node's notifications (events) say
changed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..errors import UserError
from .events import Changes
from .namespaces import HOST_NETNS, NETNS_RUN_DIR, FoundNetns, discover_namespaces, named_namespaces, nsfs_dev, path_of
from .table import PENDING_SECONDS, NodeSnapshot, NodeTable, Veths
from .rtnl import Rtnl, global_ips, link, link_index, read_netns

RESCAN_EVERY = 10        # full scans: namespaces already complete are read again this often
MAX_FRESH_NAMES = 4096   # /run/netns names created lately, remembered at most


class NodeScanner:
    """The node's namespaces: scan() reads everything (at start, then as a slow
    safety net), refresh(changes) only what the events say changed."""

    def __init__(self, node_netns: str = HOST_NETNS, run_dir: Path = NETNS_RUN_DIR) -> None:
        path = node_netns if "/" in node_netns else str(run_dir / node_netns)
        try:
            self.node_inode = os.stat(path).st_ino
        except FileNotFoundError:
            raise UserError(f"unknown node network namespace {node_netns!r}: {path} does not exist") from None
        self.node_path = path
        self.run_dir = run_dir
        self.table = NodeTable(self.node_inode)
        self._node: Rtnl | None = None     # with keep_open, kept between rounds until close()
        self.keep_open = False
        self._fresh: dict[str, float] = {}      # /run/netns names created lately, not namespaces yet
        self._scans = 0
        self.reads = 0          # namespaces read inside, for the benchmark and tests

    # -- I/O helpers --
    @contextlib.contextmanager
    def _node_rtnl(self) -> Iterator[Rtnl]:
        """The node's netlink socket: with keep_open (a PodSource following the node) opened
        once, else for this call only (doctor's one scan); closed on any error."""
        if self._node is None:
            self._node = Rtnl(self.node_path)
        try:
            yield self._node
        except BaseException:
            self.close()
            raise
        if not self.keep_open:
            self.close()

    def close(self) -> None:
        if self._node is not None:
            self._node.close()
            self._node = None

    def _read(self, node: Rtnl, inodes: Iterable[int]) -> None:
        for ino in inodes:
            where = self.table.found.get(ino)
            if where is None:
                continue
            path = path_of(where)
            got = read_netns(path)
            self.reads += 1
            if got is None:
                if not os.path.exists(path):
                    self.table.forget(ino)
                continue
            nsid = self.table.nsids.get(ino)
            if nsid is None:
                nsid = node.nsid(path)
            self.table.read(ino, got[0], got[1], nsid)

    def _alive(self, ino: int) -> bool:
        """Still there under a path we know: a name, or a process holding it."""
        where = self.table.found.get(ino)
        if where is None:
            return False
        paths = [str(self.run_dir / n) for n in where["names"]] + [f"/proc/{p}/ns/net" for p in where["pids"]]
        for p in paths:
            with contextlib.suppress(OSError):
                if os.stat(p).st_ino == ino:
                    return True
        return False

    # -- full --
    def scan(self, lost: bool = False) -> NodeSnapshot:
        """Everything: /run/netns and /proc walked, the node's links and
        addresses dumped, the node's id for each namespace asked; the namespaces
        a node veth leads into read when new or incomplete, and every
        RESCAN_EVERY scans all of them. lost: notifications were lost since
        the last look (see _node_veths)."""
        self._scans += 1
        now = time.monotonic()
        spaces = discover_namespaces(self.run_dir)
        t = self.table
        refresh_all = self._scans % RESCAN_EVERY == 0
        with self._node_rtnl() as node:
            t.set_node_ips(global_ips(node.addresses()))
            t.set_node_veths(self._node_veths(node, whole=refresh_all or lost))
            for ino in set(t.found) - set(spaces):
                t.forget(ino)
            t.add_found(spaces, now)
            if refresh_all:
                t.nsids.clear()
            self._ask_nsids(node, t.lacking_nsid())
            self._read(node, [i for i in t.wired() if refresh_all or not t.complete(i)])
            for ino in set(t.spaces) - t.wired():      # its veth went: no pod's any more
                t.read(ino, t.spaces[ino].ips, {}, None)
        return t.snapshot()

    # -- incremental --
    def refresh(self, changes: Changes) -> NodeSnapshot:
        """Only what changes says changed: each node veth that came or went (the
        namespace of its peer read, found by namespace id), the /run/netns names
        removed (their namespaces forgotten), the node's addresses; then
        namespaces CNI is still wiring. /proc is walked only for a veth whose
        namespace is nowhere else to be found."""
        t = self.table
        now = time.monotonic()
        to_read: set[int] = set()
        unknown: set[int] = set()
        with self._node_rtnl() as node:
            if changes.addrs:
                t.set_node_ips(global_ips(node.addresses()))
            for ifindex, veth in changes.links.items():     # before names: a pod's veth goes first
                owners, nsids = t.link(ifindex, veth)
                to_read |= owners
                unknown |= nsids
            for ino in list(to_read):
                if ino in t.spaces and not self._alive(ino):
                    t.forget(ino)
                    to_read.discard(ino)
            # A pod replaced within one round: the new veth's id may be the old namespace's
            # (ids and nsfs inodes are both reused), which was just forgotten.
            unknown |= {v[2] for v in changes.links.values()
                        if v is not None and v[2] is not None and t.owner_of_nsid(v[2]) is None}
            # New names wait until a veth leads into them (see _fresh_namespaces); namespaces
            # left without a name are forgotten unless a process still holds them (a sandbox
            # unnamed, as Docker leaves one: /proc is walked for those of a pod).
            for name in changes.created:
                if len(self._fresh) < MAX_FRESH_NAMES:
                    self._fresh[name] = now
            lost = t.drop_names(changes.deleted, now)
            if changes.names:       # the kernel's inotify queue overflowed: list them all
                lost |= t.named_listing(named_namespaces(self.run_dir), now)[1]
            held = {ino for ino in lost if ino in t.spaces and t.spaces[ino].host_veth is not None}
            if held and not all(self._alive(i) for i in held):
                t.add_found({i: w for i, w in discover_namespaces(self.run_dir).items() if i in held}, now)
            for ino in lost:
                if not self._alive(ino):
                    t.forget(ino)
            # Ids the kernel gave since we asked: ask the namespaces found lately.
            if unknown:
                self._ask_nsids(node, t.lacking_nsid(now))
                to_read |= {o for n in unknown if (o := t.owner_of_nsid(n)) is not None}
                unknown = {n for n in unknown if t.owner_of_nsid(n) is None}
            to_read |= t.pending(now)
            self._read(node, to_read)
            # A veth into a namespace not found yet, or found before the node had an id for it:
            # named after its inotify event (`ip netns add` makes the file, then bind-mounts the
            # namespace on it), else known already, else held by a process only: the names made
            # lately, then the known namespaces without an id (each asked: on a shared machine
            # dozens, whose every ask pyroute2 encodes and decodes), then all of /run/netns, and
            # only then /proc walked.
            steps: tuple[Callable[[], set[int]], ...] = (
                lambda: t.add_found(self._fresh_namespaces(self.run_dir), now),
                lambda: set(t.lacking_nsid()),
                lambda: t.add_found(named_namespaces(self.run_dir), now),
                lambda: t.add_found(discover_namespaces(self.run_dir), now))
            for step in steps:
                if not unknown:
                    break
                new = step()
                self._ask_nsids(node, new)
                self._read(node, new & t.wired())
                unknown = {n for n in unknown if t.owner_of_nsid(n) is None}
        return t.snapshot()

    def _node_veths(self, node: Rtnl, whole: bool) -> Veths:
        """The node's veths, dumped. Each veth's RTM_NEWLINK is decoded whole (pyroute2: some
        100 µs; 250 pods, 25 ms a scan) only if it is new to the table, or with whole: every
        RESCAN_EVERY scans, and when notifications were lost. A known veth's peer and namespace
        id change only with a notification of it, which the node's events deliver or report lost
        (ENOBUFS): between those the dump says which veths are there, not what they lead to."""
        known = self.table.node_veths
        out: Veths = {}
        for msg in node.links("veth"):
            index = link_index(msg)
            if not whole and index in known:
                out[index] = known[index]
            elif (got := link(msg)) is not None and got[1] is not None:
                out[got[0]] = got[1]
        return out

    def _fresh_namespaces(self, run_dir: Path) -> dict[int, FoundNetns]:
        """The namespaces under the /run/netns names created lately (one stat each)."""
        nsfs, found = nsfs_dev(), dict[int, FoundNetns]()
        now = time.monotonic()
        for name, made in list(self._fresh.items()):
            if now - made > PENDING_SECONDS:
                del self._fresh[name]
                continue
            entry = os.path.join(str(run_dir), name)
            try:
                st = os.stat(entry)
            except OSError:
                continue
            if nsfs is None or st.st_dev == nsfs:
                found.setdefault(st.st_ino, {"path": entry, "names": [], "pids": []})["names"].append(name)
                del self._fresh[name]
        return found

    def _ask_nsids(self, node: Rtnl, inodes: Iterable[int]) -> None:
        for ino in inodes:
            where = self.table.found.get(ino)
            if where is not None:
                self.table.set_nsid(ino, node.nsid(path_of(where)))

    def has_pending(self) -> bool:
        return bool(self.table.pending(time.monotonic()))
