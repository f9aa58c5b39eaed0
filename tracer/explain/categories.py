"""categories: the registry of drop categories, one entry each, and category_of.

An entry holds all netdrop knows of a category: the drop reason names and
kernel functions that mean it, the ICMP error that gives it away on kernels
without reasons, the sentence of a capture's summary, its console style and
HTML colour, its hint, whether it is benign, and its rank among "what to check
first". A new category is one entry here.

Reasons are matched by name (read from the running kernel, never by number:
include/net/dropreason-core.h renumbers between versions).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..kernel.decode import Drop
from .verdict import (ICMP_FRAG_NEEDED, ICMP_NET_HOST_UNREACH, ICMP_PORT_UNREACH, destination, name_matches,
                      on_device)


@dataclass(frozen=True)
class Category:
    name: str
    reasons: tuple[str, ...]      # drop reason name patterns (without SKB_DROP_REASON_)
    locations: tuple[str, ...]    # kernel functions that drop for it: with no reason, or to tell one reason apart
    icmp: tuple[tuple[int, int], ...]   # ICMP errors (type, code) sent just before: the sign without a reason
    verdict: str                  # one sentence of a capture's summary
    style: str                    # console (rich style)
    colour: str                   # HTML summary (CSS colour)
    hint: Callable[[Drop], str]   # one line: the likely cause, with the event's evidence
    benign: bool = False          # expected on a healthy node, nothing to fix
    rank: int = 0                 # "what to check first": by rank (RANK_*), then by drops; lower comes first


# How much a category's drops hurt, for "what to check first" (issue 9: a
# thousand NO_SOCKET drops must not bury one MTU drop). Benign drops
# (explain/benign.py) come after every rank, whatever their category.
RANK_BREAKS = 0       # the path itself refuses packets: every retry fails the same way
RANK_LOAD = 1         # packets lost under load: queues and socket buffers overflowing
RANK_MALFORMED = 2    # bad packets: the sender's or a NIC's fault, rarely the node's
RANK_ENDPOINT = 3     # the path works, an endpoint said no: nothing listening, TCP state
RANK_OTHER = 4        # unspecific, often the node's own noise


def _why(d: Drop) -> str:
    return d.reason or "no reason given"


def _mtu(d: Drop) -> str:
    if d.reason and d.reason.startswith(("FRAG_", "DUP_FRAG")):
        return (f"IP fragments of {d.flow} were never reassembled ({d.reason}): fragments get "
                f"lost on the way; make the MTUs along the path agree so nothing fragments")
    df = " with DF set" if d.df else ""
    if d.mtu:
        icmp = "; ICMP 'fragmentation needed' went back to the sender" if d.icmp_sent == ICMP_FRAG_NEEDED else ""
        return (f"{d.len}-byte packet{df} is larger than the MTU {d.mtu} of {d.out_ifname or 'the egress device'} "
                f"(egress of its route){icmp}: the sender's MTU is too big for this path, lower it "
                f"to {d.mtu} (pod/veth MTU must fit the overlay) or let PMTU discovery work")
    return (f"{d.len}-byte packet{df} does not fit the path MTU: compare the MTUs of the "
            f"devices along the path (pod eth0, veth, bridge, overlay, node NIC)")


def _netfilter(d: Drop) -> str:
    return (f"a firewall rule or a chain's DROP policy discarded it in {d.location or 'netfilter'}"
            f"{on_device(d)}: check 'iptables -S' and 'nft list ruleset' in this namespace "
            f"(e.g. FORWARD policy DROP)")


def _conntrack(d: Drop) -> str:
    return (f"connection tracking refused it at {d.location}: check 'conntrack -S' (insert_failed, "
            f"drop, invalid) and nf_conntrack_count against nf_conntrack_max")


def _no_socket(d: Drop) -> str:
    proto = (d.proto or "").upper() or "the"
    icmp = " (ICMP port unreachable sent back)" if d.icmp_sent == ICMP_PORT_UNREACH else ""
    return (f"nothing listens on {proto} {destination(d)}{icmp}: the server is not running, "
            f"not ready, or bound to another address or port")


def _no_route(d: Drop) -> str:
    return (f"no route to {d.dst or 'the destination'}{on_device(d)} ({_why(d)}): add the route for its "
            f"network, e.g. the missing pod CIDR route to another node, or a default route")


def _neighbor(d: Drop) -> str:
    return (f"the next hop{on_device(d)} did not answer ARP/ND ({_why(d)}): the neighbour is down or on "
            f"another L2 segment; check 'ip neigh show'")


def _rp_filter(d: Drop) -> str:
    return (f"source {d.src or '?'} failed the reverse-path/source check{on_device(d)} ({_why(d)}): the route "
            f"back to it leaves by another interface; check rp_filter and the routes to {d.src or 'it'}")


def _tcp(d: Drop) -> str:
    return (f"TCP discarded a segment of {d.flow} ({_why(d)}): a stale, out-of-window or "
            f"unexpected segment, usually after a reset or lost connection state")


def _socket_buffer(d: Drop) -> str:
    return (f"the receiving socket for {destination(d)} is full ({_why(d)}): the application reads too "
            f"slowly; raise its receive buffer or backlog, or give it more CPU")


def _qdisc(d: Drop) -> str:
    return (f"a queue or traffic-control rule dropped it{on_device(d)} ({_why(d)}): the device is "
            f"overloaded or a tc filter drops; check 'tc -s qdisc show'")


def _malformed(d: Drop) -> str:
    return f"bad packet ({_why(d)}): truncated, bad header or checksum; check the sender or NIC offloads"


def _other(d: Drop) -> str:
    return f"dropped in {d.location or 'an unknown function'} ({_why(d)})"


# In the order categories are shown (the console, a summary's counts and timeline).
REGISTRY: tuple[Category, ...] = (
    Category("mtu", ("PKT_TOO_BIG", "FRAG_REASM_TIMEOUT", "FRAG_TOO_FAR", "DUP_FRAG"), (), (ICMP_FRAG_NEEDED,),
             "packets larger than the path MTU were dropped", "bold magenta", "#8e44ad", _mtu, rank=RANK_BREAKS),
    # nft_do_chain frees the packet itself (nftables, iptables-nft); legacy
    # xtables and other hooks return NF_DROP and nf_hook_slow frees it.
    Category("netfilter", ("NETFILTER_DROP",),
             ("nft_do_chain*", "ipt_do_table", "ip6t_do_table", "arpt_do_table", "ebt_do_table", "nf_hook_slow",
              "br_nf_*"), (),
             "a firewall rule or chain policy dropped packets", "bold red", "#c0392b", _netfilter, rank=RANK_BREAKS),
    # Conntrack's refusals reach kfree_skb as NETFILTER_DROP too: where it was freed tells them apart.
    Category("conntrack", ("NETFILTER_DROP",),
             ("nf_conntrack_*", "__nf_conntrack_*", "nf_ct_*", "__nf_ct_*", "nf_nat_*", "nf_confirm*"), (),
             "connection tracking refused packets", "red", "#e74c3c", _conntrack, rank=RANK_BREAKS),
    Category("no-socket", ("NO_SOCKET", "IP_NOPROTO"), (), (ICMP_PORT_UNREACH,),
             "packets reached a port nobody listens on", "yellow", "#f39c12", _no_socket, rank=RANK_ENDPOINT),
    Category("no-route", ("IP_INNOROUTES", "IP_OUTNOROUTES", "IP_INADDRERRORS", "IP_INVALID_DEST"),
             ("ip_error", "ip_route_input*", "ip6_pkt_drop", "ip6_pkt_discard*", "ip_rt_bug"), ICMP_NET_HOST_UNREACH,
             "packets had no route", "bold yellow", "#d35400", _no_route, rank=RANK_BREAKS),
    Category("neighbor", ("NEIGH_*", "ARP_*"), ("neigh_*", "arp_*", "__neigh_*", "ndisc_*"), (),
             "the next hop did not answer ARP/ND", "cyan", "#16a085", _neighbor, rank=RANK_BREAKS),
    Category("rp-filter", ("IP_RPFILTER", "IP_INVALID_SOURCE", "IP_LOCAL_SOURCE"), (), (),
             "packets failed the reverse-path / source check", "blue", "#2980b9", _rp_filter, rank=RANK_BREAKS),
    # TCP_CSUM is tcp (TCP_* comes before malformed's *_CSUM), as it always was.
    Category("tcp", ("TCP_*",), ("tcp_*",), (),
             "TCP discarded segments", "green", "#27ae60", _tcp, rank=RANK_ENDPOINT),
    # Exact names beat tcp's TCP_* (category_of).
    Category("socket-buffer", ("TCP_LISTEN_OVERFLOW", "TCP_ZEROWINDOW", "TCP_OFO_QUEUE_PRUNE", "SOCKET_RCVBUFF",
                               "SOCKET_BACKLOG", "PROTO_MEM"), (), (),
             "receiving sockets were full", "bright_magenta", "#e84393", _socket_buffer, rank=RANK_LOAD),
    Category("qdisc", ("QDISC_*", "CAKE_FLOOD", "FQ_*", "CPU_BACKLOG", "FULL_RING", "TC_*", "DUALPI2_*"),
             ("sch_*", "*qdisc*", "__dev_queue_xmit", "enqueue_to_backlog", "pfifo_*"), (),
             "queues or traffic control dropped packets", "bright_blue", "#0984e3", _qdisc, rank=RANK_LOAD),
    Category("malformed", ("*_CSUM", "PKT_TOO_SMALL", "IP_INHDR", "HDR_TRUNC", "INVALID_PROTO", "DEV_HDR",
                           "IPV6_BAD_EXTHDR", "VXLAN_INVALID_HDR", "MAC_INVALID_SOURCE",
                           # Not IPV6_NDISC_*: NS_OTHERHOST is a good solicitation for another host (benign).
                           "IPV6_NDISC_FRAG", "IPV6_NDISC_HOP_LIMIT", "IPV6_NDISC_BAD_CODE",
                           "IPV6_NDISC_BAD_OPTIONS"), (), (),
             "malformed packets were dropped", "bright_red", "#b71540", _malformed, rank=RANK_MALFORMED),
    # Unspecific, often the node's own noise: listed last.
    Category("other", (), (), (), "other drops", "white", "#7f8c8d", _other, rank=RANK_OTHER),
)

CATEGORIES: tuple[str, ...] = tuple(c.name for c in REGISTRY)
BY_NAME: Mapping[str, Category] = {c.name: c for c in REGISTRY}
OTHER = BY_NAME["other"]


def entry(name: str) -> Category:
    """The entry of a category name; "other" for a name netdrop does not know
    (a summary.json may say anything)."""
    return BY_NAME.get(name, OTHER)


def _by_reason(reason: str, location: str | None) -> Category | None:
    """The category whose reason patterns match: an exact name before a pattern
    (TCP_LISTEN_OVERFLOW is socket-buffer, not TCP_*), then one whose functions
    also match the location (NETFILTER_DROP in nf_conntrack_in is conntrack),
    then the first in the registry."""
    best: tuple[bool, bool, int] | None = None
    found = None
    for i, c in enumerate(REGISTRY):
        if not name_matches(reason, c.reasons):
            continue
        rank = (reason not in c.reasons, not name_matches(location, c.locations), i)
        if best is None or rank < best:
            best, found = rank, c
    return found


@functools.lru_cache(maxsize=4096)
def category_of(reason: str | None, location: str | None, icmp_sent: tuple[int, int] | None = None) -> str:
    """The category from what the kernel counters also key on (reason, location),
    plus the ICMP error if the event saw one. Cached: a few hundred distinct
    (reason, location) pairs make up a node's drops."""
    if reason is not None and reason != "NOT_SPECIFIED":
        found = _by_reason(reason, location)
        if found is not None:
            return found.name
    # No reason (old kernel) or an unspecific one: the ICMP error tells a lot,
    # then the function that dropped it.
    for c in REGISTRY:
        if icmp_sent in c.icmp:
            return c.name
    for c in REGISTRY:
        if name_matches(location, c.locations):
            return c.name
    return OTHER.name
