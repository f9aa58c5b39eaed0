"""nodeview: what the node itself knows, read with pyroute2 (rtnetlink).

Every network namespace (named ones under /run/netns, as CNI plugins make
them, and unnamed ones held by processes under /proc/*/ns/net), the
addresses inside each, and the host side of each pod's veth: the node-side
interface whose index the pod's veth names as its peer (IFLA_LINK), and
which names the pod's veth back. Whatever the CNI calls it (veth*, cali*,
lxc*, ...). Nothing here knows about Kubernetes.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from ..errors import UserError
from ..nsexec import socket_in

if TYPE_CHECKING:
    from pyroute2 import IPRoute   # no type information: to mypy it is Any

NETNS_RUN_DIR = Path("/run/netns")
# The node's namespace is the one netdrop runs in (on a node: the host's).
# Not /proc/1/ns/net: reading another process's namespace needs ptrace rights.
HOST_NETNS = "/proc/self/ns/net"
RESCAN_EVERY = 10   # scans: namespaces already known are read again this often


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


def _global_ips(ipr: IPRoute) -> tuple[str, ...]:
    """Addresses others can reach it by: all but loopback and link-local."""
    ips: set[str] = set()
    for msg in ipr.get_addr():
        addr = msg.get_attr("IFA_ADDRESS")
        if addr:
            ip = ipaddress.ip_address(addr)
            if not (ip.is_loopback or ip.is_link_local):
                ips.add(str(ip))
    return tuple(sorted(ips))


# veth ifindex -> (name, peer ifindex, peer's namespace id)
Veths = dict[int, tuple[str, int, int | None]]


def _veths(ipr: IPRoute) -> Veths:
    """veth ifindex -> (name, peer ifindex (IFLA_LINK), peer's namespace id (IFLA_LINK_NETNSID))."""
    out: Veths = {}
    for link in ipr.get_links():
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info else None
        peer = link.get_attr("IFLA_LINK")
        if kind == "veth" and peer:
            out[link["index"]] = (link.get_attr("IFLA_IFNAME"), peer, link.get_attr("IFLA_LINK_NETNSID"))
    return out


# rtnetlink's namespace ids (include/uapi/linux/rtnetlink.h, net_namespace.h)
RTM_NEWNSID, RTM_GETNSID = 88, 90
NLMSG_ERROR = 2
NETNSA_NSID, NETNSA_FD = 1, 3
NSID_TIMEOUT = 1.0      # seconds: the kernel answers at once; a lost answer must not stall a scan


class NsidQuery:
    """RTM_GETNSID on a netlink socket of its own in the node's namespace, with a
    timeout. Asked through pyroute2's shared socket, this request (which the
    kernel answers without an ACK) was once seen to wait forever and hold the
    start of netdrop with it; a plain socket with a timeout cannot."""

    def __init__(self, node_path: str):
        sock = socket_in(node_path, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        if sock is None:
            raise OSError(f"cannot open a netlink socket in {node_path}")
        self.sock = sock
        self.sock.settimeout(NSID_TIMEOUT)
        self._seq = 0

    def nsid(self, path: str) -> int | None:
        """The id the node's namespace has for the namespace at path, or None."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            self._seq += 1
            attr = struct.pack("=HHI", 8, NETNSA_FD, fd)
            body = struct.pack("=B3x", socket.AF_UNSPEC) + attr          # struct rtgenmsg, padded
            self.sock.send(struct.pack("=IHHII", 16 + len(body), RTM_GETNSID, 1, self._seq, 0) + body)
            while True:
                reply = self.sock.recv(4096)
                if len(reply) < 16:
                    return None
                length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", reply)
                if seq == self._seq:
                    break
        except OSError:     # timeout included
            return None
        finally:
            os.close(fd)
        if kind != RTM_NEWNSID:     # NLMSG_ERROR: no such namespace, or none assigned
            return None
        off = 20                    # nlmsghdr + rtgenmsg
        while off + 4 <= min(length, len(reply)):
            alen, atype = struct.unpack_from("=HH", reply, off)
            if alen < 4:
                break
            if atype == NETNSA_NSID and alen >= 8:
                nsid = struct.unpack_from("=i", reply, off + 4)[0]
                return nsid if nsid >= 0 else None       # NETNSA_NSID_NOT_ASSIGNED is -1
            off += (alen + 3) & ~3
        return None

    def __enter__(self) -> NsidQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


class FoundNetns(TypedDict):
    path: str            # a path that opens it
    names: list[str]     # its /run/netns names
    pids: list[int]      # a few processes living in it


def _nsfs_dev() -> int | None:
    """The device of nsfs: a /run/netns entry is a namespace only if it is on it
    (a bind mount of one); a plain file left there is not."""
    try:
        return os.stat(HOST_NETNS).st_dev
    except OSError:
        return None


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:         # missing, not a directory, not ours to read
        return []


def discover_namespaces(run_dir: Path = NETNS_RUN_DIR, proc: Path = Path("/proc")) -> dict[int, FoundNetns]:
    """inode -> where it is found. Entries that vanish while we look, or that
    are not namespaces, are left out; nothing here raises."""
    found: dict[int, FoundNetns] = {}
    nsfs = _nsfs_dev()
    for name in sorted(_listdir(run_dir)):
        entry = run_dir / name
        try:
            st = os.stat(entry)
        except OSError:
            continue
        if nsfs is not None and st.st_dev != nsfs:
            continue
        found.setdefault(st.st_ino, {"path": str(entry), "names": [], "pids": []})["names"].append(name)
    for name in _listdir(proc):
        if not (name.isascii() and name.isdigit()):
            continue
        path = proc / name / "ns" / "net"
        try:
            ino = os.stat(path).st_ino
        except OSError:
            continue
        info = found.setdefault(ino, {"path": str(path), "names": [], "pids": []})
        if len(info["pids"]) < 3:
            info["pids"].append(int(name))
    return found


class NodeScanner:
    """Scans the node; results for a namespace are kept until it disappears
    (a pod's netns is set up once), re-read every RESCAN_EVERY scans, and
    read again while they lack an address or a veth (CNI still at work)."""

    def __init__(self, node_netns: str = HOST_NETNS) -> None:
        path = node_netns if "/" in node_netns else str(NETNS_RUN_DIR / node_netns)
        try:
            self.node_inode = os.stat(path).st_ino
        except FileNotFoundError:
            raise UserError(f"unknown node network namespace {node_netns!r}: {path} does not exist") from None
        self.node_path = path
        self._cache: dict[int, NetnsInfo] = {}
        self._scans = 0

    def _ipr(self, path: str) -> IPRoute:
        from pyroute2 import IPRoute

        # Our own namespace needs no helper process (IPRoute(netns=...) forks one);
        # flags=0: never create a namespace that has gone away meanwhile.
        if os.stat(path).st_ino == os.stat(HOST_NETNS).st_ino:
            return IPRoute()
        return IPRoute(netns=path, flags=0)

    def scan(self) -> NodeSnapshot:
        self._scans += 1
        spaces = discover_namespaces()
        refresh_all = self._scans % RESCAN_EVERY == 0
        result: dict[int, NetnsInfo] = {}
        with self._ipr(self.node_path) as node, NsidQuery(self.node_path) as nsids:
            node_veths = _veths(node)
            node_ips = _global_ips(node)
            for inode, found in spaces.items():
                if inode == self.node_inode:
                    continue
                cached = self._cache.get(inode)
                if cached and not refresh_all and cached.ips and cached.host_veth:
                    result[inode] = NetnsInfo(inode, tuple(found["names"]), tuple(found["pids"]),
                                              cached.ips, cached.host_veth)
                    continue
                try:
                    with self._ipr(found["path"]) as ipr:
                        ips = _global_ips(ipr)
                        veths = _veths(ipr)
                # Gone while we looked (pod deleted): skip it this time. pyroute2 raises
                # NetlinkError (a bare Exception subclass), OSError, or what its netns helper hit.
                except Exception:  # noqa: BLE001
                    continue
                host = self._host_veth(nsids, node_veths, veths, found["path"])
                result[inode] = NetnsInfo(inode, tuple(found["names"]), tuple(found["pids"]), ips, host)
        self._cache = result
        return NodeSnapshot(self.node_inode, node_ips, result)

    @staticmethod
    def _host_veth(nsids: NsidQuery, node_veths: Veths, veths: Veths, path: str) -> HostVeth | None:
        """The node-side end of this namespace's veth. Interface indexes repeat
        across namespaces (every pod has an eth0 numbered 2 or 3), so the pair
        must name each other and the node's end must point into this namespace."""
        nsid = None
        for ifindex, (_name, peer, _peer_ns) in veths.items():
            node_side = node_veths.get(peer)
            if not node_side or node_side[1] != ifindex:
                continue
            if nsid is None:
                nsid = nsids.nsid(path)
            if nsid is not None and node_side[2] == nsid:
                return HostVeth(peer, node_side[0])
        return None
