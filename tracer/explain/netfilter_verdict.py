"""netfilter_verdict: which rule, policy or conntrack decision dropped a packet.

The kernel reports all of them as NETFILTER_DROP. What tells them apart:
  - the location: nft_do_chain frees the packet itself (nftables and
    iptables-nft); legacy xtables, conntrack and other hooks return NF_DROP
    and nf_hook_slow frees it;
  - the drop points (droppoints.DropPoint) that match the packet, or whose
    counters grew since the explainer's previous sample;
  - the packet's conntrack state (no entry at a netfilter drop: INVALID) and
    the namespace's conntrack statistics (insert_failed, drop, invalid).

Plus one no-socket drop that is conntrack's doing: a SYN-ACK from a Service's
endpoint that bypassed NAT back (nat_bypass).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..kernel.decode import Drop
from .droppoints import DropPoint, PointKey
from .explainer import Context, NetnsView
from .matcher import path_chain
from .verdict import ICMP_DEST_UNREACH, Verdict, destination, name_matches, on_device

# The categories told apart here: drops of these need the explainer's view of their namespace.
NETFILTER_CATEGORIES = ("netfilter", "conntrack")
NFT_LOCATIONS = ("nft_do_chain*",)


def _point_detail(p: DropPoint, packets: int | None = None) -> dict[str, object]:
    d: dict[str, object] = {"by": p.kind, "backend": p.backend, "family": p.family, "table": p.table,
                            "chain": p.chain, "target": p.target, "rule": p.rule}
    if p.no_endpoints_service:
        d["service_without_endpoints"] = p.no_endpoints_service
    if packets is not None:
        d["packets"] = packets
    return d


def netfilter_verdict(d: Drop, ctx: Context | None) -> Verdict | None:
    """The rule, policy or conntrack decision behind a netfilter or conntrack
    drop; None when nothing known singles one out (classify's hint stands)."""
    view = ctx.view if ctx else None
    points = view.likely_points(d) if view else []
    grown = {p.key: n for p, n in view.grown} if view else {}
    rejected = _rejected(d, points, grown)
    if rejected is not None:
        return rejected
    if view is not None:
        by_conntrack = _conntrack(d, view, points)
        if by_conntrack is not None:
            return by_conntrack
        if not points:
            points = _policy_on_path(d, view.points)
        if not points and name_matches(d.location, ("nf_hook_slow",)):
            return Verdict("conntrack",
                           f"a netfilter hook refused it at nf_hook_slow{on_device(d)}, and no DROP rule or policy "
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
        return Verdict("netfilter", f"dropped by {p.describe()}{count}{on_device(d)}: {what}",
                       _point_detail(p, grown.get(p.key)))
    listed = "; ".join(p.describe() for p in points[:3])
    return Verdict("netfilter", f"dropped by one of: {listed}{on_device(d)}",
                   {"by": "one of", "candidates": [_point_detail(p, grown.get(p.key)) for p in points[:3]]})


def _rejected(d: Drop, points: Sequence[DropPoint], grown: Mapping[PointKey, int]) -> Verdict | None:
    """A REJECT: the kernel sent an ICMP error, or kube-proxy's rule for a
    Service without endpoints matches. ICMP errors are rate-limited, so the
    rule alone (matched to the packet) suffices; it names its Service."""
    svc = next((p for p in points if p.no_endpoints_service), None)
    if svc is not None:
        return Verdict("netfilter",
                       f"Service {svc.no_endpoints_service} has no endpoints: kube-proxy rejects connections "
                       f"to {destination(d)} with {svc.describe()}; check the Service's selector and that its pods "
                       f"are Ready", _point_detail(svc, grown.get(svc.key)))
    if d.icmp_sent is None or d.icmp_sent[0] != ICMP_DEST_UNREACH:
        return None
    rejects = [p for p in points if p.target.upper() == "REJECT"] or list(points)
    p = rejects[0] if len(rejects) == 1 else None
    return Verdict("netfilter",
                   f"a REJECT rule refused it{on_device(d)} and answered with ICMP {d.icmp_sent[0]}/{d.icmp_sent[1]}"
                   + (f": {p.describe()}" if p else ": check the REJECT rules ('iptables -S', 'nft list ruleset')"),
                   _point_detail(p, grown.get(p.key)) if p else {"by": "rule", "target": "REJECT"})


def _conntrack(d: Drop, view: NetnsView, points: Sequence[DropPoint]) -> Verdict | None:
    """Conntrack's own refusals: an INVALID packet dropped by a rule, an insert
    race lost, a full table."""
    stats = view.ct_growth
    inv = next((p for p in points if p.drops_invalid), None)
    # No conntrack entry means INVALID only where conntrack is in use: a rule that
    # matches on ctstate INVALID says so, as do conntrack's own counters.
    if d.conntrack == "none" and (inv or view.conntrack_active or stats.get("invalid")):
        if inv is not None:
            by = inv.describe()
        else:
            by = points[0].describe() if len(points) == 1 else "a rule matching ctstate INVALID"
        invalid = (view.ct or {}).get("invalid", 0)
        counted = f": conntrack counts {invalid} invalid packets here" if invalid else ""
        return Verdict("conntrack",
                       f"conntrack found no valid state for it (INVALID{counted}) and {by} dropped it, as "
                       f"kube-proxy's INVALID rule does: out-of-window or stray TCP, an expired entry, or "
                       f"asymmetric routing",
                       {"by": "conntrack", "state": "invalid",
                        **({"rule": inv.rule, "chain": inv.chain} if inv else {}), "conntrack_invalid": invalid})
    # nft_do_chain frees only what a rule or policy dropped: conntrack's counters
    # growing meanwhile say nothing about this packet.
    if name_matches(d.location, NFT_LOCATIONS):
        return None
    if stats.get("insert_failed"):
        return Verdict("conntrack",
                       f"conntrack could not insert the connection (insert_failed +{stats['insert_failed']}): "
                       f"two packets of one flow raced (DNS A/AAAA over one socket, NAT'd UDP); use "
                       f"'single-request-reopen' in resolv.conf or a newer kernel",
                       {"by": "conntrack", "state": "insert_failed", "insert_failed": stats["insert_failed"]})
    if stats.get("drop"):
        entries = view.ct.get("entries") if view.ct else None
        return Verdict("conntrack",
                       f"the conntrack table is full (drop +{stats['drop']}, {entries} entries): raise "
                       f"net.netfilter.nf_conntrack_max or find the flood of connections",
                       {"by": "conntrack", "state": "table_full", "drop": stats["drop"], "entries": entries})
    return None


def _policy_on_path(d: Drop, points: Sequence[DropPoint]) -> list[DropPoint]:
    """No counter has moved yet: a chain policy on this packet's path is the likely one."""
    chain = path_chain(d)
    return [p for p in points if p.kind == "policy" and p.chain.upper() == chain]


def nat_bypass(d: Drop, ctx: Context | None) -> Verdict:
    """A SYN-ACK no socket takes, from an address the pod never called: the
    reply of a Service's endpoint that was not translated back."""
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
