"""matcher: which drop points a dropped packet could have met, and on which chain.

A condition is evaluated three-valued: True, False, or None where it cannot be
told (a match netdrop does not read, a packet field the event lacks); a rule
matches when none of its conditions is False, for certain when all are True.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from ..kernel.decode import Drop
from .droppoints import Cond, DropPoint

@dataclass(frozen=True)
class Packet:
    """What rule matching needs of a drop, parsed once per drop, not once per rule."""

    drop: Drop
    src: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    chain: str
    ct: str | None

    @classmethod
    def of(cls, drop: Drop) -> Packet:
        def ip(a: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
            try:
                return ipaddress.ip_address(a) if a else None
            except ValueError:
                return None
        return cls(drop, ip(drop.src), ip(drop.dst), path_chain(drop),
                   None if drop.conntrack is None else _CT_NAMES.get(drop.conntrack))


def path_chain(drop: Drop) -> str:
    """Which filter chain a dropped packet was on its way through: made here
    (no device yet: OUTPUT), forwarded (a route out: FORWARD), or delivered here."""
    if drop.ifname is None and drop.out_ifname:
        return "OUTPUT"
    return "FORWARD" if drop.out_ifname else "INPUT"


# decode.py's conntrack states as iptables' --ctstate names them
_CT_NAMES = {"none": "INVALID", "new": "NEW", "established": "ESTABLISHED", "established-reply": "ESTABLISHED",
             "related": "RELATED", "related-reply": "RELATED", "untracked": "UNTRACKED"}


def matches(point: DropPoint, drop: Drop) -> bool | None:
    """Could this drop point have matched the dropped packet? True: every condition
    we can read matches; False: one does not; None: it depends on matches we
    cannot evaluate (or it is a policy)."""
    return matches_packet(point, Packet.of(drop))


def matches_packet(point: DropPoint, pkt: Packet) -> bool | None:
    """matches() for a packet parsed once (Packet.of), as the explainer tries it on every point."""
    if not (point.backend == "nftables" or point.chain not in ("INPUT", "FORWARD", "OUTPUT")
            or point.chain == pkt.chain):
        return False
    if point.kind != "rule":
        return None
    if point.backend == "nftables":
        return _nft_matches(point.conds, pkt.drop)
    return _ipt_matches(point.conds, pkt)


def tested_fields(point: DropPoint) -> frozenset[str]:
    """The packet fields (Drop attributes) a drop point's conditions test."""
    tested: set[str] = set()
    for what, _, _ in point.conds:
        if point.backend == "nftables":
            proto, _, part = what.partition(" ")
            tested |= _NFT_FIELDS.get(part, frozenset()) if proto in _NFT_PROTOS.get(part, ()) else set()
            if what == "ct state":
                tested.add("conntrack")
        else:
            tested |= _IPT_FIELDS.get(what, frozenset())
    return frozenset(tested)


# Which Drop attributes a condition reads (for the per-flow memo's key).
_IPT_FIELDS = {"-s": frozenset({"src"}), "-d": frozenset({"dst"}), "-p": frozenset({"proto"}),
               "--dport": frozenset({"dport"}), "--sport": frozenset({"sport"}), "--ctstate": frozenset({"conntrack"})}
_NFT_FIELDS = {"dport": frozenset({"dport", "proto"}), "sport": frozenset({"sport", "proto"}),
               "saddr": frozenset({"src"}), "daddr": frozenset({"dst"})}
_NFT_PROTOS = {"dport": ("udp", "tcp", "th"), "sport": ("udp", "tcp", "th"),
               "saddr": ("ip", "ip6"), "daddr": ("ip", "ip6")}


# A rule is indexed by one port only if it names this few (a range of
# thousands stays unindexed: it is tried on every packet).
INDEX_PORTS = 64
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RuleIndex:
    """A ruleset's drop points by what they match, so that a packet is tried
    only on the points that could match it: kube-proxy writes one rule per
    Service port (`-d 10.96.0.30/32 -p tcp --dport 80 -j REJECT`), and a
    node's thousands of them are a few candidates for any one packet.

    Each rule goes under one key it cannot match without: its destination
    address (a condition `-d A/32` or `ip daddr A`, not negated), else its
    destination ports (`--dport`, `th dport`: a few ports, not negated); the
    rest (policies, rules with neither) are tried on every packet. A packet
    with no destination address or port is tried on every point: conditions
    on them cannot be evaluated there, so no point is ruled out."""

    def __init__(self, points: Iterable[DropPoint]) -> None:
        self.points = tuple(points)
        self._ids = frozenset(id(p) for p in self.points)
        self._by_dst: dict[_Address, list[int]] = {}
        self._by_dport: dict[int, list[int]] = {}
        self._rest: list[int] = []
        for i, p in enumerate(self.points):
            addr, ports = _index_keys(p)
            if addr is not None:
                self._by_dst.setdefault(addr, []).append(i)
            elif ports:
                for port in ports:
                    self._by_dport.setdefault(port, []).append(i)
            else:
                self._rest.append(i)

    def holds(self, point: DropPoint) -> bool:
        """Is this very point (not an equal one from another sample) in the index?"""
        return id(point) in self._ids

    def candidates(self, pkt: Packet) -> list[DropPoint]:
        """The points that may match the packet, in ruleset order; every point
        left out would answer False to matches_packet."""
        port = pkt.drop.dport
        if pkt.dst is None or port is None:
            return list(self.points)
        found = self._rest + self._by_dst.get(pkt.dst, []) + self._by_dport.get(port, [])
        # A rule of several ports is listed under each: once is enough.
        return [self.points[i] for i in sorted(set(found))]

    def verdicts(self, pkt: Packet) -> list[tuple[DropPoint, bool | None]]:
        """(point, True) where every condition we can read matches, (point,
        None) where it depends on what we cannot evaluate: matches_packet of
        every point not False, in ruleset order."""
        out: list[tuple[DropPoint, bool | None]] = []
        for p in self.candidates(pkt):
            v = matches_packet(p, pkt)
            if v is not False:
                out.append((p, v))
        return out


def _index_keys(p: DropPoint) -> tuple[_Address | None, tuple[int, ...]]:
    """The destination address a rule cannot match without, else its destination ports; (None, ()) for neither."""
    if p.kind != "rule":
        return None, ()
    ports: tuple[int, ...] = ()
    for what, neg_or_op, arg in p.conds:
        if p.backend == "nftables":
            if neg_or_op not in ("==", "in"):
                continue
            proto, _, field_ = what.partition(" ")
            if field_ == "daddr" and proto in ("ip", "ip6") and isinstance(arg, str):
                addr = _host(arg)
                if addr is not None:
                    return addr, ()
            elif field_ == "dport" and proto in ("udp", "tcp", "th") and not ports:
                ports = _ports(arg if isinstance(arg, tuple) else (arg,))
        elif neg_or_op is False:
            if what == "-d" and isinstance(arg, (ipaddress.IPv4Network, ipaddress.IPv6Network)) \
                    and arg.prefixlen == arg.max_prefixlen:
                return arg.network_address, ()
            if what == "--dport" and isinstance(arg, tuple) and not ports \
                    and sum(max(0, hi - lo + 1) for lo, hi in arg) <= INDEX_PORTS:
                ports = tuple(port for lo, hi in arg for port in range(lo, hi + 1))
    return None, ports


def _host(text: str) -> _Address | None:
    """The one address a network of text holds (as _in_cidr reads it), else None."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return net.network_address if net.prefixlen == net.max_prefixlen else None


def _ports(values: tuple[object, ...]) -> tuple[int, ...]:
    """nft's port values, if all are plain ints and few: only an int equals a
    port here (a float 80.0 would too, so anything else leaves the rule unindexed)."""
    if len(values) > INDEX_PORTS or not all(type(v) is int for v in values):
        return ()
    return tuple(v for v in values if isinstance(v, int))


def _all(results: Iterable[bool | None]) -> bool | None:
    """Three-valued AND of a rule's conditions: False as soon as one fails,
    None if one could not be evaluated, else True."""
    known = True
    for ok in results:
        if ok is False:
            return False
        if ok is None:
            known = False
    return True if known else None


def _ipt_matches(conds: tuple[Cond, ...], pkt: Packet) -> bool | None:
    return _all(_ipt_cond(opt, bool(negate), arg, pkt) for opt, negate, arg in conds)


def _ipt_cond(opt: str, negate: bool, arg: object, pkt: Packet) -> bool | None:
    drop = pkt.drop
    ok: bool | None
    if opt in ("-s", "-d"):
        addr = pkt.src if opt == "-s" else pkt.dst
        ok = None if addr is None or not isinstance(arg, (ipaddress.IPv4Network, ipaddress.IPv6Network)) \
            else (addr.version == arg.version and addr in arg)
    elif opt == "-p":
        ok = None if drop.proto is None else drop.proto == arg
    elif opt in ("--dport", "--sport"):
        port = drop.dport if opt == "--dport" else drop.sport
        ok = None if port is None or not isinstance(arg, tuple) else any(lo <= port <= hi for lo, hi in arg)
    elif opt == "--ctstate":
        ok = None if pkt.ct is None or not isinstance(arg, frozenset) else pkt.ct in arg
    else:
        ok = None
    return ok if ok is None or not negate else not ok


def _nft_matches(conds: tuple[Cond, ...], drop: Drop) -> bool | None:
    return _all(_nft_cond(what, op, value, drop) for what, op, value in conds)


def _nft_cond(what: str, op: object, value: object, drop: Drop) -> bool | None:
    if op not in ("==", "!=", "in"):
        return None            # <, >, & ...: not evaluated
    proto, _, field_ = what.partition(" ")
    values = value if isinstance(value, tuple) else (value,)
    ok: bool | None
    if field_ in ("dport", "sport") and proto in ("udp", "tcp", "th"):
        port = drop.dport if field_ == "dport" else drop.sport
        ok = None if port is None else (proto in ("th", drop.proto) and port in values)
    elif field_ in ("saddr", "daddr") and proto in ("ip", "ip6") and isinstance(value, str):
        ok = _in_cidr(drop.src if field_ == "saddr" else drop.dst, value)
    elif what == "ct state":
        ok = None if drop.conntrack is None else (
            {"none": "invalid", "established-reply": "established",
             "related-reply": "related"}.get(drop.conntrack, drop.conntrack) in values)
    else:
        ok = None
    return ok if ok is None or op != "!=" else not ok


def _in_cidr(addr: str | None, cidr: str | None) -> bool | None:
    if addr is None or cidr is None:
        return None
    try:
        return ipaddress.ip_address(addr) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None
