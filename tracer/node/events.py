"""events: the node namespace's notifications, as a Changes of what to look at again.

NodeEvents listens to the node namespace's link, address and namespace-id
notifications (rtnetlink multicast groups, decoded by pyroute2: rtnl) and to
/run/netns (inotify); parse_events and parse_inotify fold what they say into
a Changes, which NodeScanner.refresh looks up. Nothing is read from the
notifications but which node link changed (and into what), whether the node's
own addresses did, and whether namespace ids were given or freed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import rtnl
from .namespaces import NETNS_RUN_DIR
from .table import Veth
from .rtnl import RTM_DELADDR, RTM_DELLINK, RTM_DELNSID, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWNSID, Message

# rtnetlink groups (include/uapi/linux/rtnetlink.h)
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
RTNLGRP_NSID = 28                   # past the 32 legacy group bits: joined with NETLINK_ADD_MEMBERSHIP
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 270, 1
SO_RCVBUFFORCE = 33
EVENT_RCVBUF = 4 << 20              # a burst of pod churn must not overflow (ENOBUFS: then a full scan)
MAX_DRAIN_BYTES = 2 * EVENT_RCVBUF  # notifications read in one drain at most; past it a full scan is due
MAX_OTHERS = 4096                   # node links remembered as no veth
# inotify (include/uapi/linux/inotify.h)
IN_CREATE, IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO, IN_Q_OVERFLOW = 0x100, 0x200, 0x40, 0x80, 0x4000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
_libc = ctypes.CDLL(None, use_errno=True)


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


def parse_events(datagrams: Iterable[bytes], changes: Changes, others: set[int] | None = None) -> None:
    """Fold netlink notifications, datagram by datagram, into changes. Each link
    says only what it is now: of its messages (a new pod's veth is made, moved,
    renamed, enslaved and brought up: six or more) only the last is decoded whole,
    and none of a link known to be no veth (others, kept from call to call: a
    link's kind is its own for life, rtnl_link_ops; the bridge's change with each
    pod). Any input: a link message that cannot be read counts as lost
    notifications (overflow)."""
    others = set() if others is None else others
    last: dict[int, Message] = {}        # node ifindex -> its last own message
    for data in datagrams:
        for msg in rtnl.decode(data):
            kind = rtnl.kind(msg)
            if kind in (RTM_NEWLINK, RTM_DELLINK):
                # Only the link's own messages (ifi_family AF_UNSPEC, rtnl_fill_ifinfo with its
                # IFLA_LINKINFO): the bridge (AF_BRIDGE, port state) and IPv6 (AF_INET6,
                # inet6_ifinfo_notify) send RTM_NEWLINK of their own without it, and are not news of the veth.
                family, index = rtnl.link_family(msg), rtnl.link_index(msg)
                if family is None or index is None:
                    changes.overflow = True
                elif family == socket.AF_UNSPEC:
                    last[index] = msg
                    if kind == RTM_DELLINK:      # the index may come back as another link
                        others.discard(index)
            elif kind in (RTM_NEWADDR, RTM_DELADDR):
                changes.addrs = changes.addrs or rtnl.address(msg) is not None   # a veth's fe80:: is no news
            elif kind in (RTM_NEWNSID, RTM_DELNSID):
                changes.nsids = True
    for index, msg in last.items():
        if rtnl.kind(msg) == RTM_DELLINK:
            changes.links[index] = None
        elif index in others:
            continue
        elif (got := rtnl.link_kind(msg)) is None:
            changes.overflow = True
        else:
            changes.links[index] = got[1]
            if got[2] != "veth" and len(others) < MAX_OTHERS:
                others.add(index)


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
        self.sock = sock = rtnl.route_socket(node_path)
        self.run_dir = run_dir
        self.inotify = -1
        self._others: set[int] = set()      # node links known to be no veth (parse_events)
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
        datagrams: list[bytes] = []
        size = 0
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
            size += len(data)
            if size <= MAX_DRAIN_BYTES:
                datagrams.append(data)
            else:               # a storm: read on to empty the socket, a full scan says the rest
                changes.overflow = True
        if changes.overflow:        # a link's deletion may be among what was lost: its index may be a veth's now
            self._others.clear()
        parse_events(datagrams, changes, self._others)
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
