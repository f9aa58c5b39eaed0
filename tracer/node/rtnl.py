"""rtnl: rtnetlink inside each network namespace, decoded by pyroute2.

A namespace is read through a socket made inside it by a short-lived thread
(nsexec.socket_in: no helper process; pyroute2's IPRoute(netns=...) forks one,
11 ms a namespace). Requests are encoded and answers decoded by pyroute2's
message classes (ifinfmsg, ifaddrmsg, nsidmsg) through its Marshal; what is
taken from them is checked here, since their text comes from pod workloads
(interface names) and a damaged attribute decodes to raw bytes.

pyroute2 makes an object of every attribute of a message it decodes (a veth's
RTM_NEWLINK has some forty: about 100 µs, where reading the four used by hand
took 10), so it decodes only what is needed, and pod churn is a stream of
these messages:
- link and address messages are decoded as far as their struct (ifinfhdr,
  ifaddrhdr), their attributes only when asked for (link(), address()); of
  those pyroute2 decodes only the ones read (IFLA_IFNAME, IFLA_LINK,
  IFLA_LINK_NETNSID, IFLA_INFO_KIND, IFA_ADDRESS, NETNSA_NSID);
- link dumps ask the kernel for veths only and without IPv6's statistics
  (IFLA_LINKINFO's kind and RTEXT_FILTER_SKIP_STATS: rtnl_dump_ifinfo,
  inet6_fill_link_af), so fewer and smaller messages come at all;
- an IPv6 address of link or host scope is left out by its struct alone, and
  what an address message said is remembered by its bytes (_Said);
- requests without per-call data are encoded once (request()).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, nlmsg, nlmsg_base, nlmsgerr
from pyroute2.netlink.nlsocket import Marshal
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELNSID,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETNSID,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNSID,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.nsidmsg import nsidmsg

from ..jsonvalues import u32
from .nsexec import OWN_NETNS, socket_in
from .table import Veth, Veths

__all__ = ["NLM_F_REQUEST", "RTM_DELADDR", "RTM_DELLINK", "RTM_DELNSID", "RTM_GETADDR", "RTM_GETLINK",
           "RTM_NEWADDR", "RTM_NEWLINK", "RTM_NEWNSID", "Veth", "Veths"]

NETLINK_TIMEOUT = 1.0   # seconds: the kernel answers at once; a lost answer must not stall a scan
MAX_DUMP_MESSAGES = 1 << 15     # a node's veths are a few hundred; a pod's own, whatever it makes
RECV_BYTES = 1 << 16    # a dump's datagrams are at most this (NLMSG_GOODSIZE and the socket's buffer)
MEMO_BYTES = 1 << 20     # addresses remembered by their bytes: a node's and 250 pods' are about 0.1 MiB
MEMO_BODY = 256          # an RTM_NEWADDR is about 60 bytes
RT_SCOPE_LINK, RT_SCOPE_HOST = 253, 254     # include/uapi/linux/rtnetlink.h
NLMSG_HDRLEN = 16       # sizeof(struct nlmsghdr)
RTEXT_FILTER_SKIP_STATS = 1 << 3     # include/uapi/linux/rtnetlink.h (Linux 4.20); older kernels ignore it

Message = Any           # a pyroute2 nlmsg, decoded (attributes on first reading)


class ifinfhdr(nlmsg):  # type: ignore[misc]     # pyroute2 has no type hints
    """A link message as far as its struct ifinfomsg (ifinfmsg's fields): its
    attributes, forty and more, are decoded (link()) only for the messages that
    matter: not the bridge's and IPv6's own, of a burst of notifications about
    one link only the last, none of a link known to be no veth (events), a
    known veth's in a scan only now and then (scan)."""

    fields = ifinfmsg.fields
    full = ifinfmsg


class ifaddrhdr(nlmsg):  # type: ignore[misc]
    """An address message as far as its struct ifaddrmsg: IPv6 ones of link or host
    scope go no further (address()); the others' attributes are decoded once for
    the same bytes (_Said)."""

    fields = ifaddrmsg.fields
    full = ifaddrmsg


def _whole(msg: Message) -> Message | None:
    """A header-only message (ifinfhdr, ifaddrhdr) decoded whole by its pyroute2 class; None if it cannot be."""
    if not decoded(msg):
        return None
    full = msg.full(msg.data, offset=msg.offset)
    try:
        full.decode()
    except Exception:  # noqa: BLE001 - any input
        return None
    return full


class _Unframed(Exception):
    """A message whose length does not fit the datagram: the rest cannot be told apart."""


def _least(cls: Any) -> int:
    """The size of a message class's header and fields (its struct): a shorter message is damaged."""
    return NLMSG_HDRLEN + sum(struct.calcsize(fmt) for _name, fmt in cls.fields)


class _Marshal(Marshal):  # type: ignore[misc]
    """pyroute2's Marshal for what is read here, and that survives any input: a
    message shorter than its struct, or that pyroute2 cannot decode, is returned
    with the error in its header; one whose length does not fit ends the datagram."""

    msg_map = {RTM_NEWLINK: ifinfhdr, RTM_DELLINK: ifinfhdr, RTM_NEWADDR: ifaddrhdr, RTM_DELADDR: ifaddrhdr,
               RTM_NEWNSID: nsidmsg, RTM_DELNSID: nsidmsg, NLMSG_ERROR: nlmsgerr}
    least = {key: _least(cls) for key, cls in msg_map.items()}

    def parse_one_message(self, key: int, flags: int, sequence_number: int, data: bytes, offset: int,
                          length: int) -> Message:
        if length < NLMSG_HDRLEN or offset + length > len(data):
            raise _Unframed
        msg = self.msg_map.get(key, nlmsg)(data, offset=offset)
        try:
            msg.decode()
            if length < self.least.get(key, NLMSG_HDRLEN):
                raise ValueError("shorter than its struct")
        except Exception as exc:  # noqa: BLE001 - pyroute2 raises struct.error, IndexError, its own, ...
            msg["header"]["error"] = exc
        return msg


_MARSHAL = _Marshal()
# pyroute2 logs a traceback at WARNING for each attribute it cannot decode (nla_slot.try_to_decode):
# here that is input from a pod's namespace, handled (the attribute is absent), and no news for
# stderr should anything configure logging. Its cache of attribute headers (cache_hdr, without
# a bound) grows only with the headers of attributes decoded: the few read here, of bounded size.
logging.getLogger("pyroute2.netlink").setLevel(logging.ERROR)


def decode(data: bytes) -> list[Message]:
    """The messages of one datagram. Marshal.parse walks the headers; one whose
    length does not fit ends the list (the rest cannot be told apart). Any
    input, never raises."""
    out = []
    try:
        for msg in _MARSHAL.parse(data):
            out.append(msg)
    except Exception:  # noqa: BLE001, S110 - any input: what was decoded before it stays
        pass
    return out


def kind(msg: Message) -> int:
    return int(msg["header"].get("type", 0))


def seq(msg: Message) -> int:
    return int(msg["header"].get("sequence_number", 0))


def decoded(msg: Message) -> bool:
    """False for a message whose body pyroute2 could not decode (too short, damaged)."""
    return msg["header"].get("error") is None


def _field(msg: Message, name: str) -> object:
    """A field of the message's struct as pyroute2 decoded it (its own __getitem__ makes
    0 of one missing)."""
    value: object = dict.get(msg, name)
    return value


def _attrs(msg: Message, names: frozenset[str]) -> dict[str, object]:
    """The first attribute of each of names: its value, raw bytes if pyroute2 could
    not decode it (nla_slot.value). One pass over the message's attributes; only
    those asked for are decoded."""
    out: dict[str, object] = {}
    try:
        for slot in dict.get(msg, "attrs", ()):
            if slot.name in names and slot.name not in out:
                out[slot.name] = slot.value
    except Exception:  # noqa: BLE001, S110 - any input: what was read before it stays
        pass
    return out


def text(value: object) -> str | None:
    """An attribute's string, up to its first NUL; bytes that are not UTF-8 replaced."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    return value.split("\0", 1)[0] if isinstance(value, str) else None


def _s32(value: object) -> int | None:
    """A signed 32-bit attribute, which pyroute2 may have read as unsigned (nsidmsg's NETNSA_NSID)."""
    if not isinstance(value, int) or not -(1 << 31) <= value < 1 << 32:
        return None
    return value - (1 << 32) if value >= 1 << 31 else value


_LINK_ATTRS = frozenset({"IFLA_IFNAME", "IFLA_LINK", "IFLA_LINKINFO", "IFLA_LINK_NETNSID"})
_INFO_KIND = frozenset({"IFLA_INFO_KIND"})
_ADDR_ATTRS = frozenset({"IFA_ADDRESS"})
_NSID_ATTRS = frozenset({"NETNSA_NSID"})


def link_index(msg: Message) -> int | None:
    """ifi_index of a link message; None if it cannot be decoded."""
    index = _field(msg, "index") if isinstance(msg, ifinfhdr) and decoded(msg) else None
    return index if isinstance(index, int) else None


def link_family(msg: Message) -> int | None:
    """ifi_family of a link message: AF_UNSPEC for the link's own (rtnl_fill_ifinfo)."""
    family = _field(msg, "family") if isinstance(msg, ifinfhdr) and decoded(msg) else None
    return family if isinstance(family, int) else None


def link_attrs(msg: Message, names: frozenset[str]) -> dict[str, object] | None:
    """Attributes of a link message (ifinfmsg's names), decoded now; None if it cannot be."""
    full = _whole(msg) if link_index(msg) is not None else None
    return _attrs(full, names) if full is not None else None


class _Said:
    """What messages said, by the bytes of their bodies: the node's addresses (one
    fe80:: a host veth) come again unchanged in every full scan, a namespace's in
    each read of it, and pyroute2 decodes each attribute into objects of its own.
    Not links: their statistics (IFLA_STATS64, sent whatever RTEXT_FILTER_SKIP_STATS
    says) change with every packet. Bounded by the bytes kept (MEMO_BYTES; a body
    over MEMO_BODY is never kept): emptied when full."""

    def __init__(self, decode: Callable[[Message], Any]) -> None:
        self.decode = decode
        self.said: dict[bytes, Any] = {}
        self.size = 0

    def __call__(self, msg: Message) -> Any:
        length = msg["header"].get("length")
        if not isinstance(length, int) or not NLMSG_HDRLEN <= length <= NLMSG_HDRLEN + MEMO_BODY:
            return self.decode(msg)
        body = bytes(msg.data[msg.offset + NLMSG_HDRLEN:msg.offset + length])
        got = self.said.get(body, self)
        if got is self:
            got = self.decode(msg)
            if self.size + len(body) > MEMO_BYTES:
                self.said.clear()
                self.size = 0
            self.said[body] = got
            self.size += len(body)
        return got


def link(msg: Message) -> tuple[int, Veth | None] | None:
    """(ifindex, veth) of an RTM_NEWLINK/RTM_DELLINK: veth is (name, peer ifindex
    (IFLA_LINK), peer's namespace id (IFLA_LINK_NETNSID)) when it is a veth with
    a peer, else None. None for a message that cannot be decoded."""
    got = link_kind(msg)
    return (got[0], got[1]) if got is not None else None


def link_kind(msg: Message) -> tuple[int, Veth | None, str | None] | None:
    """link(msg) and the link's kind (IFLA_INFO_KIND: "veth", "bridge", ...; None if it has none)."""
    ifindex = link_index(msg)
    a = link_attrs(msg, _LINK_ATTRS)
    if ifindex is None or a is None:
        return None
    info = a.get("IFLA_LINKINFO")
    kind_ = text(_attrs(info, _INFO_KIND).get("IFLA_INFO_KIND")) if isinstance(info, nlmsg_base) else None
    peer = u32(a.get("IFLA_LINK"))
    if kind_ != "veth" or not peer:
        return ifindex, None, kind_
    nsid = _s32(a.get("IFLA_LINK_NETNSID"))
    return ifindex, (text(a.get("IFLA_IFNAME")) or "", peer, nsid if nsid is not None and nsid >= 0 else None), kind_


def address(msg: Message) -> str | None:
    """IFA_ADDRESS of an RTM_NEWADDR/RTM_DELADDR, as text, if others can reach it by
    it: None for loopback and link-local (every host veth has an fe80:: address: a
    node's dump holds hundreds, and each new pod notifies one), absent or malformed."""
    if not isinstance(msg, ifaddrhdr) or not decoded(msg):
        return None
    # IPv6's scope is the kernel's, from the address (ipv6_addr_scope, net/ipv6/addrconf.c):
    # link or host is fe80::/10 or ::1, told without decoding the attributes. IPv4's scope is
    # whatever the address was added with: those are told by the address itself.
    if _field(msg, "family") == socket.AF_INET6 and _field(msg, "scope") in (RT_SCOPE_LINK, RT_SCOPE_HOST):
        return None
    got: str | None = _address_said(msg)
    return got


def _address(msg: Message) -> str | None:
    full = _whole(msg)
    if full is None:
        return None
    raw = _attrs(full, _ADDR_ATTRS).get("IFA_ADDRESS")
    if not isinstance(raw, str):
        return None
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        return None
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    if family != _field(full, "family") or ip.is_loopback or ip.is_link_local:
        return None
    return str(ip)       # the same text as Python's everywhere else (RFC 5952)


_address_said = _Said(_address)


def forget() -> None:
    """Forget what messages said (for benchmarks: the cost of a first read)."""
    _address_said.said.clear()
    _address_said.size = 0


def nsid(msg: Message) -> int | None:
    """NETNSA_NSID of an RTM_NEWNSID; None if absent or not assigned (-1)."""
    if kind(msg) != RTM_NEWNSID or not decoded(msg):
        return None
    value = _s32(_attrs(msg, _NSID_ATTRS).get("NETNSA_NSID"))
    return value if value is not None and value >= 0 else None     # NETNSA_NSID_NOT_ASSIGNED is -1


def global_ips(addr_msgs: Iterable[Message]) -> tuple[str, ...]:
    """Addresses others can reach it by: all but loopback and link-local."""
    return tuple(sorted({a for msg in addr_msgs if (a := address(msg))}))


def veths_of(link_msgs: Iterable[Message]) -> Veths:
    out: Veths = {}
    for msg in link_msgs:
        got = link(msg)
        if got is not None and got[1] is not None:
            out[got[0]] = got[1]
    return out


def encode(msg: Message, msg_type: int, flags: int, sequence: int) -> bytes:
    """A request: msg (pyroute2's class, fields and attributes set) with its header."""
    msg["header"] = {"type": msg_type, "flags": flags, "sequence_number": sequence, "pid": 0}
    msg.encode()
    return bytes(msg.data)


@functools.lru_cache(maxsize=32)
def request(msg_type: int, flags: int, sequence: int, ifindex: int = 0, kind: str | None = None) -> bytes:
    """RTM_GETLINK (one link, ifindex; or with NLM_F_DUMP all of them, only those of
    kind, without IPv6's statistics) or RTM_GETADDR. Encoded once and kept: each
    namespace's socket asks the same with the same sequence numbers."""
    msg = ifinfmsg() if msg_type == RTM_GETLINK else ifaddrmsg()
    if msg_type == RTM_GETLINK:
        msg["index"] = ifindex
        msg["attrs"] = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
        if kind:
            msg["attrs"].append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind)]}))
    return encode(msg, msg_type, flags, sequence)


def route_socket(path: str) -> socket.socket:
    """An rtnetlink socket in the namespace at path (our own: opened here; another:
    through a short-lived thread that enters it, nsexec.socket_in)."""
    if same_netns(path, OWN_NETNS):
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    sock = socket_in(path, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    if sock is None:
        raise OSError(f"cannot open a netlink socket in {path}")
    return sock


def same_netns(a: str, b: str) -> bool:
    try:
        return os.stat(a).st_ino == os.stat(b).st_ino
    except OSError:
        return False


class Rtnl:
    """One rtnetlink socket made in a namespace, with a timeout on every answer."""

    def __init__(self, path: str):
        self.sock = route_socket(path)
        self.sock.settimeout(NETLINK_TIMEOUT)
        self._seq = 0

    def _send(self, msg_type: int, flags: int, msg: Message | None = None, **what: Any) -> int:
        """msg: a request of its own (pyroute2's class, filled in); else request(msg_type, ..., **what)."""
        self._seq += 1
        self.sock.send(encode(msg, msg_type, flags, self._seq) if msg is not None
                       else request(msg_type, flags, self._seq, **what))
        return self._seq

    def _answer(self, sequence: int, dump: bool) -> Iterator[Message]:
        """The answer's messages as they come: a dump's until NLMSG_DONE, at most
        MAX_DUMP_MESSAGES (a namespace's links and addresses are its workload's to make)."""
        count = 0
        while True:
            data = self.sock.recv(RECV_BYTES)
            if not data:
                raise OSError("netlink socket closed")
            for msg in decode(data):
                if seq(msg) != sequence:
                    continue
                if kind(msg) == NLMSG_DONE and dump:
                    return
                if kind(msg) == NLMSG_ERROR:
                    code = msg["error"] if decoded(msg) else None
                    raise OSError(f"netlink request refused (error {code})")
                yield msg
                count += 1
                if not dump:
                    return
                if count >= MAX_DUMP_MESSAGES:
                    raise OSError(f"netlink dump of more than {MAX_DUMP_MESSAGES} messages")

    def links(self, kind: str | None = None) -> Iterator[Message]:
        """Every link's RTM_NEWLINK (with kind: those of that kind only, e.g. "veth")."""
        return self._answer(self._send(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, kind=kind), True)

    def link(self, ifindex: int) -> Message | None:
        """One link's RTM_NEWLINK, or None if there is none."""
        try:
            return next(self._answer(self._send(RTM_GETLINK, NLM_F_REQUEST, ifindex=ifindex), False), None)
        except OSError:
            return None

    def addresses(self) -> Iterator[Message]:
        """Every address's RTM_NEWADDR, of every family."""
        return self._answer(self._send(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP), True)

    def nsid(self, path: str) -> int | None:
        """The id this socket's namespace has for the namespace at path, or None.
        The kernel answers RTM_GETNSID without an ACK; through pyroute2's shared
        socket it was once seen to wait forever: a plain socket with a timeout cannot."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            msg = nsidmsg()
            msg["attrs"] = [("NETNSA_FD", fd)]
            reply = next(self._answer(self._send(RTM_GETNSID, NLM_F_REQUEST, msg), False), None)
            return nsid(reply) if reply is not None else None
        except OSError:     # timeout, NLMSG_ERROR (none assigned)
            return None
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_netns(path: str) -> tuple[tuple[str, ...], Veths] | None:
    """A namespace's global addresses and veths; None if it cannot be entered
    (gone while we looked: a pod deleted)."""
    try:
        with Rtnl(path) as rt:
            return global_ips(rt.addresses()), veths_of(rt.links("veth"))
    except OSError:      # gone, not a namespace, no answer in time
        return None
