"""kernel: what this kernel lets netdrop see: BTF, tracefs, drop reasons, kprobes, lockdown;
what netdrop would attach (the ring buffer, the tracepoints' form, each function hook); BPF
programs that filter packets on cgroups."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError
from ..explain import evidence
from ..kernel import btfprog, facts, tracepoints
from ..kernel import hooks as function_hooks
from .findings import Cmd, Finding, fix, plural
from .node import Node, read_small


def check_kernel(tracefs_candidates: Sequence[Path]) -> list[Finding]:
    out = []
    btf = facts.BTF_VMLINUX.exists()
    out.append(Finding("kernel: BTF", "ok" if btf else "error",
                       "kernel types available from BTF" if btf else "no BTF: netdrop needs /sys/kernel/btf/vmlinux "
                       "or headers of this kernel", [str(facts.BTF_VMLINUX)],
                       None if btf else "use a kernel built with CONFIG_DEBUG_INFO_BTF=y"))
    try:
        tracefs: Path | None = facts.find_tracefs(tracefs_candidates)
    except UserError:   # not mounted: what find_tracefs raises
        out.append(Finding("kernel: tracefs", "warning", "tracefs is not mounted", [],
                           *fix(Cmd("mount -t tracefs tracefs /sys/kernel/tracing"))))
        tracefs = None
    if tracefs is not None:
        fmt = facts.tracepoint_format(tracefs, *facts.KFREE_SKB)
        reason = fmt is not None and "reason" in facts.format_fields(fmt)
        out.append(Finding("kernel: drop reasons", "ok" if reason else "warning",
                           f"skb:kfree_skb carries drop reasons ({len(facts.reasons_from_format(fmt or ''))} of "
                           f"them, read from this kernel)" if reason else
                           "skb:kfree_skb has no drop reason (kernel before 5.17): drops are classified by "
                           "location", [f"{tracefs}/events/skb/kfree_skb/format"]))
        kprobes = (tracefs / "kprobe_events").exists()
        out.append(Finding("kernel: kprobes", "info" if not kprobes else "ok",
                           "kprobes available" if kprobes else "no kprobes (CONFIG_KPROBES not set): function hooks "
                           "unavailable, tracepoints suffice", [f"{tracefs}/kprobe_events"]))
    lockdown = Path("/sys/kernel/security/lockdown")
    mode = read_small(lockdown)
    if mode is not None:
        mode = mode.strip()
        out.append(Finding("kernel: lockdown", "info", f"lockdown: {mode}", [str(lockdown)]))
    else:
        out.append(Finding("kernel: lockdown", "unchecked", "securityfs is not mounted: lockdown mode unknown", [],
                           *fix(Cmd("mount -t securityfs securityfs /sys/kernel/security"))))
    return out


def check_attach(ringbuf: str | None, tracepoints: tuple[str, str]) -> list[Finding]:
    """What the kernel answered when asked as netdrop's loader asks (kernel.btfprog):
    the ring buffer (netdrop's floor, Linux 5.8) and the drop tracepoint's form."""
    form, why = tracepoints
    return [
        Finding("kernel: ring buffer", "ok" if ringbuf is None else "error",
                "BPF ring buffer available" if ringbuf is None else ringbuf),
        Finding("kernel: tracepoints", "ok" if form == "tp_btf" else "info",
                "skb:kfree_skb and icmp:icmp_send as BTF-typed tracepoints (tp_btf)" if form == "tp_btf" else
                f"skb:kfree_skb and icmp:icmp_send as classic tracepoints ({why})"),
    ]


def check_hooks(hooks: Sequence[tuple[str, bool, str]]) -> list[Finding]:
    """Per function hook of netdrop (kernel.hooks.support: name, allowed,
    detail): whether this node lets it attach, and what is lost where it does not."""
    if not hooks:
        return [Finding("kernel: function hooks", "info", "no function hook is wanted on this kernel")]
    return [Finding(f"hook: {name}", "ok" if allowed else "info",
                    f"{name}: {detail}" if allowed else f"{name} cannot attach here: {detail}")
            for name, allowed, detail in hooks]


def attach_findings(tracefs_candidates: Sequence[Path]) -> list[Finding]:
    """What netdrop would attach here and in which form (the ring buffer, the
    tracepoints, each function hook), asked of the kernel as the loader asks,
    without loading netdrop's program."""
    try:
        kernel = facts.probe_kernel(facts.find_tracefs(tracefs_candidates))
        hooks = function_hooks.support(kernel)
        attach = check_attach(btfprog.ringbuf_refusal(), tracepoints.form(kernel))
    except (UserError, OSError) as exc:
        return [Finding("kernel: function hooks", "unchecked", f"could not check: {exc}")]
    return attach + check_hooks([(h.name, h.attached, h.detail) for h in hooks])


def check_cgroup_programs(node: Node) -> list[Finding]:
    """BPF programs filtering packets on cgroups (the whole node's, whatever --netns says)."""
    progs = evidence.read_node().cgroup_programs
    if progs is None:
        return [Finding("cgroup bpf", "unchecked", "bpftool could not list cgroup programs (bpftool missing, or "
                        "no cgroup2 mount)")]
    skb = [p for p in progs if p.hook in ("cgroup_inet_ingress", "cgroup_inet_egress")]
    if not skb:
        return [Finding("cgroup bpf", "ok", "no BPF program filters packets on a cgroup")]
    pods = [p for p in skb if "kubepods" in p.where]
    return [Finding("cgroup bpf", "info", f"BPF programs filter packets on {plural(len(skb), 'cgroup hook')} "
                    f"({len(pods)} of pods): what they drop shows as BPF_CGROUP_EGRESS or SOCKET_FILTER, "
                    "with the program named", [str(p) for p in skb[:10]],
                    *fix(Cmd("bpftool cgroup tree"), "; ", Cmd("bpftool prog show id N"),
                         " (its holder: the CNI or security agent)"))]
