"""functionhooks: the verdict of a drop that a function hook saw (bpf/funchooks.c).

Where the kernel allows kprobes or fentry, netdrop hooks the conntrack confirm
and allocation paths and, on kernels without drop reasons, ip_forward; the
kfree_skb event of the same packet then carries what the hook saw (Drop.cause).
That is first-hand: the kernel said this packet lost an insert race or met a
full table, where otherwise only a namespace's counter that grew meanwhile
(netfilter_verdict) can be pointed at. So classification asks hook_verdict
first and falls back to its usual path on None.

Each cause's verdict is its entry in tracer/kernel/registry.py (HookVerdict):
a template this module fills with the words below.
"""

from __future__ import annotations

from collections.abc import Callable

from ..kernel.decode import Drop
from ..kernel.registry import HOOK_OF_CAUSE
from .categories import entry
from .verdict import Verdict


def _race_why(drop: Drop) -> str:
    """Why two packets of one flow race: for UDP, the classic resolver case
    (nf_conntrack_core.c's __nf_conntrack_confirm: the later insert of a clashing
    entry loses unless nf_ct_resolve_clash() can merge it)."""
    if drop.proto == "udp":
        return (" (two packets of one new flow from one socket, e.g. a resolver's A and AAAA queries, "
                "confirmed at once on two CPUs: the second lost); use 'single-request-reopen' in "
                "resolv.conf or a kernel that resolves the clash")
    return " (two packets of one new connection confirmed at once on two CPUs: the second lost)"


def _ct_size(drop: Drop) -> str:
    return f" (count = max = {drop.ct_max})" if drop.ct_max else " (count reached nf_conntrack_max)"


class _Words(dict[str, str]):
    """A template's words, each made only if the template names it."""

    def __init__(self, drop: Drop, category: str) -> None:
        super().__init__()
        self._drop, self._category = drop, category

    def __missing__(self, key: str) -> str:
        make: dict[str, Callable[[], str]] = {
            "flow": lambda: self._drop.flow,
            "race": lambda: _race_why(self._drop),
            "ct_size": lambda: _ct_size(self._drop),
            "hint": lambda: entry(self._category).hint(self._drop, None),
        }
        return make[key]()


def hook_verdict(drop: Drop) -> Verdict | None:
    """The verdict a function hook's cause gives, or None (no hook saw the packet)."""
    cause = drop.cause
    hook = HOOK_OF_CAUSE.get(cause) if cause else None
    if hook is None or hook.cause is None:
        return None
    v = hook.cause.verdict
    detail: dict[str, object] = {**dict(v.detail), "hook": hook.func}
    if drop.ct_max:
        detail["max"] = drop.ct_max
    return Verdict(v.category, v.text.format_map(_Words(drop, v.category)), detail)
