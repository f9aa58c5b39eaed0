"""classify: every drop gets one category from a fixed list and a one-line hint.

The category comes from the registry (categories.category_of: the kernel's
drop reason name, refined by where the drop happened, and for kernels
without reasons (< 5.17) the location and the ICMP error the kernel sent just
before); the hint from the category's entry, naming the likely cause with the
evidence the event carries. Netfilter and conntrack drops, and a SYN-ACK no
socket takes, are told apart further by netfilter_verdict.
"""

from __future__ import annotations

from ..kernel.decode import Drop
from .benign import is_benign
from .categories import category_of, entry
from .explainer import Context
from .netfilter_verdict import NETFILTER_CATEGORIES, nat_bypass, netfilter_verdict
from .verdict import TCP_ACK, TCP_SYN, Verdict


def classify(drop: Drop, ctx: Context | None = None) -> Verdict:
    """The category and hint; ctx (the namespace's rule counters and
    conntrack statistics, from the explainer) tells NETFILTER_DROP apart."""
    category = category_of(drop.reason, drop.location, drop.icmp_sent)
    if category in NETFILTER_CATEGORIES:
        refined = netfilter_verdict(drop, ctx)
        if refined is not None:
            return refined
    if category == "no-socket" and drop.tcp_flags is not None \
            and drop.tcp_flags & (TCP_SYN | TCP_ACK) == (TCP_SYN | TCP_ACK):
        return nat_bypass(drop, ctx)
    return Verdict(category, entry(category).hint(drop), benign=is_benign(drop))
