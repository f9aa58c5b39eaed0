"""benign: drops every healthy node makes, set aside by the console and the summaries.

Each entry names the drop reason and the kernel function that frees the
packet, and why nothing is wrong there. Benign drops are always counted (the
kernel's counters are exact either way); they get `"benign": true` in JSON
and captures, and the views hide them unless asked (--all, the `b` key).

Decided from what the kernel counter key also holds (reason, location), so a
group no event reached is judged like one that events reached. That is also
why the list is short: an entry must hold for every packet with that reason
and location, so a pair that a real fault can also produce is left out (they
are listed, with the fault, in docs/benign.md under "Not benign").

Every entry requires a drop reason (kernel 5.17 and later): without one, a
location alone says too little. Reason names are matched exactly, never by
pattern, so a reason a newer kernel adds is never benign by accident.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..kernel.decode import Drop
from .verdict import name_matches


@dataclass(frozen=True)
class Benign:
    reasons: tuple[str, ...]      # drop reason names, exact
    locations: tuple[str, ...]    # kernel functions that free the packet (patterns)
    why: str                      # why a healthy node makes it, citing the kernel


BENIGN: tuple[Benign, ...] = (
    # net/core/skbuff.c: skb_queue_purge_reason() frees everything still queued
    # when the queue's owner goes away: netlink_sock_destruct() (a netlink
    # socket closed with unread notifications), packet_release() (a packet
    # socket such as tcpdump's, closed with frames unread), device and tunnel
    # teardown. The owner is gone, nobody could read those packets any more.
    # Safe: traffic that fails while its socket or device lives is dropped
    # elsewhere with its own reason; only the bulk free at teardown lands here.
    # (__skb_queue_purge*() are inline and normally not a location of their own.)
    Benign(("QUEUE_PURGE",), ("skb_queue_purge_reason", "__skb_queue_purge*"),
           "packets still queued when a socket or device went away (teardown)"),
    # net/ipv6/ip6_input.c: ip6_mc_input() delivers multicast only if
    # ipv6_chk_mcast_addr() finds the group joined on the device, else frees it
    # with kfree_skb() (no reason): MLD reports of neighbours, router
    # solicitations, mDNS, any group this interface did not join. Safe:
    # multicast to a joined group is delivered on, and its own failures have
    # their own locations; unicast never passes through ip6_mc_input().
    Benign(("NOT_SPECIFIED",), ("ip6_mc_input",),
           "IPv6 multicast for a group nobody on this interface joined"),
    # net/ipv4/udp.c and net/ipv6/udp.c: __udp4_lib_mcast_deliver() and
    # __udp6_lib_mcast_deliver() (inlined into __udp4_lib_rcv/__udp6_lib_rcv)
    # free a broadcast or multicast datagram no socket wants with kfree_skb()
    # and count it as UDP_MIB_IGNOREDMULTI, not as an error: DHCP, SSDP, mDNS,
    # NetBIOS broadcasts of the LAN. Unicast to a port nobody listens on is
    # NO_SOCKET at the same functions, and checksum and length errors are
    # UDP_CSUM and PKT_TOO_SMALL, so those stay listed. Safe: what else frees
    # with no reason there is a datagram shorter than a UDP header (nothing
    # could use it) and an IPsec policy refusing a datagram no socket took.
    Benign(("NOT_SPECIFIED",), ("__udp4_lib_rcv", "__udp6_lib_rcv"),
           "UDP broadcast or multicast that no socket on this host listens for"),
    # net/ipv6/ndisc.c: ndisc_recv_ns() drops a Neighbour Solicitation whose
    # target is no address of this interface (and not one it proxies): an NS
    # goes to the solicited-node group ff02::1:ffXX:XXXX, which every address
    # ending in the same 24 bits shares, so other hosts' solicitations arrive
    # here too; icmpv6_rcv() frees it with the reason ndisc_rcv() returned.
    # Safe: the host that owns the target answers; if nobody does, the
    # solicitor's own drop (NEIGH_FAILED, category neighbor) stays listed.
    Benign(("IPV6_NDISC_NS_OTHERHOST",), ("icmpv6_rcv", "ndisc_rcv", "ndisc_recv_ns"),
           "IPv6 neighbour solicitation for another host's address (shared solicited-node group)"),
)


@functools.lru_cache(maxsize=4096)
def benign_why(reason: str | None, location: str | None) -> str | None:
    """Why a drop with this reason and location is benign; None if it is not."""
    if reason is None:
        return None
    for b in BENIGN:
        if reason in b.reasons and name_matches(location, b.locations):
            return b.why
    return None


def is_benign(drop: Drop) -> bool:
    return benign_why(drop.reason, drop.location) is not None
