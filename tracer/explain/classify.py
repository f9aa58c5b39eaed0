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
from typing import TYPE_CHECKING

from ..kernel.decode import Drop

if TYPE_CHECKING:
    from .netfilter import Context

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
    detail: dict | None = None    # what told a netfilter or conntrack drop apart (JSON "detail")


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


NFT_LOCATIONS = ("nft_do_chain*",)
TCP_SYN, TCP_ACK = 0x02, 0x10


def classify(drop: Drop, ctx: "Context | None" = None) -> Verdict:
    """The category and hint; ctx (netfilter.Context: the namespace's rule
    counters and conntrack statistics) tells NETFILTER_DROP apart."""
    category = category_of(drop.reason, drop.location, drop.icmp_sent)
    if category in ("netfilter", "conntrack"):
        refined = _netfilter(drop, category, ctx)
        if refined is not None:
            return refined
    if category == "no-socket" and drop.tcp_flags is not None \
            and drop.tcp_flags & (TCP_SYN | TCP_ACK) == (TCP_SYN | TCP_ACK):
        return _nat_bypass(drop, ctx)
    return Verdict(category, _hint(category, drop))


def _point_detail(p, packets: int | None = None) -> dict:
    d = {"by": p.kind, "backend": p.backend, "family": p.family, "table": p.table, "chain": p.chain,
         "target": p.target, "rule": p.rule}
    if p.no_endpoints_service:
        d["service_without_endpoints"] = p.no_endpoints_service
    if packets is not None:
        d["packets"] = packets
    return d


def _netfilter(d: Drop, category: str, ctx) -> Verdict | None:
    view = ctx.view if ctx else None
    points = view.likely_points(d) if view else []
    grown = dict((p.key, n) for p, n in view.grown) if view else {}
    rejected = d.icmp_sent is not None and d.icmp_sent[0] == ICMP_DEST_UNREACH
    # kube-proxy's REJECT names its Service; ICMP errors are rate-limited, so the
    # rule alone (matched to the packet) suffices.
    svc = next((p for p in points if p.no_endpoints_service), None)
    if rejected or svc is not None:
        rejects = [p for p in points if p.target.upper() == "REJECT"] or points
        if svc is not None:
            return Verdict("netfilter",
                           f"Service {svc.no_endpoints_service} has no endpoints: kube-proxy rejects connections "
                           f"to {_dest(d)} with {svc.describe()}; check the Service's selector and that its pods "
                           f"are Ready", _point_detail(svc, grown.get(svc.key)))
        p = rejects[0] if len(rejects) == 1 else None
        return Verdict("netfilter",
                       f"a REJECT rule refused it{_where(d)} and answered with ICMP {d.icmp_sent[0]}/{d.icmp_sent[1]}"
                       + (f": {p.describe()}" if p else ": check the REJECT rules ('iptables -S', 'nft list ruleset')"),
                       _point_detail(p, grown.get(p.key)) if p else {"by": "rule", "target": "REJECT"})
    stats = view.ct_growth if view else {}
    inv = next((p for p in points if p.drops_invalid), None)
    # No conntrack entry means INVALID only where conntrack is in use: a rule that
    # matches on ctstate INVALID says so, as do conntrack's own counters.
    if d.conntrack == "none" and view is not None and (inv or view.conntrack_active or stats.get("invalid")):
        by = inv.describe() if inv else (points[0].describe() if len(points) == 1 else "a rule matching ctstate INVALID")
        invalid = (view.ct or {}).get("invalid", 0)
        counted = f": conntrack counts {invalid} invalid packets here" if invalid else ""
        return Verdict("conntrack",
                       f"conntrack found no valid state for it (INVALID{counted}) and {by} dropped it, as "
                       f"kube-proxy's INVALID rule does: out-of-window or stray TCP, an expired entry, or "
                       f"asymmetric routing",
                       {"by": "conntrack", "state": "invalid", **({"rule": inv.rule, "chain": inv.chain} if inv else {}),
                        "conntrack_invalid": invalid})
    if not _match(d.location, NFT_LOCATIONS) and (stats.get("insert_failed") or stats.get("drop")):
        if stats.get("insert_failed"):
            return Verdict("conntrack",
                           f"conntrack could not insert the connection (insert_failed +{stats['insert_failed']}): "
                           f"two packets of one flow raced (DNS A/AAAA over one socket, NAT'd UDP); use "
                           f"'single-request-reopen' in resolv.conf or a newer kernel",
                           {"by": "conntrack", "state": "insert_failed", "insert_failed": stats["insert_failed"]})
        entries = view.ct.get("entries") if view and view.ct else None
        return Verdict("conntrack",
                       f"the conntrack table is full (drop +{stats['drop']}, {entries} entries): raise "
                       f"net.netfilter.nf_conntrack_max or find the flood of connections",
                       {"by": "conntrack", "state": "table_full", "drop": stats["drop"], "entries": entries})
    if not points and view is not None:
        points = _policy_on_path(d, view.points)
    if not points and view is not None and _match(d.location, ("nf_hook_slow",)):
        return Verdict("conntrack",
                       f"a netfilter hook refused it at nf_hook_slow{_where(d)}, and no DROP rule or policy "
                       f"matches it: conntrack or NAT did (its conntrack state: {d.conntrack or 'unknown'}); "
                       f"check 'conntrack -S' and the nat table",
                       {"by": "hook", "conntrack_state": d.conntrack})
    if not points:
        return None
    if len(points) == 1:
        p = points[0]
        what = ("allow the traffic with a rule before it or set the policy to ACCEPT (Docker sets FORWARD to DROP)"
                if p.kind == "policy" else "check whether this rule should match this traffic")
        count = f" ({grown[p.key]} packets in the last second)" if p.key in grown else ""
        return Verdict("netfilter", f"dropped by {p.describe()}{count}{_where(d)}: {what}",
                       _point_detail(p, grown.get(p.key)))
    listed = "; ".join(p.describe() for p in points[:3])
    return Verdict("netfilter", f"dropped by one of: {listed}{_where(d)}",
                   {"by": "one of", "candidates": [_point_detail(p, grown.get(p.key)) for p in points[:3]]})


def _policy_on_path(d: Drop, points) -> list:
    """No counter has moved yet: a chain policy on this packet's path is the likely one."""
    from .netfilter import path_chain

    chain = path_chain(d)
    return [p for p in points if p.kind == "policy" and p.chain.upper() == chain]


def _nat_bypass(d: Drop, ctx) -> Verdict:
    # The sysctl is evidence only when it reads 0: read a moment later than the drop,
    # a 1 proves nothing (and br_netfilter may not even be loaded).
    bnf = ctx.bridge_nf_call_iptables if ctx else None
    evidence = "; the node has net.bridge.bridge-nf-call-iptables=0" if bnf == "0" else ""
    fix = ("set it to 1" if bnf == "0"
           else "check net.bridge.bridge-nf-call-iptables=1 (and br_netfilter) on the node")
    return Verdict("conntrack",
                   f"a SYN-ACK from {d.src}:{d.sport} reached this pod, which never connected to that address: "
                   f"the reply bypassed conntrack and was not translated back to the Service address (a Service "
                   f"and its endpoint on the same bridge){evidence}; the pod answers with a reset: {fix}",
                   {"by": "nat-bypass", "reply_from": f"{d.src}:{d.sport}",
                    **({"bridge_nf_call_iptables": bnf} if bnf == "0" else {})})
