"""benign: drops every healthy node makes, set aside by the console and the summaries.

Each rule names the drop reason, the kernel function that frees the packet,
and the packet facts it needs, and says why nothing is wrong there. Benign
drops are always counted (the kernel's counters are exact either way); they
get `"benign": true` in JSON and captures, and the views hide them unless
asked (--all, the `b` key).

A drop is benign by its packet, never by its place alone. The place (reason
and location) says which kernel path freed it; the packet facts
(kernel/pktfacts.py) say what the kernel had decided about the packet when it
did: how the link layer addressed the frame (skb->pkt_type); for a frame sent
to a link-layer group (or this host's own, looped back; or an IPv4 frame to
this host's MAC freed without a reason) whether its IP destination is a
broadcast, multicast or unicast one (the input route's
RTCF_BROADCAST/RTCF_MULTICAST/RTCF_LOCAL for IPv4, as __udp4_lib_rcv()
decides; ff00::/8 for IPv6, as __udp6_lib_rcv() and ip6_mc_input() decide);
and whether it was an IP packet at all. The same path frees both kinds:
__udp4_lib_rcv() frees a broadcast nobody wants and, with the same
NOT_SPECIFIED, a unicast datagram to our own address that an inbound IPsec
policy refuses (classify.key_category calls that one ipsec).

The smallest design that judges every group so: one byte. The BPF program
writes the facts into each event and, in the same byte, into the exact
counter key (bpf/netdrop.h nd_event.facts, nd_count_key.facts: the padding
both had), so a group no event reached is judged by the same facts as one
events reached, and nothing but the facts' classification is read per drop
(pkt_type comes with the bytes the counting path reads anyway; the route or
address only for group frames). Downstream the facts split a group only where
they change an answer: groups.py folds kernel keys into groups keyed (netns,
reason, location, pod, benign), metrics fold them into series by their labels
(benign, category); keys that differ in facts that change neither add up, so
the rows and series a user sees change only where benign (or ipsec) does.

What holds for every rule, checked by tests/unit/explain/test_benign.py:
- unicast to an address of the receiving namespace (an IPv4 route RTCF_LOCAL,
  or an IP frame addressed to this host's MAC whose destination the kernel did
  not classify as broadcast or multicast) is never benign: no rule takes those
  facts;
- facts not known (a record without them, a frame whose destination was not
  classified) are never benign;
- every rule requires a drop reason (kernel 5.17 and later), matched exactly,
  never by pattern: a reason a newer kernel adds is never benign by accident.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..kernel import event as ev
from ..kernel import pktfacts
from ..kernel.decode import Drop
from ..kernel.pktfacts import PACKET_BROADCAST, PACKET_HOST, PACKET_LOOPBACK, PACKET_MULTICAST
from .verdict import name_matches


@dataclass(frozen=True)
class Needs:
    """The packet facts a rule needs: each one of the destinations, from a
    frame of one of the link-layer types (None: any)."""

    says: str                             # in words, for docs/benign.md and the tests
    destinations: frozenset[int]          # ND_DST_*
    pkt_types: frozenset[int] | None      # PACKET_*

    def hold(self, facts: int) -> bool:
        f = pktfacts.read(facts)
        return f.known and f.destination in self.destinations and (
            self.pkt_types is None or f.pkt_type in self.pkt_types)


# A datagram to a broadcast or multicast address, in a frame sent to a link-layer group (or
# this host's own such datagram looped back to it: ip_mc_output() and dev_loopback_xmit()),
# or in a frame to this host's MAC whose route says broadcast (127.255.255.255 on lo: every
# frame there carries lo's own address, arp_constructor()).
TO_GROUP = Needs("a broadcast or multicast destination, in a link-layer broadcast or multicast frame "
                 "(or looped back, or on lo)", frozenset({ev.ND_DST_BROADCAST, ev.ND_DST_MULTICAST}),
                 frozenset({PACKET_BROADCAST, PACKET_MULTICAST, PACKET_LOOPBACK, PACKET_HOST}))
TO_MULTICAST = Needs("an IPv6 multicast destination, in a link-layer multicast frame",
                     frozenset({ev.ND_DST_MULTICAST}), frozenset({PACKET_MULTICAST}))
NOT_IP = Needs("no IP packet: a message queued on a netlink (or other non-inet) socket, another ethertype",
               frozenset({ev.ND_DST_NOT_IP}), None)


@dataclass(frozen=True)
class Benign:
    reasons: tuple[str, ...]      # drop reason names, exact
    locations: tuple[str, ...]    # kernel functions that free the packet (patterns)
    needs: Needs                  # what the packet must be
    why: str                      # why a healthy node makes it, citing the kernel


BENIGN: tuple[Benign, ...] = (
    # net/core/skbuff.c: skb_queue_purge_reason() frees everything still queued
    # when the queue's owner goes away: netlink_sock_destruct() (a netlink
    # socket closed with unread notifications), device and tunnel teardown.
    # Only what is no IP packet: an inet socket's queue purged at close holds
    # data sent to our own address that the application never read, and a
    # packet socket's (tcpdump's) holds copies of such packets; those are
    # listed. (__skb_queue_purge*() are inline and normally not a location of their own.)
    Benign(("QUEUE_PURGE",), ("skb_queue_purge_reason", "__skb_queue_purge*"), NOT_IP,
           "messages still queued on a netlink socket when it went away (teardown)"),
    # net/ipv6/ip6_input.c: ip6_mc_input() delivers multicast only if
    # ipv6_chk_mcast_addr() finds the group joined on the device, else frees it
    # with kfree_skb() (no reason): MLD reports of neighbours, router
    # solicitations, mDNS, any group this interface did not join.
    Benign(("NOT_SPECIFIED",), ("ip6_mc_input",), TO_MULTICAST,
           "IPv6 multicast for a group nobody on this interface joined"),
    # net/ipv4/udp.c and net/ipv6/udp.c: __udp4_lib_rcv() takes the multicast
    # path for a route with RTCF_BROADCAST|RTCF_MULTICAST, __udp6_lib_rcv() for
    # a multicast destination; __udp*_lib_mcast_deliver() (inlined) free a
    # datagram no socket wants with kfree_skb() and count it as
    # UDP_MIB_IGNOREDMULTI, not as an error: DHCP, SSDP, mDNS, NetBIOS
    # broadcasts of the LAN. The same function frees unicast with the same
    # NOT_SPECIFIED when an inbound IPsec policy refuses a datagram no socket
    # took (xfrm4_policy_check() on the no-socket path): the facts tell them apart.
    Benign(("NOT_SPECIFIED",), ("__udp4_lib_rcv", "__udp6_lib_rcv"), TO_GROUP,
           "UDP broadcast or multicast that no socket on this host listens for"),
    # net/ipv6/ndisc.c: ndisc_recv_ns() drops a Neighbour Solicitation whose
    # target is no address of this interface (and not one it proxies): an NS
    # goes to the solicited-node group ff02::1:ffXX:XXXX, which every address
    # ending in the same 24 bits shares, so other hosts' solicitations arrive
    # here too; icmpv6_rcv() frees it with the reason ndisc_rcv() returned.
    # Only to the group: a unicast solicitation (NUD) is sent to the target itself.
    Benign(("IPV6_NDISC_NS_OTHERHOST",), ("icmpv6_rcv", "ndisc_rcv", "ndisc_recv_ns"), TO_MULTICAST,
           "IPv6 neighbour solicitation for another host's address (shared solicited-node group)"),
)


def rule_at(reason: str | None, location: str | None) -> Benign | None:
    """The rule for drops at this place, whatever their packets (None: none)."""
    if reason is None:
        return None
    for b in BENIGN:
        if reason in b.reasons and name_matches(location, b.locations):
            return b
    return None


@functools.lru_cache(maxsize=4096)
def benign_why(reason: str | None, location: str | None, facts: int) -> str | None:
    """Why a drop with this reason, location and packet facts is benign; None if it is not."""
    rule = rule_at(reason, location)
    return rule.why if rule is not None and rule.needs.hold(facts) else None


def why_at(reason: str | None, location: str | None) -> str | None:
    """The why of the rule at this place: for a group already judged benign (by its facts)."""
    rule = rule_at(reason, location)
    return rule.why if rule is not None else None


def is_benign(drop: Drop) -> bool:
    return benign_why(drop.reason, drop.location, drop.facts) is not None
