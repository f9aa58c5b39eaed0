"""registry: every hook netdrop attaches, in one place.

A tracepoint is a line of TRACEPOINTS (its program in bpf/netdrop.c). A
function hook (bpf/funchooks.c) is one FunctionHook: the kernel function and
its module, its programs (kprobe entry and return forms, the BTF form), and
for a hook that tells something about the packet, its Cause: the code the C
writes into nd_event.cause (passed to the compiler as -DND_CAUSE_<NAME>=code,
cflags()), the name decode gives Drop.cause, and the verdict explain gives
such a drop (HookVerdict). Adding a function hook is its C and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .facts import KernelFacts


@dataclass(frozen=True)
class Tracepoint:
    """A kernel tracepoint netdrop attaches: as tp_btf where the kernel allows, else classic."""

    category: str
    event: str
    btf_prog: str                           # its tp_btf program (loaded by btfprog: bcc has no tp_btf attach)
    in_kernel: Callable[[KernelFacts], bool]
    says: Callable[[KernelFacts], str]      # the hook line's detail

    @property
    def name(self) -> str:
        return f"{self.category}:{self.event}"


TRACEPOINTS = (
    Tracepoint("skb", "kfree_skb", "nd_kfree_skb", lambda f: True,
               lambda f: "drop reason" if f.has_reason else "no reason field: classify by location"),
    Tracepoint("icmp", "icmp_send", "nd_icmp_send", lambda f: f.has_icmp_tp,
               lambda f: "" if f.has_icmp_tp else
               "not in this kernel (5.10 has none, 6.1 has it): __icmp_send is hooked instead"),
)


@dataclass(frozen=True)
class HookVerdict:
    """What explain says of a drop whose event carries a hook's cause.

    text is a template explain fills (tracer/explain/functionhooks.py): {flow}
    the packet's flow, {race} why two packets of one flow race (per protocol),
    {ct_size} the table's size where the kernel showed it, {hint} the
    category's own hint. detail: the JSON detail's fixed pairs; "hook" (the
    function) and "max" (Drop.ct_max, where known) follow them."""

    category: str
    text: str
    detail: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Cause:
    """What a function hook saw of a packet, carried by its kfree_skb event."""

    code: int                   # nd_event.cause; the location of cause_counts keys; 0 is "none"
    name: str                   # Drop.cause
    verdict: HookVerdict
    carries_ct_max: bool = False    # the note's value is nf_conntrack_max (nd_event.ct_status -> Drop.ct_max)

    @property
    def define(self) -> str:
        """Its name in the C: ND_CAUSE_CT_TABLE_FULL for "ct-table-full"."""
        return "ND_CAUSE_" + self.name.upper().replace("-", "_")


@dataclass(frozen=True)
class FunctionHook:
    """A kernel function bpf/funchooks.c hooks, and the names of its programs."""

    func: str
    entry: str                  # kprobe form, at entry (keeps the arguments for ret)
    ret: str | None             # kretprobe form at return; None: entry only
    btf_form: str               # "fexit" or "fentry"
    btf_prog: str               # its program in funchooks.c (BPF_PROG: not loaded by bcc)
    gives: str                  # what it adds, said when attached
    module: str | None = None   # the module the function is in where it is not built in
    cause: Cause | None = None  # what its note tells the event; None: a note of another kind
    only_without_reason: bool = False   # wanted only where kfree_skb has no drop reason (< 5.17)
    only_without_icmp_tp: bool = False  # wanted only where icmp:icmp_send is missing (5.10)

    @property
    def kprobe_form(self) -> str:
        return "kretprobe" if self.ret else "kprobe"


_CONNTRACK = (("by", "conntrack"),)

FUNCTION_HOOKS = (
    FunctionHook("__nf_conntrack_confirm", "nd_ct_confirm_entry", "nd_ct_confirm_return", "fexit",
                 "nd_ct_confirm_fexit", "which flow lost a conntrack insert race", module="nf_conntrack",
                 cause=Cause(1, "ct-insert-failed", HookVerdict(
                     "conntrack", "conntrack insert race lost for {flow}{race}",
                     (*_CONNTRACK, ("state", "insert_failed"))))),
    FunctionHook("__nf_conntrack_alloc", "nd_ct_alloc_entry", "nd_ct_alloc_return", "fexit",
                 "nd_ct_alloc_fexit", "which packet met a full conntrack table", module="nf_conntrack",
                 cause=Cause(2, "ct-table-full", HookVerdict(
                     "conntrack", "conntrack table full{ct_size}: packet {flow} dropped; raise "
                                  "net.netfilter.nf_conntrack_max or find what opens so many connections",
                     (*_CONNTRACK, ("state", "table_full"))), carries_ct_max=True)),
    FunctionHook("ip_forward", "nd_ip_forward", None, "fentry", "nd_ip_forward_fentry",
                 "the MTU of forwarded packets' routes, for drops without a reason", only_without_reason=True,
                 # The MTU category's own hint: the event carries the route's MTU and device.
                 cause=Cause(3, "fwd-too-big", HookVerdict("mtu", "{hint}"))),
    FunctionHook("__icmp_send", "nd_icmp_send_kprobe", None, "fentry", "nd_icmp_send_fentry",
                 "the ICMP error each drop answered with, without the icmp:icmp_send tracepoint",
                 only_without_icmp_tp=True),
)
# Every kprobe-form and BTF-form program: what tests/kernel/kernel/test_funchooks.py checks.
KPROBE_PROGRAMS = tuple(name for h in FUNCTION_HOOKS for name in (h.entry, h.ret) if name)
BTF_PROGRAMS = tuple(h.btf_prog for h in FUNCTION_HOOKS)
# Each cause with the hook that notes it, by code and by name.
HOOK_OF_CAUSE = {h.cause.name: h for h in FUNCTION_HOOKS if h.cause is not None}
CAUSES = {h.cause.code: h.cause for h in FUNCTION_HOOKS if h.cause is not None}
CAUSE_CODES = {c.name: c.code for c in CAUSES.values()}

if len(CAUSES) != len(HOOK_OF_CAUSE) or 0 in CAUSES or not all(0 < c < 256 for c in CAUSES):  # pragma: no cover
    raise ImportError("registry: each cause needs its own code, 1..255 (nd_event.cause is a u8)")


def cflags() -> list[str]:
    """The cause codes as the C sees them: numbers of this table, never text from outside."""
    return [f"-D{c.define}={int(c.code)}" for c in CAUSES.values()]
