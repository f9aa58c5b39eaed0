"""categories: the registry of drop categories, one entry each, and how a drop maps to one (category_of).

An entry holds all netdrop knows of a category: the drop reason names and
kernel functions that mean it, the ICMP error that gives it away on kernels
without reasons, the sentence of a capture's summary, its console style and
HTML colour, its rank among "what to check first", which drops its hint reads
the node's state for, its hint (a function in hints.py), its lead (a function
in lead.py: the fact that decides, in a few words) and whether it breaks a pod's
path (then the agent writes Events on the pod). A new category is one entry
here and its hint function in hints.py. What a reason or a freeing function
means, whatever its category, is in causes.py; drops every healthy node makes
are told apart by benign.py, from the packet's facts.

Reasons are matched by name (read from the running kernel, never by number:
include/net/dropreason-core.h renumbers between versions).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..kernel.decode import Drop
from . import hints
from . import lead as leads
from .evidence import OVERLAY_PORTS, Evidence
from .lead import Detail, Lead
from .verdict import ICMP_FRAG_NEEDED, ICMP_NET_HOST_UNREACH, ICMP_PORT_UNREACH, name_matches


@dataclass(frozen=True)
class Category:
    name: str
    reasons: tuple[str, ...]      # drop reason name patterns (without SKB_DROP_REASON_)
    locations: tuple[str, ...]    # kernel functions that drop for it: with no reason, or to tell one reason apart
    icmp: tuple[tuple[int, int], ...]   # ICMP errors (type, code) sent just before: the sign without a reason
    verdict: str                  # one sentence of a capture's summary
    style: str                    # console (rich style)
    colour: str                   # HTML summary (CSS colour)
    hint: Callable[[Drop, Evidence | None], str]   # one line: the likely cause, with the event's and node's evidence
    rank: int = 0                 # "what to check first": by rank (RANK_*), then by drops; lower comes first
    # Its hint reads the node's state (explain/evidence.py), not the event alone: for
    # every drop (True) or for the drops a predicate picks. Reading a namespace's
    # state runs a few commands, so a category asks only where the state can
    # change the hint (a storm of NO_SOCKET in 250 pods must not read 250 pods).
    evidence: bool | Callable[[Drop], bool] = False
    lead: Lead | None = None   # the fact that decides, in a few words: what a console row starts with
    # The pod's path itself breaks (every retry meets the same drop), so the agent says so on the
    # pod's own Events (agent/podevents.py): not a load, endpoint, malformed or local category.
    path_breaking: bool = False

    def reads_evidence(self, d: Drop) -> bool:
        return self.evidence(d) if callable(self.evidence) else self.evidence

    def lead_of(self, d: Drop, detail: Detail) -> str | None:
        """The decisive fact for a row; None where the hint reads the node's state (it starts with what
        it found) or the category has no shorter form: then the hint itself leads."""
        return None if self.lead is None or self.reads_evidence(d) else self.lead(d, detail)


# How much a category's drops hurt, for "what to check first": a thousand
# NO_SOCKET drops must not bury one MTU drop. Benign drops
# (explain/benign.py) come after every rank, whatever their category.
RANK_BREAKS = 0       # the path itself refuses packets: every retry fails the same way
RANK_LOAD = 1         # packets lost under load: queues and socket buffers overflowing
RANK_MALFORMED = 2    # bad packets: the sender's or a NIC's fault, rarely the node's
RANK_ENDPOINT = 3     # the path works, an endpoint said no: nothing listening, TCP state
RANK_OTHER = 4        # unspecific, often the node's own noise


# In the order categories are shown (the console, a summary's counts and timeline).
REGISTRY: tuple[Category, ...] = (
    Category("mtu", ("PKT_TOO_BIG", "FRAG_REASM_TIMEOUT", "FRAG_TOO_FAR", "DUP_FRAG"), (), (ICMP_FRAG_NEEDED,),
             "packets larger than the path MTU were dropped", "bold magenta", "#8e44ad", hints.mtu,
             rank=RANK_BREAKS, lead=leads.mtu, path_breaking=True),
    # nft_do_chain frees the packet itself (nftables, iptables-nft); legacy
    # xtables and other hooks return NF_DROP and nf_hook_slow frees it.
    Category("netfilter", ("NETFILTER_DROP",),
             ("nft_do_chain*", "ipt_do_table", "ip6t_do_table", "arpt_do_table", "ebt_do_table", "nf_hook_slow",
              "br_nf_*"), (),
             "a firewall rule or chain policy dropped packets", "bold red", "#c0392b", hints.netfilter,
             rank=RANK_BREAKS, lead=leads.netfilter, path_breaking=True),
    # Conntrack's refusals reach kfree_skb as NETFILTER_DROP too: where it was freed tells them apart.
    Category("conntrack", ("NETFILTER_DROP",),
             ("nf_conntrack_*", "__nf_conntrack_*", "nf_ct_*", "__nf_ct_*", "nf_nat_*", "nf_confirm*"), (),
             "connection tracking refused packets", "red", "#e74c3c", hints.conntrack, rank=RANK_BREAKS,
             lead=leads.conntrack, path_breaking=True),
    # SOCKET_CLOSE: tcp_close()/udp_destroy_sock() purge what the application never read.
    Category("no-socket", ("NO_SOCKET", "IP_NOPROTO", "SOCKET_CLOSE"), (), (ICMP_PORT_UNREACH,),
             "packets reached a port nobody listens on", "yellow", "#f39c12", hints.no_socket, rank=RANK_ENDPOINT,
             lead=leads.no_socket,
             # an overlay port mismatch; IPv6 UDP, which an inbound IPsec policy may have refused
             # (__udp6_lib_rcv() says NO_SOCKET for it, and ICMPv6 errors are not seen: xfrm.py)
             evidence=lambda d: d.proto == "udp" and (d.dport in OVERLAY_PORTS or d.family == 6)),
    # dst_discard*: the input/output of a blackhole route (net/core/dst.c), also
    # what an IPsec policy without its state routes to (net/xfrm/xfrm_policy.c
    # make_blackhole, with xfrm_larval_drop).
    Category("no-route", ("IP_INNOROUTES", "IP_OUTNOROUTES", "IP_INADDRERRORS", "IP_INVALID_DEST"),
             ("ip_error", "ip_route_input*", "ip6_pkt_drop", "ip6_pkt_discard*", "ip_rt_bug", "dst_discard*"),
             ICMP_NET_HOST_UNREACH, "packets had no route", "bold yellow", "#d35400", hints.no_route,
             rank=RANK_BREAKS, lead=leads.no_route, path_breaking=True,
             evidence=lambda d: name_matches(d.location, ("dst_discard*",))),   # only a blackhole (IPsec)
    Category("neighbor", ("NEIGH_*", "ARP_*"), ("neigh_*", "arp_*", "__neigh_*", "ndisc_*"), (),
             "the next hop did not answer ARP/ND", "cyan", "#16a085", hints.neighbor, rank=RANK_BREAKS,
             lead=leads.neighbor, path_breaking=True),
    Category("rp-filter", ("IP_RPFILTER", "IP_INVALID_SOURCE", "IP_LOCAL_SOURCE"), (), (),
             "packets failed the reverse-path / source check", "blue", "#2980b9", hints.rp_filter, rank=RANK_BREAKS,
             lead=leads.rp_filter, path_breaking=True),
    # The overlay between nodes (VXLAN, Geneve, IP tunnels): drivers/net/vxlan/vxlan_core.c
    # (vxlan_rcv, vxlan_xmit_one), net/ipv4/ip_tunnel_core.c.
    Category("overlay", ("VXLAN_VNI_NOT_FOUND", "VXLAN_ENTRY_EXISTS", "VXLAN_INVALID_HDR", "NO_TX_TARGET",
                         "TUNNEL_TXINFO", "IP_TUNNEL_ECN"),
             ("vxlan_*", "geneve_*", "ip_tunnel_*", "iptunnel_*", "__iptunnel_*", "udp_tunnel_*", "ipgre_*",
              "gre_*"), (),
             "the overlay between nodes dropped packets", "bold bright_cyan", "#00a8a8", hints.overlay,
             rank=RANK_BREAKS, evidence=True, path_breaking=True),
    # A device's state or settings: down or without carrier (a veth whose peer
    # is down), a bridge port not forwarding, disable_ipv6, route_localnet.
    Category("device", ("DEV_READY", "NO_TX_TARGET", "BRIDGE_INGRESS_STP_STATE", "IPV6DISABLED", "IP_LOCALNET",
                        "LOCAL_MAC", "UNICAST_IN_L2_MULTICAST", "TAP_TXFILTER", "RECURSION_LIMIT"),
             ("veth_*", "__dev_forward_skb*", "dev_forward_skb*", "br_*", "__br_*", "nbp_*"), (),
             "a device's state or settings refused packets", "bold bright_yellow", "#b8860b", hints.device,
             rank=RANK_BREAKS, evidence=True, path_breaking=True),
    # Programs and policies of CNIs and security agents: cgroup, tc and XDP
    # BPF programs, socket filters, Linux security modules.
    Category("bpf-program", ("BPF_CGROUP_EGRESS", "SOCKET_FILTER", "TC_INGRESS", "TC_EGRESS", "XDP", "TAP_FILTER",
                             "SECURITY_HOOK"), (), (),
             "a BPF program or security module dropped packets", "bold bright_green", "#2d8659", hints.bpf_program,
             rank=RANK_BREAKS, evidence=True, path_breaking=True),
    Category("ipsec", ("XFRM_POLICY", "PSP_*"), ("xfrm*", "__xfrm*", "esp_*", "esp4_*", "esp6_*"), (),
             "IPsec refused packets", "bold bright_blue", "#34495e", hints.ipsec, rank=RANK_BREAKS, evidence=True,
             path_breaking=True),
    # TCP_CSUM is tcp: TCP_* comes before malformed's *_CSUM.
    Category("tcp", ("TCP_*",), ("tcp_*",), (),
             "TCP discarded segments", "green", "#27ae60", hints.tcp, rank=RANK_ENDPOINT, lead=leads.tcp),
    # Exact names beat tcp's TCP_* (category_of).
    Category("socket-buffer", ("TCP_LISTEN_OVERFLOW", "TCP_ZEROWINDOW", "TCP_OFO_QUEUE_PRUNE", "SOCKET_RCVBUFF",
                               "SOCKET_BACKLOG", "PROTO_MEM", "PACKET_SOCK_ERROR"), (), (),
             "receiving sockets were full", "bright_magenta", "#e84393", hints.socket_buffer, rank=RANK_LOAD,
             lead=leads.socket_buffer),
    Category("qdisc", ("QDISC_*", "CAKE_FLOOD", "FQ_*", "CPU_BACKLOG", "FULL_RING", "TC_*", "DUALPI2_*"),
             ("sch_*", "*qdisc*", "__dev_queue_xmit", "enqueue_to_backlog", "pfifo_*"), (),
             "queues or traffic control dropped packets", "bright_blue", "#0984e3", hints.qdisc, rank=RANK_LOAD,
             lead=leads.qdisc,
             # Only a device's own queue can be a carrier-less noop qdisc; a full CPU backlog never is.
             evidence=lambda d: d.ifname is not None and d.reason in (None, "QDISC_DROP", "NOT_SPECIFIED")),
    Category("memory", ("NOMEM", "PFMEMALLOC"), (), (),
             "the kernel ran short of memory", "bold bright_red", "#8b0000", hints.memory, rank=RANK_LOAD,
             evidence=True),
    Category("malformed", ("*_CSUM", "PKT_TOO_SMALL", "IP_INHDR", "HDR_TRUNC", "INVALID_PROTO", "DEV_HDR",
                           "IPV6_BAD_EXTHDR", "MAC_INVALID_SOURCE", "SKB_GSO_SEG", "SKB_UCOPY_FAULT",
                           # Not IPV6_NDISC_*: NS_OTHERHOST is a good solicitation for another host (benign).
                           "IPV6_NDISC_FRAG", "IPV6_NDISC_HOP_LIMIT", "IPV6_NDISC_BAD_CODE",
                           "IPV6_NDISC_BAD_OPTIONS"), (), (),
             "malformed packets were dropped", "bright_red", "#b71540", hints.malformed, rank=RANK_MALFORMED,
             lead=leads.malformed),
    # Unspecific, often the node's own noise: listed last. The reasons named
    # here are decided as "other" on purpose (CAUSES says what each means).
    Category("other", ("OTHERHOST", "UNHANDLED_PROTO", "QUEUE_PURGE", "IPV6_NDISC_NS_OTHERHOST",
                       "MAC_IEEE_MAC_CONTROL"), (), (),
             "other drops", "white", "#7f8c8d", hints.other, rank=RANK_OTHER, lead=leads.other),
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
