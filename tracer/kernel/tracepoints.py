"""tracepoints: the tracepoints of registry.TRACEPOINTS as tp_btf programs.

Where the kernel's BTF names each tracepoint (btf_trace_<event>), netdrop
loads its tp_btf form itself (plain loads instead of probe reads, no perf
record: bpf/netdrop.c, nd_kfree_skb) and attaches it; elsewhere bcc attaches
the classic tracepoints as it loads them. Nothing here imports bcc: the loader
hands each program's instructions (bccload.program_span).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import suppress

from . import btfprog
from .facts import KernelFacts, btf_tracepoint_ids
from .registry import TRACEPOINTS, Tracepoint


def present(facts: KernelFacts) -> tuple[Tracepoint, ...]:
    """The tracepoints this kernel has."""
    return tuple(tp for tp in TRACEPOINTS if tp.in_kernel(facts))


def btf_ids(facts: KernelFacts) -> dict[str, int] | None:
    """Each present tracepoint's BTF type id, None where one has none (tp_btf cannot load)."""
    if not btfprog.SYS_BPF:
        return None
    ids = btf_tracepoint_ids([tp.event for tp in TRACEPOINTS])
    return ids if all(tp.event in ids for tp in present(facts)) else None


def form(facts: KernelFacts) -> tuple[str, str]:
    """How the loader would attach the tracepoints here, asked without loading
    netdrop (for `netdrop doctor`): ("tp_btf", "") where the kernel's BTF names
    every present one and the kernel takes an empty program on each, else
    ("tracepoint", why not tp_btf)."""
    ids = btf_tracepoint_ids([tp.event for tp in TRACEPOINTS])
    for tp in present(facts):
        if tp.event not in ids:
            return "tracepoint", f"tp_btf: no btf_trace_{tp.event} in the kernel's BTF"
        why = btfprog.probe("tp_btf", ids[tp.event])
        if why is not None:
            return "tracepoint", f"tp_btf refused: {why}"
    return "tp_btf", ""


class TpBtf:
    """The attached tp_btf programs; their fds are kept until close()."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def attach(self, facts: KernelFacts, ids: dict[str, int], program: Callable[[str], tuple[int, int]]) -> None:
        """Load and attach the present tracepoints' tp_btf programs (btfprog.Refused: the kernel refused)."""
        for tp in present(facts):
            start, size = program(tp.btf_prog)
            fd = btfprog.load_tracing(start, size, tp.btf_prog, "tp_btf", ids[tp.event])
            self._fds.append(fd)
            self._fds.append(btfprog.attach(fd))

    def close(self) -> None:
        """Detach (closing the link) and free, links first."""
        for fd in reversed(self._fds):
            with suppress(OSError):
                os.close(fd)
        self._fds = []
