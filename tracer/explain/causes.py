"""causes: what a drop means on a node, in plain words: its reason's, or where it was freed.

Meanings, not categories: which category a drop is in is the registry's
(categories.py), and a category's hint (hints.py) builds on these sentences
when it has nothing better. Every reason of the kernel's list is in CAUSES or
in NOT_ON_A_NODE (tests/unit/explain/test_reasons.py walks the list); PLACES says what
an unspecific drop means by the function that freed it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from ..kernel.decode import Drop
from .verdict import name_matches

# The category comes from the registry's patterns; this is the sentence a hint
# builds on. Sources: include/net/dropreason-core.h and the functions named.
CAUSES: Mapping[str, str] = {
    "NOT_SPECIFIED": "no reason given: where it was freed tells",
    "NO_SOCKET": "no socket for its destination port",
    "SOCKET_CLOSE": "its socket was closing: data that arrived after the application closed it is discarded",
    "SOCKET_FILTER": "a filter on the receiving socket refused it (SO_ATTACH_FILTER, or a cgroup ingress BPF program)",
    "SOCKET_RCVBUFF": "the receiving socket's buffer was full",
    "PKT_TOO_SMALL": "shorter than its headers say",
    "TCP_CSUM": "bad TCP checksum",
    "UDP_CSUM": "bad UDP checksum",
    "NETFILTER_DROP": "a netfilter hook returned NF_DROP",
    "OTHERHOST": "a frame for another host's MAC reached IP input (a promiscuous device: a bridge port, tcpdump, "
                 "macvlan): the IP layer discards what is not for this host",
    "IP_CSUM": "bad IP header checksum",
    "IP_INHDR": "bad IPv4/IPv6 header (version, length, or TTL expired)",
    "IP_RPFILTER": "the reverse-path filter (rp_filter) found no route back to the source by this device",
    "UNICAST_IN_L2_MULTICAST": "an IP unicast packet in an L2 broadcast or multicast frame, refused because "
                               "drop_unicast_in_l2_multicast is set",
    "XFRM_POLICY": "an IPsec (xfrm) policy refused it: it demands a transform the packet lacks, or blocks it",
    "IP_NOPROTO": "no handler for its IP protocol (e.g. SCTP or GRE without the module)",
    "PROTO_MEM": "the protocol's memory limit (tcp_mem/udp_mem) was reached",
    "TCP_AUTH_HDR": "TCP authentication option (MD5 or AO) missing or bad: e.g. a BGP session's password",
    "TCP_MD5NOTFOUND": "TCP MD5 signature expected but missing: a BGP peer's password (Calico, MetalLB) differs",
    "TCP_MD5UNEXPECTED": "TCP MD5 signature present where none is configured: a BGP peer's password differs",
    "TCP_MD5FAILURE": "TCP MD5 signature wrong: a BGP peer's password differs",
    "TCP_AONOTFOUND": "TCP-AO expected but missing", "TCP_AOUNEXPECTED": "TCP-AO present where none is configured",
    "TCP_AOKEYNOTFOUND": "TCP-AO key unknown", "TCP_AOFAILURE": "TCP-AO signature wrong",
    "SOCKET_BACKLOG": "the socket's backlog was full while the application held it",
    "TCP_FLAGS": "TCP flags invalid for the connection's state",
    "TCP_ABORT_ON_DATA": "data for a socket the application already closed (the peer gets a reset)",
    "TCP_ZEROWINDOW": "the receiver's window was zero: the application does not read",
    "TCP_OLD_DATA": "data already received (a retransmission)",
    "TCP_OVERWINDOW": "data beyond the receive window",
    "TCP_OFOMERGE": "out-of-order data already queued",
    "TCP_RFC7323_PAWS": "timestamp older than the last seen (PAWS): often two clients behind one NAT",
    "TCP_RFC7323_PAWS_ACK": "ACK with an old timestamp (PAWS)",
    "TCP_RFC7323_TW_PAWS": "old timestamp for a connection in TIME_WAIT (PAWS): a port reused too soon behind NAT",
    "TCP_RFC7323_TSECR": "timestamp echo reply invalid",
    "TCP_LISTEN_OVERFLOW": "the listen queue was full: the server accepts too slowly",
    "TCP_OLD_SEQUENCE": "segment with an old sequence number",
    "TCP_INVALID_SEQUENCE": "segment outside the window",
    "TCP_INVALID_END_SEQUENCE": "segment's end outside the window",
    "TCP_INVALID_ACK_SEQUENCE": "ACK of data never sent",
    "TCP_RESET": "a reset (RST) ended the connection",
    "TCP_INVALID_SYN": "SYN for an existing connection",
    "TCP_CLOSE": "the connection was closed",
    "TCP_FASTOPEN": "TCP Fast Open data refused",
    "TCP_OLD_ACK": "ACK older than the last", "TCP_TOO_OLD_ACK": "ACK far older than the last",
    "TCP_ACK_UNSENT_DATA": "ACK of data not sent yet",
    "TCP_OFO_QUEUE_PRUNE": "out-of-order queue pruned for memory",
    "TCP_OFO_DROP": "out-of-order segment beyond the window",
    "IP_OUTNOROUTES": "no route for a packet this host sends",
    "BPF_CGROUP_EGRESS": "a BPF program on the sending socket's cgroup refused it at egress",
    "IPV6DISABLED": "IPv6 is disabled on the receiving device (disable_ipv6)",
    "NEIGH_CREATEFAIL": "no neighbour entry could be made (the neighbour table is full: gc_thresh3)",
    "NEIGH_FAILED": "the next hop did not answer ARP/ND",
    "NEIGH_QUEUEFULL": "too many packets waited for ARP/ND to resolve",
    "NEIGH_DEAD": "the neighbour entry was being removed",
    "NEIGH_HH_FILLFAIL": "the link-layer header could not be built",
    "TC_EGRESS": "a tc filter or BPF program at egress dropped it",
    "SECURITY_HOOK": "a Linux security module refused it (SELinux, AppArmor, Smack or a BPF LSM of a security agent)",
    "QDISC_DROP": "the device's queue discipline dropped it",
    "QDISC_OVERLIMIT": "the queue discipline's limit was exceeded (e.g. the bandwidth plugin's tbf)",
    "QDISC_CONGESTED": "the queue discipline was congested (AQM)",
    "CAKE_FLOOD": "CAKE dropped a flooding flow", "FQ_BAND_LIMIT": "fq band limit", "FQ_HORIZON_LIMIT":
    "fq: a timestamp too far in the future", "FQ_FLOW_LIMIT": "fq: the flow's queue was full",
    "CPU_BACKLOG": "the CPU's input backlog was full (netdev_max_backlog)",
    "XDP": "an XDP program on the receiving device returned XDP_DROP or failed",
    "TC_INGRESS": "a tc filter or BPF program at ingress dropped it",
    "UNHANDLED_PROTO": "no handler for its EtherType on this device (LLDP, STP BPDUs, ... with nothing taking them)",
    "SKB_CSUM": "checksum computation failed", "SKB_GSO_SEG": "GSO segmentation failed (an offload problem)",
    "SKB_UCOPY_FAULT": "copying the packet from user space failed",
    "DEV_HDR": "the device header is bad",
    "DEV_READY": "the device was not ready: down, no carrier, or detaching",
    "FULL_RING": "the device's ring was full",
    "NOMEM": "the kernel had no memory for it",
    "HDR_TRUNC": "truncated header", "TAP_FILTER": "the tap device's BPF filter refused it",
    "TAP_TXFILTER": "the tap device's MAC filter refused it", "ICMP_CSUM": "bad ICMP checksum",
    "INVALID_PROTO": "invalid protocol header", "IP_INADDRERRORS": "invalid destination address",
    "IP_INNOROUTES": "no route for a packet received", "IP_LOCAL_SOURCE": "its source is one of this host's addresses",
    "IP_INVALID_SOURCE": "invalid (martian) source address",
    "IP_LOCALNET": "a 127.0.0.0/8 address from outside the host: refused unless route_localnet is set",
    "IP_INVALID_DEST": "invalid destination address",
    "PKT_TOO_BIG": "larger than the MTU with DF set", "DUP_FRAG": "duplicate fragment",
    "FRAG_REASM_TIMEOUT": "fragments never completed", "FRAG_TOO_FAR": "fragment offset too far",
    "TCP_MINTTL": "TTL below the socket's minimum (IP_MINTTL, GTSM for BGP)",
    "IPV6_BAD_EXTHDR": "bad IPv6 extension header", "IPV6_NDISC_FRAG": "fragmented neighbour discovery",
    "IPV6_NDISC_HOP_LIMIT": "neighbour discovery with a hop limit other than 255",
    "IPV6_NDISC_BAD_CODE": "neighbour discovery with a bad code",
    "IPV6_NDISC_BAD_OPTIONS": "neighbour discovery with bad options",
    "IPV6_NDISC_NS_OTHERHOST": "a neighbour solicitation for another host's address",
    "QUEUE_PURGE": "still queued when its socket or device went away",
    "TC_COOKIE_ERROR": "a tc action's cookie was bad", "PACKET_SOCK_ERROR":
    "a packet socket (tcpdump, a DHCP client, an agent's capture) could not take its copy: the traffic itself "
    "went on", "TC_CHAIN_NOTFOUND": "a tc filter jumped to a chain that does not exist",
    "TC_RECLASSIFY_LOOP": "tc reclassified it too often (a filter loop)",
    "VXLAN_INVALID_HDR": "not VXLAN as this device expects (GBP/GPE flags, or another encapsulation on its port)",
    "VXLAN_VNI_NOT_FOUND": "no VXLAN device here has the packet's VNI",
    "MAC_INVALID_SOURCE": "invalid source MAC (multicast or zero)",
    "VXLAN_ENTRY_EXISTS": "the VXLAN FDB entry for it exists already (two nodes claim one MAC)",
    "NO_TX_TARGET": "no target to send it to (a VXLAN without an FDB entry or remote, a bridge without a port)",
    "IP_TUNNEL_ECN": "decapsulation found an ECN mismatch between the outer and inner header",
    "TUNNEL_TXINFO": "a metadata tunnel had no tunnel key for it (a BPF program must set it)",
    "LOCAL_MAC": "a frame with this device's own MAC as source came back in (an L2 loop)",
    "ARP_PVLAN_DISABLE": "ARP proxy for private VLAN is disabled",
    "MAC_IEEE_MAC_CONTROL": "an IEEE MAC control frame (802.3x pause) reached the bridge, which never forwards them",
    "BRIDGE_INGRESS_STP_STATE": "the bridge port is not forwarding (STP state blocking, listening, learning or "
                                "disabled)",
    "PFMEMALLOC": "received from emergency memory reserves, for a socket that may not use them: memory pressure",
    "DUALPI2_STEP_DROP": "DualPI2 dropped it above its step threshold",
    "PSP_INPUT": "PSP decryption refused it", "PSP_OUTPUT": "PSP encryption refused it",
    "RECURSION_LIMIT": "a virtual device loop: the packet went through too many devices (a tunnel routed "
                       "through itself)",
}

# Reasons that no Kubernetes node's network traffic produces, and why: the
# other half of the decision every reason needs.
NOT_ON_A_NODE: Mapping[str, str] = {
    "UNIX_DISCONNECT": "AF_UNIX sockets: local IPC, not network traffic",
    "UNIX_SKIP_OOB": "AF_UNIX out-of-band data: local IPC, not network traffic",
    "CAN_RX_INVALID_FRAME": "CAN bus (vehicles, industry), not IP networking",
    "CANFD_RX_INVALID_FRAME": "CAN FD bus, not IP networking",
    "CANXL_RX_INVALID_FRAME": "CAN XL bus, not IP networking",
    "MAX": "not a reason: the end marker of enum skb_drop_reason",
}


def given_reason(d: Drop) -> str:
    """The drop's reason as a hint quotes it."""
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
    return place.cause if place is not None else given_reason(d)


@functools.lru_cache(maxsize=4096)
def place_of(location: str | None) -> Place | None:
    return next((p for p in PLACES if name_matches(location, p.functions)), None)
