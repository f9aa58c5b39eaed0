"""categories: the registry of drop categories, one entry each, and category_of.

An entry holds all netdrop knows of a category: the drop reason names and
kernel functions that mean it, the ICMP error that gives it away on kernels
without reasons, the sentence of a capture's summary, its console style and
HTML colour, its hint and its lead (the fact that decides, in a few words),
whether it is benign, and its rank among "what to check first". A new
category is one entry here. What each reason means is in causes.py.

Reasons are matched by name (read from the running kernel, never by number:
include/net/dropreason-core.h renumbers between versions).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..kernel.decode import Drop
from . import lead as leads
from . import xfrm
from .causes import CAUSES as CAUSES
from .causes import NOT_ON_A_NODE as NOT_ON_A_NODE
from .evidence import OVERLAY_PORTS, Device, Evidence, Program
from .lead import Detail, Lead
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
    hint: Callable[[Drop, Evidence | None], str]   # one line: the likely cause, with the event's and node's evidence
    benign: bool = False          # expected on a healthy node, nothing to fix
    rank: int = 0                 # "what to check first": by rank (RANK_*), then by drops; lower comes first
    # Its hint reads the node's state (explain/evidence.py), not the event alone: for
    # every drop (True) or for the drops a predicate picks. Reading a namespace's
    # state runs a few commands, so a category asks only where the state can
    # change the hint (a storm of NO_SOCKET in 250 pods must not read 250 pods).
    evidence: bool | Callable[[Drop], bool] = False
    lead: Lead | None = None   # the fact that decides, in a few words: what a console row starts with

    def reads_evidence(self, d: Drop) -> bool:
        return self.evidence(d) if callable(self.evidence) else self.evidence

    def lead_of(self, d: Drop, detail: Detail) -> str | None:
        """The decisive fact for a row; None where the hint reads the node's state (it starts with what
        it found) or the category has no shorter form: then the hint itself leads."""
        return None if self.lead is None or self.reads_evidence(d) else self.lead(d, detail)


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


@dataclass(frozen=True)
class Place:
    functions: tuple[str, ...]    # kernel functions (patterns) that free packets without a specific reason
    cause: str                    # what ends there on a node


# Where NOT_SPECIFIED (and kernels without reasons) free packets on the paths
# a node uses, and what ends there. The category comes from the registry's
# location patterns; this says what the function's drops mean.
PLACES: tuple[Place, ...] = (
    Place(("ip6_mc_input",), "IPv6 multicast for a group nobody on this device joined (ip6_mc_input)"),
    Place(("__udp4_lib_rcv", "__udp6_lib_rcv"),
          "a UDP broadcast or multicast no socket wants, unicast an inbound IPsec policy refused, or a runt"),
    Place(("udp_queue_rcv_one_skb", "udpv6_queue_rcv_one_skb", "udp_queue_rcv_skb"),
          "refused by the UDP socket: an IPsec policy, a socket filter or encapsulation it cannot take"),
    Place(("tcp_v4_rcv", "tcp_v6_rcv", "tcp_rcv_state_process", "tcp_*"),
          "TCP discarded a segment its connection state does not take"),
    Place(("ip_rcv_finish_core*", "ip_rcv_core*", "ip_rcv_finish"),
          "IPv4 input refused it before delivery: bad IP options, or early demux/route lookup failed"),
    Place(("ip_forward",), "not forwardable: not addressed to this host's MAC, or a forwarding IPsec policy"),
    Place(("dst_discard*",), "its route is a blackhole: a blackhole route (Calico blocks), a device going away, "
                             "or an IPsec policy whose state is missing (xfrm_larval_drop)"),
    Place(("__dev_forward_skb*", "veth_xmit", "veth_forward_skb", "veth_*"),
          "a veth could not pass it to its peer: the peer is down or gone, or the packet is larger than the "
          "peer's MTU"),
    Place(("__dev_queue_xmit", "dev_hard_start_xmit", "validate_xmit_skb*"),
          "the device is down, has no queue, or could not segment it"),
    Place(("br_*", "__br_*", "nbp_*"), "the bridge did not forward it: a port not forwarding, no port for its MAC, "
                                       "or a VLAN filter"),
    Place(("vxlan_*", "geneve_*", "ip_tunnel_*", "udp_tunnel_*", "iptunnel_*", "__iptunnel_*", "gre_*", "ipgre_*"),
          "the overlay tunnel could not encapsulate or decapsulate it"),
    Place(("xfrm*", "__xfrm*", "esp_*", "esp4_*", "esp6_*"), "IPsec (xfrm) refused or failed to transform it"),
    Place(("nf_hook_slow", "nft_do_chain*", "ipt_do_table", "ip6t_do_table", "ebt_do_table", "br_nf_*"),
          "a netfilter hook dropped it: a rule, a chain's policy, or a module's verdict"),
    Place(("nf_conntrack_*", "__nf_conntrack_*", "nf_ct_*", "__nf_ct_*", "nf_nat_*", "nf_confirm*"),
          "connection tracking or NAT could not take it (table full, insert race, no NAT mapping)"),
    Place(("igmp*", "mld_*", "ip_mc_*"), "an IGMP/MLD report or multicast copy the device could not send"),
    Place(("icmp_rcv", "icmpv6_rcv", "icmp_*", "icmpv6_*"), "an ICMP message ignored or refused"),
    Place(("__netif_receive_skb*", "netif_receive_*", "deliver_skb"), "no protocol took it on this device"),
    Place(("netlink_*", "__netlink_*", "unix_*", "af_alg_*"), "not network traffic: a netlink or AF_UNIX message"),
    Place(("skb_queue_purge_reason", "__skb_queue_purge*", "kfree_skb_list*", "skb_release_*"),
          "freed with its queue or list: the owner went away"),
)


def cause(d: Drop) -> str:
    """The reason's meaning, or for an unspecific one the meaning of where it was freed."""
    if d.reason and d.reason != "NOT_SPECIFIED":
        return CAUSES.get(d.reason, d.reason)
    place = place_of(d.location)
    return place.cause if place is not None else _why(d)


@functools.lru_cache(maxsize=4096)
def place_of(location: str | None) -> Place | None:
    return next((p for p in PLACES if name_matches(location, p.functions)), None)


def _dev(d: Drop, ev: Evidence | None) -> Device | None:
    return ev.device(d.ifindex, d.ifname) if ev is not None else None


def _state(dev: Device) -> str:
    """"veth1 is UP, no carrier (LOWERLAYERDOWN; its peer, ifindex 2 in ns-b, is down)"."""
    oper = f"{dev.oper}" if dev.oper else ""
    peer = ""
    if dev.kind == "veth" and dev.up and not dev.carrier:
        where = f" in {dev.peer_netns}" if dev.peer_netns else ""
        idx = f", ifindex {dev.peer_ifindex}{where}," if dev.peer_ifindex is not None else ""
        peer = f"its peer{idx} is down"
    detail = "; ".join(x for x in (oper, peer) if x)
    return f"{dev.name} is {dev.state}" + (f" ({detail})" if detail else "")


def _no_carrier(dev: Device | None) -> bool:
    return dev is not None and not (dev.up and dev.carrier)


def _teardown(dev: Device) -> str:
    if dev.kind == "veth" and dev.up:
        return ": the pod at its other end is being torn down or failed (its sandbox's eth0 is down)"
    return ": bring it up, or find what took it down ('ip link show', the CNI's log)"


def _mtu(d: Drop, ev: Evidence | None = None) -> str:
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


def _netfilter(d: Drop, ev: Evidence | None = None) -> str:
    return (f"a firewall rule or a chain's DROP policy discarded it in {d.location or 'netfilter'}"
            f"{on_device(d)}: check 'iptables -S' and 'nft list ruleset' in this namespace "
            f"(e.g. FORWARD policy DROP)")


def _conntrack(d: Drop, ev: Evidence | None = None) -> str:
    return (f"connection tracking refused it at {d.location}: check 'conntrack -S' (insert_failed, "
            f"drop, invalid) and nf_conntrack_count against nf_conntrack_max")


def _no_socket(d: Drop, ev: Evidence | None = None) -> str:
    if (refused := xfrm.before_socket(d, ev.xfrm if ev is not None else None)) is not None:
        return refused
    proto = (d.proto or "").upper() or "the"
    icmp = " (ICMP port unreachable sent back)" if d.icmp_sent == ICMP_PORT_UNREACH else ""
    if d.proto == "udp" and d.dport in OVERLAY_PORTS and ev is not None:
        # An overlay packet nobody takes: the VXLAN port differs between the nodes.
        others = [x for x in ev.vxlans() if x.vxlan is not None and x.vxlan.port != d.dport]
        if others:
            return (f"VXLAN/Geneve packet to UDP port {d.dport} from {d.src or '?'}{icmp}, but {_vxlan_list(ev)}: "
                    f"the nodes disagree on the overlay port: make them equal")
    return (f"nothing listens on {proto} {destination(d)}{icmp}: the server is not running, "
            f"not ready, or bound to another address or port")


def _no_route(d: Drop, ev: Evidence | None = None) -> str:
    if name_matches(d.location, ("dst_discard*",)):
        x = ev.xfrm if ev is not None else None
        if x is not None and x.count("out") and x.states == 0:
            n = x.count("out")
            return (f"{d.flow} met a blackhole: this namespace has {n} outbound IPsec "
                    f"{'policy' if n == 1 else 'policies'} and no IPsec state: a policy without its state (SA) "
                    f"discards what it matches (xfrm_larval_drop); the IPsec agent has not installed its keys")
        return f"{d.flow}: {cause(d)}: check 'ip route get {d.dst or 'DST'}' and 'ip xfrm policy'"
    return (f"no route to {d.dst or 'the destination'}{on_device(d)} ({_why(d)}): add the route for its "
            f"network, e.g. the missing pod CIDR route to another node, or a default route")


def _neighbor(d: Drop, ev: Evidence | None = None) -> str:
    return (f"the next hop{on_device(d)} did not answer ARP/ND ({_why(d)}): the neighbour is down or on "
            f"another L2 segment; check 'ip neigh show'")


def _rp_filter(d: Drop, ev: Evidence | None = None) -> str:
    return (f"source {d.src or '?'} failed the reverse-path/source check{on_device(d)} ({_why(d)}): the route "
            f"back to it leaves by another interface; check rp_filter and the routes to {d.src or 'it'}")


def _tcp(d: Drop, ev: Evidence | None = None) -> str:
    return (f"TCP discarded a segment of {d.flow} ({_why(d)}): a stale, out-of-window or "
            f"unexpected segment, usually after a reset or lost connection state")


def _socket_buffer(d: Drop, ev: Evidence | None = None) -> str:
    return (f"the receiving socket for {destination(d)} is full ({_why(d)}): the application reads too "
            f"slowly; raise its receive buffer or backlog, or give it more CPU")


def _qdisc(d: Drop, ev: Evidence | None = None) -> str:
    dev = _dev(d, ev)
    if _no_carrier(dev):
        assert dev is not None
        # A device without carrier has the noop qdisc (net/sched/sch_generic.c dev_deactivate):
        # every packet sent to it is a QDISC_DROP, not an overload.
        return f"{_state(dev)}: packets sent to it are dropped{_teardown(dev)}"
    return (f"a queue or traffic-control rule dropped it{on_device(d)} ({_why(d)}): the device is "
            f"overloaded or a tc filter drops; check 'tc -s qdisc show'")


def _malformed(d: Drop, ev: Evidence | None = None) -> str:
    return f"bad packet ({_why(d)}): truncated, bad header or checksum; check the sender or NIC offloads"


def _other(d: Drop, ev: Evidence | None = None) -> str:
    found = cause(d)
    why = f": {found}" if found != _why(d) else ""
    return f"dropped in {d.location or 'an unknown function'} ({_why(d)}){why}"


def _vxlan_list(ev: Evidence) -> str:
    vx = ev.vxlans()
    if not vx:
        return "no VXLAN device here"
    return "VXLAN here: " + ", ".join(
        f"{d.name} VNI {d.vxlan.vni if d.vxlan and d.vxlan.vni is not None else '?'} port "
        f"{d.vxlan.port if d.vxlan and d.vxlan.port is not None else '?'}" for d in vx[:4])


def _overlay(d: Drop, ev: Evidence | None = None) -> str:
    if d.reason == "VXLAN_VNI_NOT_FOUND":
        known = f" ({_vxlan_list(ev)})" if ev is not None else ""
        return (f"a VXLAN packet from {d.src or '?'}{on_device(d)} carries a VNI no VXLAN device here has{known}: "
                f"the nodes disagree on the overlay's VNI (flannel's VNI, Calico's vxlanVNI): make them equal")
    if d.reason == "NO_TX_TARGET" or (d.reason in (None, "NOT_SPECIFIED") and d.location == "vxlan_xmit"):
        dev = _dev(d, ev)
        vx = dev.vxlan if dev is not None else None
        fdb = ""
        if dev is not None and vx is not None:
            fdb = (f": {dev.name} (VNI {vx.vni}) has no default remote and "
                   f"{vx.fdb_entries if vx.fdb_entries is not None else '?'} FDB entries"
                   + (f" ({', '.join(vx.fdb_remotes)})" if vx.fdb_remotes else ""))
        return (f"the overlay had no remote node for {d.dst or 'the packet'}{on_device(d)}{fdb}: the CNI has not "
                f"programmed the FDB/neighbour entry for the other node's VTEP ('bridge fdb show dev DEV')")
    return f"the overlay dropped it{on_device(d)}: {cause(d)} ({_why(d)} in {d.location or '?'})"


def _device(d: Drop, ev: Evidence | None = None) -> str:
    dev = _dev(d, ev)
    if d.reason == "BRIDGE_INGRESS_STP_STATE":
        if dev is not None and dev.port_state:
            return (f"bridge port {dev.name} of {dev.master or 'its bridge'} is {dev.port_state}, not forwarding: "
                    f"STP holds it (blocking, listening, learning) or the port is disabled; a pod bridge wants "
                    f"STP off ('bridge link show')")
        return f"a bridge port{on_device(d)} is not forwarding (STP state): check 'bridge link show'"
    if d.reason == "IPV6DISABLED":
        if dev is not None and dev.disable_ipv6:
            return (f"IPv6 is disabled on {dev.name} (net.ipv6.conf.{dev.name}.disable_ipv6=1), and "
                    f"{d.src or 'a peer'} sent it IPv6: a dual-stack Service or peer reaches a single-stack pod; "
                    f"make the Service SingleStack or enable IPv6 there")
        return f"IPv6 arrived{on_device(d)} where IPv6 is disabled (disable_ipv6): a dual-stack peer, single-stack pod"
    if d.reason == "IP_LOCALNET":
        what = (f"{d.dst} (127.0.0.0/8) came in from outside" if d.dst and d.dst.startswith("127.")
                else f"a packet from {d.src or '?'} (127.0.0.0/8) came in from outside")
        if dev is not None and dev.route_localnet is False:
            return (f"{what} on {dev.name}, where route_localnet is 0 (net.ipv4.conf.{dev.name}.route_localnet): "
                    f"a NodePort or hostPort on localhost is reached from outside only with route_localnet=1 "
                    f"(kube-proxy sets it for --nodeport-addresses 127.0.0.1); else nothing should send to 127/8")
        return f"{what}{on_device(d)}: 127.0.0.0/8 is refused unless route_localnet is set"
    if dev is not None and _no_carrier(dev):
        return f"{_state(dev)}: {cause(d)}{_teardown(dev)}"
    if d.reason in (None, "NOT_SPECIFIED") and dev is not None and dev.kind == "veth" and dev.mtu \
            and d.len > dev.mtu:
        return f"{d.len}-byte packet is larger than {dev.name}'s MTU {dev.mtu}: {cause(d)}"
    state = f" ({dev.name} is {dev.state})" if dev is not None else ""
    return f"{cause(d)}{on_device(d)}{state}"


def _programs(found: list[Program], none: str) -> str:
    if not found:
        return none
    more = f" and {len(found) - 2} more" if len(found) > 2 else ""
    return "; ".join(str(p) for p in found[:2]) + more


def _bpf_program(d: Drop, ev: Evidence | None = None) -> str:
    reason = d.reason or ""
    node = ev.node if ev is not None else None
    if reason in ("BPF_CGROUP_EGRESS", "SOCKET_FILTER"):
        hook = "egress" if reason == "BPF_CGROUP_EGRESS" else "ingress"
        seen = ""
        if node is not None and node.cgroup_programs is not None:
            seen = ": " + _programs([p for p in node.cgroup_programs if hook in p.hook],
                                    f"no cgroup {hook} program visible to bpftool now")
        return f"{cause(d)}, flow {d.flow}{seen} (a CNI's policy, or a security agent's program)"
    if reason in ("TC_INGRESS", "TC_EGRESS", "XDP"):
        hook = "xdp" if reason == "XDP" else ("tc ingress" if reason == "TC_INGRESS" else "tc egress")
        seen = ""
        if ev is not None and ev.programs is not None:
            seen = ": " + _programs(ev.programs_on(d.ifname, hook), f"no BPF program at {hook} of "
                                    f"{d.ifname or 'the device'}: a tc filter action (drop, police) did "
                                    f"('tc filter show dev {d.ifname or 'DEV'} {hook.split()[-1]}')")
        return f"{cause(d)}{on_device(d)}{seen}"
    if reason == "SECURITY_HOOK":
        lsm = f" (active: {', '.join(node.lsm)})" if node is not None and node.lsm else ""
        return f"{cause(d)}{lsm}: flow {d.flow}; check the audit log and the security agent's policies"
    return f"{cause(d)}{on_device(d)}"


def _ipsec(d: Drop, ev: Evidence | None = None) -> str:
    # UDP's no-socket path says NOT_SPECIFIED for the refusal (classify.event_category).
    return xfrm.hint(d, ev.xfrm if ev is not None else None,
                     CAUSES["XFRM_POLICY"] if d.reason == "NOT_SPECIFIED" else cause(d))


def _memory(d: Drop, ev: Evidence | None = None) -> str:
    mem = ev.node.memory if ev is not None and ev.node is not None else None
    now = f": {mem}" if mem is not None else ""
    return (f"{cause(d)}{on_device(d)}{now}; check the node's memory (free -m, /proc/pressure/memory) and "
            f"which pods use it")


# In the order categories are shown (the console, a summary's counts and timeline).
REGISTRY: tuple[Category, ...] = (
    Category("mtu", ("PKT_TOO_BIG", "FRAG_REASM_TIMEOUT", "FRAG_TOO_FAR", "DUP_FRAG"), (), (ICMP_FRAG_NEEDED,),
             "packets larger than the path MTU were dropped", "bold magenta", "#8e44ad", _mtu, rank=RANK_BREAKS,
             lead=leads.mtu),
    # nft_do_chain frees the packet itself (nftables, iptables-nft); legacy
    # xtables and other hooks return NF_DROP and nf_hook_slow frees it.
    Category("netfilter", ("NETFILTER_DROP",),
             ("nft_do_chain*", "ipt_do_table", "ip6t_do_table", "arpt_do_table", "ebt_do_table", "nf_hook_slow",
              "br_nf_*"), (),
             "a firewall rule or chain policy dropped packets", "bold red", "#c0392b", _netfilter, rank=RANK_BREAKS,
             lead=leads.netfilter),
    # Conntrack's refusals reach kfree_skb as NETFILTER_DROP too: where it was freed tells them apart.
    Category("conntrack", ("NETFILTER_DROP",),
             ("nf_conntrack_*", "__nf_conntrack_*", "nf_ct_*", "__nf_ct_*", "nf_nat_*", "nf_confirm*"), (),
             "connection tracking refused packets", "red", "#e74c3c", _conntrack, rank=RANK_BREAKS,
             lead=leads.conntrack),
    # SOCKET_CLOSE: tcp_close()/udp_destroy_sock() purge what the application never read.
    Category("no-socket", ("NO_SOCKET", "IP_NOPROTO", "SOCKET_CLOSE"), (), (ICMP_PORT_UNREACH,),
             "packets reached a port nobody listens on", "yellow", "#f39c12", _no_socket, rank=RANK_ENDPOINT,
             lead=leads.no_socket,
             # an overlay port mismatch; IPv6 UDP, which an inbound IPsec policy may have refused
             # (__udp6_lib_rcv() says NO_SOCKET for it, and ICMPv6 errors are not seen: xfrm.py)
             evidence=lambda d: d.proto == "udp" and (d.dport in OVERLAY_PORTS or d.family == 6)),
    # dst_discard*: the input/output of a blackhole route (net/core/dst.c), also
    # what an IPsec policy without its state routes to (net/xfrm/xfrm_policy.c
    # make_blackhole, with xfrm_larval_drop).
    Category("no-route", ("IP_INNOROUTES", "IP_OUTNOROUTES", "IP_INADDRERRORS", "IP_INVALID_DEST"),
             ("ip_error", "ip_route_input*", "ip6_pkt_drop", "ip6_pkt_discard*", "ip_rt_bug", "dst_discard*"),
             ICMP_NET_HOST_UNREACH, "packets had no route", "bold yellow", "#d35400", _no_route, rank=RANK_BREAKS,
             lead=leads.no_route,
             evidence=lambda d: name_matches(d.location, ("dst_discard*",))),   # only a blackhole (IPsec)
    Category("neighbor", ("NEIGH_*", "ARP_*"), ("neigh_*", "arp_*", "__neigh_*", "ndisc_*"), (),
             "the next hop did not answer ARP/ND", "cyan", "#16a085", _neighbor, rank=RANK_BREAKS, lead=leads.neighbor),
    Category("rp-filter", ("IP_RPFILTER", "IP_INVALID_SOURCE", "IP_LOCAL_SOURCE"), (), (),
             "packets failed the reverse-path / source check", "blue", "#2980b9", _rp_filter, rank=RANK_BREAKS,
             lead=leads.rp_filter),
    # The overlay between nodes (VXLAN, Geneve, IP tunnels): drivers/net/vxlan/vxlan_core.c
    # (vxlan_rcv, vxlan_xmit_one), net/ipv4/ip_tunnel_core.c.
    Category("overlay", ("VXLAN_VNI_NOT_FOUND", "VXLAN_ENTRY_EXISTS", "VXLAN_INVALID_HDR", "NO_TX_TARGET",
                         "TUNNEL_TXINFO", "IP_TUNNEL_ECN"),
             ("vxlan_*", "geneve_*", "ip_tunnel_*", "iptunnel_*", "__iptunnel_*", "udp_tunnel_*", "ipgre_*",
              "gre_*"), (),
             "the overlay between nodes dropped packets", "bold bright_cyan", "#00a8a8", _overlay, rank=RANK_BREAKS,
             evidence=True),
    # A device's state or settings: down or without carrier (a veth whose peer
    # is down), a bridge port not forwarding, disable_ipv6, route_localnet.
    Category("device", ("DEV_READY", "NO_TX_TARGET", "BRIDGE_INGRESS_STP_STATE", "IPV6DISABLED", "IP_LOCALNET",
                        "LOCAL_MAC", "UNICAST_IN_L2_MULTICAST", "TAP_TXFILTER", "RECURSION_LIMIT"),
             ("veth_*", "__dev_forward_skb*", "dev_forward_skb*", "br_*", "__br_*", "nbp_*"), (),
             "a device's state or settings refused packets", "bold bright_yellow", "#b8860b", _device,
             rank=RANK_BREAKS, evidence=True),
    # Programs and policies of CNIs and security agents: cgroup, tc and XDP
    # BPF programs, socket filters, Linux security modules.
    Category("bpf-program", ("BPF_CGROUP_EGRESS", "SOCKET_FILTER", "TC_INGRESS", "TC_EGRESS", "XDP", "TAP_FILTER",
                             "SECURITY_HOOK"), (), (),
             "a BPF program or security module dropped packets", "bold bright_green", "#2d8659", _bpf_program,
             rank=RANK_BREAKS, evidence=True),
    Category("ipsec", ("XFRM_POLICY", "PSP_*"), ("xfrm*", "__xfrm*", "esp_*", "esp4_*", "esp6_*"), (),
             "IPsec refused packets", "bold bright_blue", "#34495e", _ipsec, rank=RANK_BREAKS, evidence=True),
    # TCP_CSUM is tcp (TCP_* comes before malformed's *_CSUM), as it always was.
    Category("tcp", ("TCP_*",), ("tcp_*",), (),
             "TCP discarded segments", "green", "#27ae60", _tcp, rank=RANK_ENDPOINT, lead=leads.tcp),
    # Exact names beat tcp's TCP_* (category_of).
    Category("socket-buffer", ("TCP_LISTEN_OVERFLOW", "TCP_ZEROWINDOW", "TCP_OFO_QUEUE_PRUNE", "SOCKET_RCVBUFF",
                               "SOCKET_BACKLOG", "PROTO_MEM", "PACKET_SOCK_ERROR"), (), (),
             "receiving sockets were full", "bright_magenta", "#e84393", _socket_buffer, rank=RANK_LOAD,
             lead=leads.socket_buffer),
    Category("qdisc", ("QDISC_*", "CAKE_FLOOD", "FQ_*", "CPU_BACKLOG", "FULL_RING", "TC_*", "DUALPI2_*"),
             ("sch_*", "*qdisc*", "__dev_queue_xmit", "enqueue_to_backlog", "pfifo_*"), (),
             "queues or traffic control dropped packets", "bright_blue", "#0984e3", _qdisc, rank=RANK_LOAD,
             lead=leads.qdisc,
             # Only a device's own queue can be a carrier-less noop qdisc; a full CPU backlog never is.
             evidence=lambda d: d.ifname is not None and d.reason in (None, "QDISC_DROP", "NOT_SPECIFIED")),
    Category("memory", ("NOMEM", "PFMEMALLOC"), (), (),
             "the kernel ran short of memory", "bold bright_red", "#8b0000", _memory, rank=RANK_LOAD, evidence=True),
    Category("malformed", ("*_CSUM", "PKT_TOO_SMALL", "IP_INHDR", "HDR_TRUNC", "INVALID_PROTO", "DEV_HDR",
                           "IPV6_BAD_EXTHDR", "MAC_INVALID_SOURCE", "SKB_GSO_SEG", "SKB_UCOPY_FAULT",
                           # Not IPV6_NDISC_*: NS_OTHERHOST is a good solicitation for another host (benign).
                           "IPV6_NDISC_FRAG", "IPV6_NDISC_HOP_LIMIT", "IPV6_NDISC_BAD_CODE",
                           "IPV6_NDISC_BAD_OPTIONS"), (), (),
             "malformed packets were dropped", "bright_red", "#b71540", _malformed, rank=RANK_MALFORMED,
             lead=leads.malformed),
    # Unspecific, often the node's own noise: listed last. The reasons named
    # here are decided as "other" on purpose (CAUSES says what each means).
    Category("other", ("OTHERHOST", "UNHANDLED_PROTO", "QUEUE_PURGE", "IPV6_NDISC_NS_OTHERHOST",
                       "MAC_IEEE_MAC_CONTROL"), (), (),
             "other drops", "white", "#7f8c8d", _other, rank=RANK_OTHER, lead=leads.other),
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
