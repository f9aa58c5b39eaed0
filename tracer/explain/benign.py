"""benign: drops every healthy node makes, set aside by the console and the summaries.

Each entry names the drop reason and the kernel function that frees the
packet, and why nothing is wrong there. Benign drops are always counted (the
kernel's counters are exact either way); they get `"benign": true` in JSON
and captures, and the views hide them unless asked (--all, the `b` key).

Decided from what the kernel counter key also holds (reason, location), so a
group no event reached is judged like one that events reached.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..kernel.decode import Drop
from .verdict import name_matches


@dataclass(frozen=True)
class Benign:
    reasons: tuple[str, ...]      # drop reason name patterns; () for any reason
    locations: tuple[str, ...]    # kernel functions that free the packet
    why: str                      # why a healthy node makes it, citing the kernel


BENIGN: tuple[Benign, ...] = (
    # net/core/skbuff.c: skb_queue_purge_reason() frees what is still queued on
    # a socket or device being torn down (SKB_DROP_REASON_QUEUE_PURGE).
    Benign(("QUEUE_PURGE",), ("skb_queue_purge_reason", "__skb_queue_purge*"),
           "packets still queued when a socket or device went away (teardown)"),
    # net/ipv6/ip6_input.c: ip6_mc_input() frees multicast that no local
    # socket or group joined (router solicitations, MLD, mDNS of neighbours).
    Benign(("NOT_SPECIFIED",), ("ip6_mc_input",),
           "IPv6 multicast for a group nobody on this interface joined"),
)


@functools.lru_cache(maxsize=4096)
def benign_why(reason: str | None, location: str | None) -> str | None:
    """Why a drop with this reason and location is benign; None if it is not."""
    for b in BENIGN:
        if (not b.reasons or name_matches(reason, b.reasons)) and name_matches(location, b.locations):
            return b.why
    return None


def is_benign(drop: Drop) -> bool:
    return benign_why(drop.reason, drop.location) is not None
