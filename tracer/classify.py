"""classify: every drop gets one category from a fixed list and a one-line hint.

The category comes from the kernel's drop reason name (read from the running
kernel, so matched by name, never by number), refined by where the drop
happened, and for kernels without reasons (< 5.17) from the location and the
ICMP error the kernel sent just before. The hint names the likely cause with
the evidence the event carries.
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass

from .decode import Drop

CATEGORIES = (
    "mtu", "netfilter", "conntrack", "no-socket", "no-route", "neighbor",
    "rp-filter", "tcp", "socket-buffer", "qdisc", "malformed", "other",
)

# Reason name patterns (include/net/dropreason-core.h), first match wins.
_BY_REASON = (
    (("PKT_TOO_BIG", "FRAG_REASM_TIMEOUT", "FRAG_TOO_FAR", "DUP_FRAG"), "mtu"),
    (("NETFILTER_DROP",), "netfilter"),
    (("NO_SOCKET", "IP_NOPROTO"), "no-socket"),
    (("IP_INNOROUTES", "IP_OUTNOROUTES", "IP_INADDRERRORS", "IP_INVALID_DEST"), "no-route"),
    (("NEIGH_*", "ARP_*"), "neighbor"),
    (("IP_RPFILTER", "IP_INVALID_SOURCE", "IP_LOCAL_SOURCE"), "rp-filter"),
    (("TCP_LISTEN_OVERFLOW", "TCP_ZEROWINDOW", "TCP_OFO_QUEUE_PRUNE",
      "SOCKET_RCVBUFF", "SOCKET_BACKLOG", "PROTO_MEM"), "socket-buffer"),
    (("TCP_*",), "tcp"),
    (("QDISC_*", "CAKE_FLOOD", "FQ_*", "CPU_BACKLOG", "FULL_RING", "TC_*", "DUALPI2_*"), "qdisc"),
    (("*_CSUM", "PKT_TOO_SMALL", "IP_INHDR", "HDR_TRUNC", "INVALID_PROTO", "DEV_HDR",
      "IPV6_BAD_EXTHDR", "VXLAN_INVALID_HDR", "MAC_INVALID_SOURCE", "IPV6_NDISC_*"), "malformed"),
)

# Kernel functions (drop locations), for refining NETFILTER_DROP and for
# kernels whose kfree_skb carries no reason.
_CONNTRACK_FUNCS = ("nf_conntrack_*", "__nf_conntrack_*", "nf_ct_*", "__nf_ct_*", "nf_nat_*", "nf_confirm*")
_NETFILTER_FUNCS = ("nft_do_chain*", "ipt_do_table", "ip6t_do_table", "arpt_do_table",
                    "ebt_do_table", "nf_hook_slow", "br_nf_*")
_BY_LOCATION = (
    (_CONNTRACK_FUNCS, "conntrack"),
    (_NETFILTER_FUNCS, "netfilter"),
    (("ip_error", "ip_route_input*", "ip6_pkt_drop", "ip6_pkt_discard*", "ip_rt_bug"), "no-route"),
    (("neigh_*", "arp_*", "__neigh_*", "ndisc_*"), "neighbor"),
    (("sch_*", "*qdisc*", "__dev_queue_xmit", "enqueue_to_backlog", "pfifo_*"), "qdisc"),
    (("tcp_*",), "tcp"),
)

ICMP_DEST_UNREACH = 3
ICMP_FRAG_NEEDED = (3, 4)
ICMP_PORT_UNREACH = (3, 3)
ICMP_NET_HOST_UNREACH = ((3, 0), (3, 1), (3, 6), (3, 7))


@dataclass(frozen=True)
class Verdict:
    category: str
    hint: str


def _match(name: str | None, patterns) -> bool:
    return name is not None and any(fnmatch.fnmatchcase(name, p) for p in patterns)


@functools.lru_cache(maxsize=4096)
def category_of(reason: str | None, location: str | None, icmp_sent: tuple[int, int] | None = None) -> str:
    """The category from what the kernel counters also key on (reason, location),
    plus the ICMP error if the event saw one."""
    if reason is not None and reason not in ("NOT_SPECIFIED",):
        for patterns, category in _BY_REASON:
            if _match(reason, patterns):
                if category == "netfilter" and _match(location, _CONNTRACK_FUNCS):
                    return "conntrack"
                return category
    # No reason (old kernel) or an unspecific one: the ICMP error tells a lot.
    if icmp_sent == ICMP_FRAG_NEEDED:
        return "mtu"
    if icmp_sent == ICMP_PORT_UNREACH:
        return "no-socket"
    if icmp_sent in ICMP_NET_HOST_UNREACH:
        return "no-route"
    for patterns, category in _BY_LOCATION:
        if _match(location, patterns):
            return category
    return "other"


def _where(drop: Drop) -> str:
    return f" on {drop.ifname}" if drop.ifname else ""


def _dest(drop: Drop) -> str:
    if drop.dst is None:
        return "its destination"
    return f"{drop.dst}:{drop.dport}" if drop.dport is not None else drop.dst


def _hint(category: str, d: Drop) -> str:
    why = d.reason or "no reason given"
    if category == "mtu":
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
    if category == "netfilter":
        return (f"a firewall rule or a chain's DROP policy discarded it in {d.location or 'netfilter'}"
                f"{_where(d)}: check 'iptables -S' and 'nft list ruleset' in this namespace "
                f"(e.g. FORWARD policy DROP)")
    if category == "conntrack":
        return (f"connection tracking refused it at {d.location}: check 'conntrack -S' (insert_failed, "
                f"drop, invalid) and nf_conntrack_count against nf_conntrack_max")
    if category == "no-socket":
        proto = (d.proto or "").upper() or "the"
        icmp = " (ICMP port unreachable sent back)" if d.icmp_sent == ICMP_PORT_UNREACH else ""
        return (f"nothing listens on {proto} {_dest(d)}{icmp}: the server is not running, "
                f"not ready, or bound to another address or port")
    if category == "no-route":
        return (f"no route to {d.dst or 'the destination'}{_where(d)} ({why}): add the route for its "
                f"network, e.g. the missing pod CIDR route to another node, or a default route")
    if category == "neighbor":
        return (f"the next hop{_where(d)} did not answer ARP/ND ({why}): the neighbour is down or on "
                f"another L2 segment; check 'ip neigh show'")
    if category == "rp-filter":
        return (f"source {d.src or '?'} failed the reverse-path/source check{_where(d)} ({why}): the route "
                f"back to it leaves by another interface; check rp_filter and the routes to {d.src or 'it'}")
    if category == "tcp":
        return (f"TCP discarded a segment of {d.flow} ({why}): a stale, out-of-window or "
                f"unexpected segment, usually after a reset or lost connection state")
    if category == "socket-buffer":
        return (f"the receiving socket for {_dest(d)} is full ({why}): the application reads too "
                f"slowly; raise its receive buffer or backlog, or give it more CPU")
    if category == "qdisc":
        return (f"a queue or traffic-control rule dropped it{_where(d)} ({why}): the device is "
                f"overloaded or a tc filter drops; check 'tc -s qdisc show'")
    if category == "malformed":
        return f"bad packet ({why}): truncated, bad header or checksum; check the sender or NIC offloads"
    return f"dropped in {d.location or 'an unknown function'} ({why})"


def classify(drop: Drop) -> Verdict:
    category = category_of(drop.reason, drop.location, drop.icmp_sent)
    return Verdict(category, _hint(category, drop))
