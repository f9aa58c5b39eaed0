"""functionhooks: the verdict of a drop that a function hook saw (bpf/funchooks.c).

Where the kernel allows kprobes or fentry, netdrop hooks the conntrack confirm
and allocation paths and, on kernels without drop reasons, ip_forward; the
kfree_skb event of the same packet then carries what the hook saw (Drop.cause).
That is first-hand: the kernel said this packet lost an insert race or met a
full table, where otherwise only a namespace's counter that grew meanwhile
(netfilter_verdict) can be pointed at. So classification asks hook_verdict
first and falls back to its usual path on None.
"""

from __future__ import annotations

from ..kernel.decode import Drop
from .categories import entry
from .verdict import Verdict

# Which function told, for the JSON "detail" (as netfilter_verdict's "by"/"state").
_HOOK_OF = {"ct-insert-failed": "__nf_conntrack_confirm", "ct-table-full": "__nf_conntrack_alloc",
            "fwd-too-big": "ip_forward"}


def hook_verdict(drop: Drop) -> Verdict | None:
    """The verdict a function hook's cause gives, or None (no hook saw the packet)."""
    cause = drop.cause
    if cause == "ct-insert-failed":
        return Verdict("conntrack", f"conntrack insert race lost for {drop.flow}{_race_why(drop)}",
                       {"by": "conntrack", "state": "insert_failed", "hook": _HOOK_OF[cause]})
    if cause == "ct-table-full":
        size = f" (count = max = {drop.ct_max})" if drop.ct_max else " (count reached nf_conntrack_max)"
        return Verdict("conntrack", f"conntrack table full{size}: packet {drop.flow} dropped; raise "
                                    f"net.netfilter.nf_conntrack_max or find what opens so many connections",
                       {"by": "conntrack", "state": "table_full", "hook": _HOOK_OF[cause],
                        **({"max": drop.ct_max} if drop.ct_max else {})})
    if cause == "fwd-too-big":
        # The MTU category's own hint: the event carries the route's MTU and device.
        return Verdict("mtu", entry("mtu").hint(drop, None), {"hook": _HOOK_OF[cause]})
    return None


def _race_why(drop: Drop) -> str:
    """Why two packets of one flow race: for UDP, the classic resolver case
    (nf_conntrack_core.c's __nf_conntrack_confirm: the later insert of a clashing
    entry loses unless nf_ct_resolve_clash() can merge it)."""
    if drop.proto == "udp":
        return (" (two packets of one new flow from one socket, e.g. a resolver's A and AAAA queries, "
                "confirmed at once on two CPUs: the second lost); use 'single-request-reopen' in "
                "resolv.conf or a kernel that resolves the clash")
    return " (two packets of one new connection confirmed at once on two CPUs: the second lost)"
