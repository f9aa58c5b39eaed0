"""pktfacts: what the kernel had decided about a dropped packet's destination.

The BPF program puts one byte of facts (bpf/netdrop.h ND_PF_*, filled by
packet_facts() in bpf/packet.h) both in each event and in the exact counter
key, so the same facts judge a group whether or not events reached it:

- the link layer's verdict, skb->pkt_type (include/uapi/linux/if_packet.h):
  to this host's MAC, a broadcast, a multicast group, another host's MAC, or
  the copy a packet socket takes of what this host sends;
- for a frame sent to a link-layer group (and an IPv4 frame to this host's MAC
  freed without a reason: a broadcast on lo comes in one), the IP destination
  as the kernel's own paths classify it: IPv4 by the input route's flags (RTCF_LOCAL,
  RTCF_BROADCAST, RTCF_MULTICAST), IPv6 by the address (ff00::/8);
- whether it was an IP packet at all (a netlink message queued on its socket
  is not).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import event as ev

# include/uapi/linux/if_packet.h
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING, PACKET_LOOPBACK = range(6)
PACKET_TYPES = {PACKET_HOST: "host", PACKET_BROADCAST: "broadcast", PACKET_MULTICAST: "multicast",
                PACKET_OTHERHOST: "otherhost", PACKET_OUTGOING: "outgoing", PACKET_LOOPBACK: "loopback"}
DESTINATIONS = {ev.ND_DST_UNREAD: None, ev.ND_DST_LOCAL: "local", ev.ND_DST_BROADCAST: "broadcast",
                ev.ND_DST_MULTICAST: "multicast", ev.ND_DST_UNICAST: "unicast", ev.ND_DST_NOT_IP: "not-ip"}


@dataclass(frozen=True, slots=True)
class Facts:
    """The facts byte, read."""

    known: bool               # False: nothing was read (a record of a function hook, an old record)
    pkt_type: int             # PACKET_*
    destination: int          # ND_DST_*

    @property
    def text(self) -> str:
        """As the JSON output and the docs name it: "multicast frame, multicast destination"."""
        if not self.known:
            return "unknown"
        frame = PACKET_TYPES.get(self.pkt_type, f"pkt_type {self.pkt_type}")
        dst = DESTINATIONS.get(self.destination, f"destination {self.destination}")
        return f"{frame} frame" + (f", {dst} destination" if dst else "")


def read(facts: int) -> Facts:
    return Facts(bool(facts & ev.ND_PF_KNOWN), facts & ev.ND_PF_TYPE_MASK,
                 (facts & ev.ND_PF_DST_MASK) >> ev.ND_PF_DST_SHIFT)


def make(pkt_type: int, destination: int = ev.ND_DST_UNREAD) -> int:
    """The byte the kernel writes for these facts (tests, and the layout's one description)."""
    return ev.ND_PF_KNOWN | (pkt_type & ev.ND_PF_TYPE_MASK) | (destination << ev.ND_PF_DST_SHIFT & ev.ND_PF_DST_MASK)


def unicast(facts: int) -> bool:
    """An IP packet known to be unicast: a frame addressed to this host's MAC (whose
    destination is not classified), or a destination the kernel classified as unicast."""
    f = read(facts)
    return f.known and (f.destination in (ev.ND_DST_LOCAL, ev.ND_DST_UNICAST)
                        or (f.pkt_type == PACKET_HOST and f.destination == ev.ND_DST_UNREAD))
