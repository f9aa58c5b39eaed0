"""classify: every drop gets one category from a fixed list and a one-line hint.

The category comes from the registry (categories.category_of: the kernel's
drop reason name, refined by where the drop happened, and for kernels
without reasons (< 5.17) the location and the ICMP error the kernel sent just
before); the hint from the category's entry, naming the likely cause with the
evidence the event carries. Netfilter and conntrack drops, and a SYN-ACK no
socket takes, are told apart further by netfilter_verdict.

Classifier does the same once per distinct answer: the event loop's storm of
one flow, or of ever-new source ports to one closed port, is classified once.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

from ..kernel import pktfacts
from ..kernel.decode import Drop
from .benign import is_benign
from .categories import category_of, entry
from .evidence import Evidence
from .explainer import Context
from .functionhooks import hook_verdict
from .netfilter_verdict import NETFILTER_CATEGORIES, nat_bypass, netfilter_verdict
from .verdict import TCP_ACK, TCP_SYN, Verdict

# Distinct plain answers a Classifier keeps, at most (then it starts afresh):
# a storm of new flows whose hints quote the flow must not grow it.
MEMO_ANSWERS = 4096


_TCP_INPUT = ("tcp_v4_rcv", "tcp_v6_rcv")
_UDP_INPUT = ("__udp4_lib_rcv", "__udp6_lib_rcv")


def key_category(reason: str | None, location: str | None, facts: int) -> str:
    """The category a counter key tells (reason, location, packet facts): category_of, and
    UDP's no-socket path, which frees unicast that an inbound IPsec policy refuses with no
    reason (xfrm4_policy_check()/xfrm6_policy_check() in __udp4_lib_rcv()/__udp6_lib_rcv(),
    before NO_SOCKET); broadcast and multicast nobody wants end there too (benign.py)."""
    return "ipsec" if _refused_at_udp(reason, location, facts) else category_of(reason, location)


def _refused_at_udp(reason: str | None, location: str | None, facts: int) -> bool:
    return reason == "NOT_SPECIFIED" and location in _UDP_INPUT and pktfacts.unicast(facts)


def event_category(drop: Drop) -> str:
    """category_of, and what only the packet tells where the kernel gives no
    reason (< 5.17): a bare SYN that tcp_v4_rcv()/tcp_v6_rcv() freed found no
    socket (no_tcp_socket: a reset goes back, net/ipv4/tcp_ipv4.c); with a
    listener it would have reached tcp_conn_request() and been kept or dropped
    there. Newer kernels say NO_SOCKET themselves. And what the packet facts
    tell: unicast freed without a reason on UDP's no-socket path (key_category)."""
    category = category_of(drop.reason, drop.location, drop.icmp_sent)
    if drop.reason is None and drop.location in _TCP_INPUT and drop.tcp_flags is not None \
            and drop.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
        return "no-socket"
    if drop.icmp_sent is None and _refused_at_udp(drop.reason, drop.location, drop.facts):
        return "ipsec"
    return category


def classify(drop: Drop, ctx: Context | None = None, evidence: Evidence | None = None) -> Verdict:
    """The category and hint; ctx (the namespace's rule counters and
    conntrack statistics, from the explainer) tells NETFILTER_DROP apart;
    evidence (the node's state: explain/evidence.py) tells the categories
    whose cause is a standing state of the node."""
    # What a function hook saw of this packet (conntrack insert race, table full) comes first.
    if drop.cause:
        hooked = hook_verdict(drop)
        if hooked is not None:
            return hooked
    category = event_category(drop)
    return _refined(category, drop, lambda _netns: ctx) or plain_verdict(category, drop, evidence)


def reads_evidence(drop: Drop) -> bool:
    """Whether drop's verdict quotes the node's state (evidence.py): its
    category's hint reads it, and no function hook's verdict comes first."""
    if drop.cause and hook_verdict(drop) is not None:
        return False
    return entry(event_category(drop)).reads_evidence(drop)


def evidence_rule(drop: Drop) -> Callable[[Drop], bool] | None:
    """For the drops of drop's group (one category, as the kernel counter key
    decides it): None if none of them reads evidence, else which do. Cheap
    for the event path: the category's own test first (UDP to an overlay
    port, ...), the function hook after it."""
    wants = entry(event_category(drop)).evidence
    if wants is False:
        return None
    return _EVIDENCE_RULES.setdefault(wants, _rule(wants))


def _rule(wants: bool | Callable[[Drop], bool]) -> Callable[[Drop], bool]:
    if not callable(wants):
        def every(d: Drop) -> bool:
            return not (d.cause and hook_verdict(d) is not None)
        return every
    test = wants

    def some(d: Drop) -> bool:
        return test(d) and not (d.cause and hook_verdict(d) is not None)
    return some


_EVIDENCE_RULES: dict[bool | Callable[[Drop], bool], Callable[[Drop], bool]] = {}


def _no_context(_netns: int) -> Context | None:
    return None


def _refined(category: str, drop: Drop, context: Callable[[int], Context | None]) -> Verdict | None:
    """What the drop's namespace (its context, asked only when needed) tells
    beyond the drop itself, or None."""
    if category in NETFILTER_CATEGORIES:
        refined = netfilter_verdict(drop, context(drop.netns))
        if refined is not None:
            return refined
    if category == "no-socket" and drop.tcp_flags is not None \
            and drop.tcp_flags & (TCP_SYN | TCP_ACK) == (TCP_SYN | TCP_ACK):
        return nat_bypass(drop, context(drop.netns))
    return None


def _no_evidence(_drop: Drop) -> Evidence | None:
    return None


def plain_verdict(category: str, drop: Drop, evidence: Evidence | None = None) -> Verdict:
    """The category's own hint: a function of the drop and, for the
    categories that read it, of the node's evidence."""
    return Verdict(category, entry(category).hint(drop, evidence), benign=is_benign(drop))


class _Reads:
    """Stands for a drop while its plain verdict is made, and notes which of
    its fields were read. A Drop property (flow) runs on the stand-in, so the
    fields behind it are noted too."""

    __slots__ = ("_drop", "names")

    def __init__(self, drop: Drop) -> None:
        self._drop = drop
        self.names: dict[str, None] = {}    # in the order read, once each

    def __getattr__(self, name: str) -> object:
        prop = getattr(Drop, name, None)
        if isinstance(prop, property) and prop.fget is not None:
            return prop.fget(self)
        self.names[name] = None
        return getattr(self._drop, name)


# Per (reason, location, ICMP error sent): the field sets its verdicts read, each
# with a getter of those fields and the verdicts made so far by their values.
_Plan = tuple[tuple[str, ...], Callable[[Drop], object], dict[object, Verdict]]


class Classifier:
    """classify() for the event path, with the plain verdicts remembered.

    A plain verdict (categories' hint, benign) is a function of the drop's
    fields that making it read: those are noted on the first drop (_Reads)
    and the verdict is remembered by their values. A later drop gets it only
    when every field it was made from is equal, so a hint that quotes a flow
    or an address is only ever shown for drops of that flow or address; a
    hint that names only the destination is made once for a storm of new
    source ports. What depends on the namespace's rules and counters
    (netfilter_verdict, nat_bypass) is made anew each time, as classify does."""

    def __init__(self, context: Callable[[int], Context | None] = _no_context,
                 max_answers: int = MEMO_ANSWERS,
                 evidence: Callable[[Drop], Evidence | None] = _no_evidence) -> None:
        """context(netns): what the explainer knows of a namespace, asked only
        for the drops whose verdict depends on it. evidence(drop): the node's
        state for it (evidence.EvidenceCache), asked only for the categories
        whose hint reads it; their verdicts are remembered per evidence read
        (Evidence compares by identity: a refresh is a new one), so a hint is
        never reused once the evidence changed."""
        self.context = context
        self.evidence = evidence
        self.max_answers = max_answers
        self._plans: dict[tuple[object, ...], list[_Plan]] = {}
        self._answers = 0

    def __call__(self, drop: Drop) -> Verdict:
        # A function hook's verdict first, never remembered: plain verdicts do not read drop.cause.
        if drop.cause:
            hooked = hook_verdict(drop)
            if hooked is not None:
                return hooked
        category = event_category(drop)
        refined = _refined(category, drop, self.context)
        if refined is not None:
            return refined
        ev = self.evidence(drop) if entry(category).reads_evidence(drop) else None
        group = (drop.reason, drop.location, drop.icmp_sent, drop.facts, category, ev)
        plans = self._plans.get(group)
        if plans is not None:
            for _names, fields_of, answers in plans:
                found = answers.get(fields_of(drop))
                if found is not None:
                    return found
        return self._remember(group, category, drop, ev)

    def _remember(self, group: tuple[object, ...], category: str, drop: Drop, ev: Evidence | None) -> Verdict:
        reads = _Reads(drop)
        verdict = plain_verdict(category, reads, ev)   # type: ignore[arg-type]  # reads like a Drop
        names = tuple(reads.names)
        if not names:                               # read nothing: the same for every drop of the group
            names = ("reason",)
        if self._answers >= self.max_answers:
            self._plans.clear()
            self._answers = 0
        plans = self._plans.setdefault(group, [])
        plan = next((p for p in plans if p[0] == names), None)
        if plan is None:
            plan = (names, operator.attrgetter(*names), {})
            plans.append(plan)
        plan[2][plan[1](drop)] = verdict
        self._answers += 1
        return verdict
