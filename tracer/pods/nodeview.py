"""nodeview: what the node itself knows, read with rtnetlink.

Every network namespace (named ones under /run/netns, as CNI plugins make
them, and unnamed ones held by processes under /proc/*/ns/net), the
addresses inside each, and the host side of each pod's veth: the node-side
interface whose index the pod's veth names as its peer (IFLA_LINK), and
which names the pod's veth back. Whatever the CNI calls it (veth*, cali*,
lxc*, ...). Nothing here knows about Kubernetes.

Kept current by events, not by polling (issue 13): NodeEvents listens to the
node namespace's link, address and namespace-id notifications (rtnetlink
multicast groups) and to /run/netns (inotify); NodeScanner.refresh() then
looks up only what changed: a new namespace's addresses and veth peer, the
owner of a veth that went. NodeTable is that incremental state on plain
data. A full scan() (every namespace, /proc walked) stays as the start and
as a slow safety net.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from ..errors import UserError
from ..nsexec import socket_in

NETNS_RUN_DIR = Path("/run/netns")
# The node's namespace is the one netdrop runs in (on a node: the host's).
# Not /proc/1/ns/net: reading another process's namespace needs ptrace rights.
HOST_NETNS = "/proc/self/ns/net"
RESCAN_EVERY = 10        # full scans: namespaces already complete are read again this often
PENDING_SECONDS = 30.0   # a namespace without address or veth is looked at again this long (CNI at work)

# rtnetlink (include/uapi/linux/rtnetlink.h, netlink.h, net_namespace.h)
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWNSID, RTM_DELNSID, RTM_GETNSID = 88, 89, 90
NETNSA_NSID, NETNSA_FD = 1, 3
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
RTNLGRP_NSID = 28                   # past the 32 legacy group bits: joined with NETLINK_ADD_MEMBERSHIP
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 270, 1
SO_RCVBUFFORCE = 33
EVENT_RCVBUF = 4 << 20              # a burst of pod churn must not overflow (ENOBUFS: then a full scan)
NETLINK_TIMEOUT = 1.0   # seconds: the kernel answers at once; a lost answer must not stall a scan
NSID_TIMEOUT = NETLINK_TIMEOUT
# inotify (include/uapi/linux/inotify.h)
IN_CREATE, IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO, IN_Q_OVERFLOW = 0x100, 0x200, 0x40, 0x80, 0x4000
MAX_FRESH_NAMES = 4096   # /run/netns names created lately, remembered at most
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
_libc = ctypes.CDLL(None, use_errno=True)


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


# veth ifindex -> (name, peer ifindex (IFLA_LINK), peer's namespace id (IFLA_LINK_NETNSID))
Veth = tuple[str, int, int | None]
Veths = dict[int, Veth]


# Attribute numbers (include/uapi/linux/if_link.h, if_addr.h, rtnetlink.h)
IFLA_IFNAME, IFLA_LINK, IFLA_LINKINFO, IFLA_LINK_NETNSID = 3, 5, 18, 37
IFLA_INFO_KIND = 1
IFA_ADDRESS = 1
NLA_TYPE_MASK = 0x3FFF          # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
IFINFOMSG, IFADDRMSG = 16, 8    # sizeof(struct ifinfomsg), sizeof(struct ifaddrmsg)


@dataclass(frozen=True)
class NlMsg:
    kind: int
    seq: int
    body: bytes      # after the nlmsghdr


def parse_messages(data: bytes) -> list[NlMsg]:
    """The netlink messages of one datagram. A message whose length does not fit
    ends the list: the rest cannot be told apart. Any input, never raises.
    Our own parser rather than pyroute2's: it reads the few attributes used
    here and nothing else, ten times faster (pod churn is a stream of these)."""
    out = []
    off = 0
    while off + 16 <= len(data):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
        if length < 16 or off + length > len(data):
            break
        out.append(NlMsg(kind, seq, data[off + 16:off + length]))
        off += (length + 3) & ~3
    return out


def attrs(buf: bytes, off: int) -> dict[int, bytes]:
    """Route attributes (struct rtattr) from off: type -> payload; the first of each
    type is kept; a damaged one ends them. Any input, never raises."""
    out: dict[int, bytes] = {}
    while off + 4 <= len(buf):
        alen, atype = struct.unpack_from("=HH", buf, off)
        if alen < 4 or off + alen > len(buf):
            break
        out.setdefault(atype & NLA_TYPE_MASK, buf[off + 4:off + alen])
        off += (alen + 3) & ~3
    return out


def _u32(b: bytes | None) -> int | None:
    return struct.unpack_from("=I", b)[0] if b is not None and len(b) >= 4 else None


def _s32(b: bytes | None) -> int | None:
    return struct.unpack_from("=i", b)[0] if b is not None and len(b) >= 4 else None


def _cstr(b: bytes | None) -> str | None:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace") if b is not None else None


def parse_link(body: bytes) -> tuple[int, Veth | None] | None:
    """(ifindex, veth) of an RTM_NEWLINK/RTM_DELLINK body: veth is (name, peer
    ifindex (IFLA_LINK), peer's namespace id (IFLA_LINK_NETNSID)) when it is a veth
    with a peer, else None. None for a body too short to be one."""
    if len(body) < IFINFOMSG:
        return None
    ifindex = struct.unpack_from("=i", body, 4)[0]
    a = attrs(body, IFINFOMSG)
    info = a.get(IFLA_LINKINFO)
    kind = _cstr(attrs(info, 0).get(IFLA_INFO_KIND)) if info is not None else None
    peer = _u32(a.get(IFLA_LINK))
    if kind != "veth" or not peer:
        return ifindex, None
    nsid = _s32(a.get(IFLA_LINK_NETNSID))
    return ifindex, (_cstr(a.get(IFLA_IFNAME)) or "", peer, nsid if nsid is not None and nsid >= 0 else None)


def parse_addr(body: bytes) -> str | None:
    """IFA_ADDRESS of an RTM_NEWADDR body, as text, if others can reach it by it:
    None for loopback and link-local (every host veth has an fe80:: address: a
    node's dump holds hundreds, and each new pod notifies one), absent or malformed.
    Those are told from the raw bytes, before any text is made."""
    if len(body) < IFADDRMSG:
        return None
    family = body[0]
    raw = attrs(body, IFADDRMSG).get(IFA_ADDRESS)
    if raw is None:
        return None
    if family == socket.AF_INET and len(raw) == 4:
        if raw[0] == 127 or raw[:2] == b"\xa9\xfe":                  # 127/8, 169.254/16
            return None
        return socket.inet_ntop(socket.AF_INET, raw)
    if family == socket.AF_INET6 and len(raw) == 16:
        if raw == bytes(15) + b"\x01" or (raw[0] == 0xFE and raw[1] & 0xC0 == 0x80):     # ::1, fe80::/10
            return None
        return str(ipaddress.ip_address(raw))      # the same text as Python's everywhere else (RFC 5952)
    return None


def global_ips(addr_msgs: Iterable[NlMsg]) -> tuple[str, ...]:
    """Addresses others can reach it by: all but loopback and link-local."""
    return tuple(sorted({a for msg in addr_msgs if (a := parse_addr(msg.body))}))


def veths_of(link_msgs: Iterable[NlMsg]) -> Veths:
    out: Veths = {}
    for msg in link_msgs:
        got = parse_link(msg.body)
        if got is not None and got[1] is not None:
            out[got[0]] = got[1]
    return out


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



def route_socket(path: str) -> socket.socket:
    """An rtnetlink socket in the namespace at path (our own: opened here; another:
    through a short-lived thread that enters it, nsexec.socket_in)."""
    if _same_netns(path, HOST_NETNS):
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    sock = socket_in(path, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    if sock is None:
        raise OSError(f"cannot open a netlink socket in {path}")
    return sock

class Rtnl:
    """One rtnetlink socket made in a namespace (setns in a short-lived thread,
    nsexec.socket_in: no helper process, 0.6 ms a namespace against 11 ms for
    pyroute2's IPRoute(netns=...)), with a timeout on every answer. Messages
    are parsed by parse_messages and friends below."""

    def __init__(self, path: str):
        self.sock = route_socket(path)
        self.sock.settimeout(NETLINK_TIMEOUT)
        self._seq = 0

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self._seq += 1
        self.sock.send(struct.pack("=IHHII", 16 + len(body), kind, flags, self._seq, 0) + body)
        return self._seq

    def dump(self, kind: int) -> list[NlMsg]:
        """Every message of an RTM_GET* dump (RTM_GETLINK or RTM_GETADDR)."""
        # struct ifinfomsg is 16 bytes, struct ifaddrmsg 8; zero: every family, every interface
        seq = self._send(kind, NLM_F_REQUEST | NLM_F_DUMP, bytes(IFINFOMSG if kind == RTM_GETLINK else IFADDRMSG))
        out: list[NlMsg] = []
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                raise OSError("netlink socket closed")
            for msg in parse_messages(data):
                if msg.seq != seq:
                    continue
                if msg.kind == NLMSG_DONE:
                    return out
                if msg.kind == NLMSG_ERROR:
                    raise OSError(f"netlink dump {kind} refused")
                out.append(msg)

    def nsid(self, path: str) -> int | None:
        """The id this socket's namespace has for the namespace at path, or None.
        The kernel answers RTM_GETNSID without an ACK; through pyroute2's shared
        socket it was once seen to wait forever: a plain socket with a timeout cannot."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            attr = struct.pack("=HHI", 8, NETNSA_FD, fd)
            seq = self._send(RTM_GETNSID, NLM_F_REQUEST, struct.pack("=B3x", socket.AF_UNSPEC) + attr)
            while True:
                reply = self.sock.recv(4096)
                if len(reply) < 16:
                    return None
                length, kind, _flags, got, _pid = struct.unpack_from("=IHHII", reply)
                if got == seq:
                    break
        except OSError:     # timeout included
            return None
        finally:
            os.close(fd)
        return parse_nsid_reply(reply) if kind == RTM_NEWNSID else None   # NLMSG_ERROR: none assigned

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def parse_nsid_reply(reply: bytes) -> int | None:
    """NETNSA_NSID of an RTM_NEWNSID message; None if absent or not assigned (-1). Any input."""
    if len(reply) < 20:
        return None
    length = struct.unpack_from("=I", reply)[0]
    off = 20                    # nlmsghdr + rtgenmsg
    while off + 4 <= min(length, len(reply)):
        alen, atype = struct.unpack_from("=HH", reply, off)
        if alen < 4:
            break
        if atype == NETNSA_NSID and alen >= 8 and off + 8 <= len(reply):
            nsid: int = struct.unpack_from("=i", reply, off + 4)[0]
            return nsid if nsid >= 0 else None       # NETNSA_NSID_NOT_ASSIGNED is -1
        off += (alen + 3) & ~3
    return None


def read_netns(path: str) -> tuple[tuple[str, ...], Veths] | None:
    """A namespace's global addresses and veths; None if it cannot be entered
    (gone while we looked: a pod deleted)."""
    try:
        with Rtnl(path) as rt:
            return global_ips(rt.dump(RTM_GETADDR)), veths_of(rt.dump(RTM_GETLINK))
    except OSError:      # gone, not a namespace, no answer in time
        return None


class FoundNetns(TypedDict):
    path: str            # a path that opens it
    names: list[str]     # its /run/netns names
    pids: list[int]      # a few processes living in it


def _same_netns(a: str, b: str) -> bool:
    try:
        return os.stat(a).st_ino == os.stat(b).st_ino
    except OSError:
        return False


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


def named_namespaces(run_dir: Path = NETNS_RUN_DIR) -> dict[int, FoundNetns]:
    """The named namespaces: one stat per /run/netns entry, no /proc walk."""
    found: dict[int, FoundNetns] = {}
    nsfs = _nsfs_dev()
    base = str(run_dir)
    for name in sorted(_listdir(run_dir)):
        entry = os.path.join(base, name)
        try:
            st = os.stat(entry)
        except OSError:
            continue
        if nsfs is not None and st.st_dev != nsfs:
            continue
        found.setdefault(st.st_ino, {"path": entry, "names": [], "pids": []})["names"].append(name)
    return found


def discover_namespaces(run_dir: Path = NETNS_RUN_DIR, proc: Path = Path("/proc")) -> dict[int, FoundNetns]:
    """inode -> where it is found, named and held by processes. Entries that
    vanish while we look, or that are not namespaces, are left out; nothing
    here raises."""
    found = named_namespaces(run_dir)
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


def _path_of(found: FoundNetns) -> str:
    return str(NETNS_RUN_DIR / found["names"][0]) if found["names"] else found["path"]


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
            path = _path_of(where)
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
    def scan(self) -> NodeSnapshot:
        """Everything: /run/netns and /proc walked, the node's links and
        addresses dumped, the node's id for each namespace asked; the namespaces
        a node veth leads into read when new or incomplete, and every
        RESCAN_EVERY scans all of them."""
        self._scans += 1
        now = time.monotonic()
        spaces = discover_namespaces(self.run_dir)
        t = self.table
        refresh_all = self._scans % RESCAN_EVERY == 0
        with self._node_rtnl() as node:
            t.set_node_ips(global_ips(node.dump(RTM_GETADDR)))
            t.set_node_veths(veths_of(node.dump(RTM_GETLINK)))
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
                t.set_node_ips(global_ips(node.dump(RTM_GETADDR)))
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
            # Ids the kernel gave since we asked: ask the namespaces found lately, then all.
            for lately in (now, None):
                if not unknown:
                    break
                self._ask_nsids(node, t.lacking_nsid(lately))
                to_read |= {o for n in unknown if (o := t.owner_of_nsid(n)) is not None}
                unknown = {n for n in unknown if t.owner_of_nsid(n) is None}
            to_read |= t.pending(now)
            self._read(node, to_read)
            # A veth into a namespace not found yet: named after its inotify event (`ip netns add`
            # makes the file, then bind-mounts the namespace on it), else held by a process only:
            # the names made lately, then all of /run/netns, and only then /proc walked.
            for lister in (self._fresh_namespaces, named_namespaces, discover_namespaces):
                if not unknown:
                    break
                new = t.add_found(lister(self.run_dir), now)
                self._ask_nsids(node, new)
                self._read(node, new & t.wired())
                unknown = {n for n in unknown if t.owner_of_nsid(n) is None}
        return t.snapshot()

    def _fresh_namespaces(self, run_dir: Path) -> dict[int, FoundNetns]:
        """The namespaces under the /run/netns names created lately (one stat each)."""
        nsfs, found = _nsfs_dev(), dict[int, FoundNetns]()
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
                self.table.set_nsid(ino, node.nsid(_path_of(where)))

    def has_pending(self) -> bool:
        return bool(self.table.pending(time.monotonic()))


# ------------------------------------------------------------------ events

@dataclass
class Changes:
    """What the node's notifications said since the last look."""

    links: dict[int, Veth | None] = field(default_factory=dict)   # node ifindex -> veth now (None: gone/not one)
    addrs: bool = False      # the node's own addresses
    names: bool = False      # /run/netns changes were lost (inotify queue overflow): list it again
    created: set[str] = field(default_factory=set)     # /run/netns names made
    deleted: set[str] = field(default_factory=set)     # and removed
    nsids: bool = False      # namespace ids assigned or freed
    overflow: bool = False   # notifications lost: a full scan is due

    def __bool__(self) -> bool:
        return bool(self.links or self.addrs or self.names or self.created or self.deleted or self.nsids
                    or self.overflow)


def parse_events(data: bytes, changes: Changes) -> None:
    """Fold one netlink datagram of notifications into changes. Any input: a
    link message that cannot be read counts as lost notifications (overflow)."""
    for msg in parse_messages(data):
        if msg.kind in (RTM_NEWLINK, RTM_DELLINK):
            # Only the link's own messages (ifi_family AF_UNSPEC, rtnl_fill_ifinfo with its
            # IFLA_LINKINFO): the bridge (AF_BRIDGE, port state) and IPv6 (AF_INET6, inet6_ifinfo_notify)
            # send RTM_NEWLINK of their own without it, and are not news of the veth.
            if msg.body[:1] not in (b"", b"\0"):
                continue
            got = parse_link(msg.body)
            if got is None:
                changes.overflow = True
            else:
                changes.links[got[0]] = got[1] if msg.kind == RTM_NEWLINK else None
        elif msg.kind in (RTM_NEWADDR, RTM_DELADDR):
            changes.addrs = changes.addrs or parse_addr(msg.body) is not None   # a veth's fe80:: is no news
        elif msg.kind in (RTM_NEWNSID, RTM_DELNSID):
            changes.nsids = True


def parse_inotify(data: bytes, changes: Changes) -> None:
    """Fold struct inotify_event records (include/uapi/linux/inotify.h) into changes.
    Any input: a record that does not fit ends them, and /run/netns is listed again."""
    off = 0
    while off + 16 <= len(data):
        _wd, mask, _cookie, length = struct.unpack_from("=iIII", data, off)
        if off + 16 + length > len(data):
            break
        name = data[off + 16:off + 16 + length].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        off += 16 + length
        if mask & IN_Q_OVERFLOW:
            changes.names = True
        elif name and mask & (IN_CREATE | IN_MOVED_TO):
            changes.created.add(name)
            changes.deleted.discard(name)
        elif name and mask & (IN_DELETE | IN_MOVED_FROM):
            changes.deleted.add(name)
    if off != len(data):
        changes.names = True


class NodeEvents:
    """The node namespace's link, address and namespace-id notifications, and
    /run/netns changes, on file descriptors one select() waits on. Closed by
    close(); a wake pipe lets another thread end a wait at once."""

    def __init__(self, node_path: str, run_dir: Path = NETNS_RUN_DIR) -> None:
        self.sock = sock = route_socket(node_path)
        self.run_dir = run_dir
        self.inotify = -1
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            with contextlib.suppress(OSError):     # not root: the default buffer
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, EVENT_RCVBUF)
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            with contextlib.suppress(OSError):     # kernels without it: veth events still say enough
                sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_NSID)
            sock.setblocking(False)
            self.watch_names()
        except BaseException:
            self.close()
            raise

    def watch_names(self) -> bool:
        """inotify on /run/netns, once it exists (`ip netns add` makes it); True if watched."""
        if self.inotify >= 0:
            return True
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return False
        mask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
        if _libc.inotify_add_watch(fd, os.fsencode(self.run_dir), mask) < 0:
            os.close(fd)
            return False
        self.inotify = fd
        return True

    def wake(self) -> None:
        with contextlib.suppress(OSError):     # full (already woken) or closed
            os.write(self._wake_w, b"x")

    def wait(self, timeout: float) -> bool:
        """Until a notification, a wake() or timeout; True if something is there."""
        fds = [self.sock.fileno(), self._wake_r] + ([self.inotify] if self.inotify >= 0 else [])
        try:
            ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except (OSError, ValueError):       # closed meanwhile
            return False
        return bool(ready)

    def drain(self) -> Changes:
        """Everything pending, without blocking."""
        changes = Changes()
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:      # the kernel dropped notifications for us
                    changes.overflow = True
                    continue
                break
            if not data:
                break
            parse_events(data, changes)
        if self.inotify >= 0:
            while True:
                try:
                    data = os.read(self.inotify, 1 << 16)
                except OSError:     # EAGAIN: drained
                    break
                if not data:
                    break
                parse_inotify(data, changes)
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 256):
                pass
        return changes

    def close(self) -> None:
        self.sock.close()
        for fd in (self.inotify, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.inotify = self._wake_r = self._wake_w = -1
