"""The function-hook programs (bpf/funchooks.c) on the real kernel.

Ours refuses to attach them (no CONFIG_KPROBES; fentry/fexit programs may not
even load): its verifier checks every kprobe-form program, each loaded here and
accepted. The fentry/fexit forms call the same bodies (ct_confirm_done,
ct_alloc_done, fwd_entry) and are refused here (EPERM): they are compiled, and
loaded for real in the QEMU guests of scripts/kernels (tests/kernel/test_matrix.py, test_guest.py).
The attach step is tested by faking the kernel's answer where bcc asks it
(lib.bpf_attach_kprobe, and its undoing at close), nothing else. The join of a
hook's note to the drop's event is tested by writing the note a probe would leave.
"""

import ctypes
import dataclasses
import os
import re
import socket
from pathlib import Path

import bcc
import pytest

from tracer.kernel import bpfsource, loader, registry
from tracer.kernel import hooks as function_hooks
from tracer.kernel.facts import find_tracefs, probe_kernel
from tracer.kernel.filters import Filters


@pytest.fixture(scope="module")
def facts():
    return probe_kernel(find_tracefs())


def test_every_function_hook_program_passes_the_verifier(facts):
    source = bpfsource.FUNCHOOKS_SOURCE.read_text()
    in_source = re.findall(r"^int (nd_\w+)\(struct pt_regs \*ctx", source, re.M)
    assert sorted(in_source) == sorted(registry.KPROBE_PROGRAMS)
    assert sorted(re.findall(r"^BPF_PROG\((nd_\w+),", source, re.M)) == sorted(registry.BTF_PROGRAMS)
    with loader.Tracer(facts) as tracer:
        for name in registry.KPROBE_PROGRAMS:
            fn = tracer.bpf.load_func(name.encode(), bcc.BPF.KPROBE)   # raises if the verifier rejects it
            assert fn.fd > 0, name
        for name in registry.BTF_PROGRAMS:     # compiled in every build, whatever the kernel allows
            start, size = tracer._program(name)
            assert start and size > 0, name


def test_where_the_kernel_refuses_hooks_one_line_each_says_why_and_counting_goes_on(facts, node):
    # Counting the simulated node's namespaces only: a kernel that lets a hook attach
    # would count every namespace's conntrack causes otherwise.
    with loader.Tracer(facts, Filters(netns=frozenset(node.netns_inodes().values()))) as tracer:
        hooks = {h.name: h for h in tracer.hooks}
        for h in function_hooks.wanted_hooks(facts):
            hook = hooks[f"{h.kprobe_form} {h.func}"]
            assert not hook.attached and "\n" not in hook.detail
            if not (facts.tracefs / "kprobe_events").exists():
                assert hook.detail.startswith(f"unavailable: kernel built without CONFIG_KPROBES; {h.btf_form}")
        assert hooks[f"{tracer.attach_form} skb:kfree_skb"].attached
        assert tracer.cause_counts() == {}


@pytest.fixture
def kernel_says(monkeypatch):
    """Fake the kernel's answer to bcc's kprobe attach (an fd, or -1 for the
    events named in `refuse`), and to its undoing at close."""
    calls = {"attach": [], "refuse": set()}

    def attach(prog_fd, is_return, ev_name, fn_name, offset, maxactive):
        calls["attach"].append((bool(is_return), fn_name.decode(), prog_fd))
        if (bool(is_return), fn_name.decode()) in calls["refuse"]:
            return -1
        return os.open(os.devnull, os.O_RDONLY)

    def close(fd):
        os.close(fd)
        return 0

    monkeypatch.setattr(bcc.lib, "bpf_attach_kprobe", attach)
    monkeypatch.setattr(bcc.lib, "bpf_close_perf_event_fd", close)
    monkeypatch.setattr(bcc.lib, "bpf_detach_kprobe", lambda ev_name: 0)
    return calls


def test_hooks_the_kernel_accepts_are_attached_as_kprobes_with_their_programs(facts, kernel_says):
    with loader.Tracer(facts) as tracer:
        hooks = {h.name: h for h in tracer.hooks}
        attached = kernel_says["attach"]
    # Entry and return probe of each conntrack function, each a program the verifier loaded.
    assert [(r, f) for r, f, _fd in attached] == [(False, "__nf_conntrack_confirm"), (True, "__nf_conntrack_confirm"),
                                                   (False, "__nf_conntrack_alloc"), (True, "__nf_conntrack_alloc")]
    assert all(fd > 0 for *_, fd in attached)
    assert hooks["kretprobe __nf_conntrack_confirm"].attached
    assert hooks["kretprobe __nf_conntrack_confirm"].detail.startswith("which flow lost a conntrack insert race (fexit")
    assert hooks["kretprobe __nf_conntrack_alloc"].attached


def test_a_return_probe_refused_leaves_its_entry_probe_detached(facts, kernel_says):
    kernel_says["refuse"].add((True, "__nf_conntrack_alloc"))
    with loader.Tracer(facts) as tracer:
        hooks = {h.name: h for h in tracer.hooks}
        left = {ev for ev, fns in tracer.bpf.kprobe_fds.items() if fns}
    assert hooks["kretprobe __nf_conntrack_confirm"].attached
    alloc = hooks["kretprobe __nf_conntrack_alloc"]
    assert not alloc.attached and "\n" not in alloc.detail and "; fexit " in alloc.detail
    assert left == {b"p___nf_conntrack_confirm", b"r___nf_conntrack_confirm"}


@pytest.mark.parametrize("has_reason", [True, False], ids=["reasons", "no-reasons"])
def test_btf_form_refused_at_load_falls_back_to_kprobes_and_says_why(facts, kernel_says, has_reason):
    """This kernel refuses fentry/fexit loads (EPERM): each hook says so once, in its
    kprobe form's line, and the kprobe form attaches (faked here) from the same
    compiled program: nothing is compiled twice."""
    kernel = facts if has_reason else dataclasses.replace(facts, has_reason=False, reasons={})
    with loader.Tracer(kernel) as tracer:
        hooks = {h.name: h for h in tracer.hooks}
    conf = hooks["kretprobe __nf_conntrack_confirm"]
    assert conf.attached
    assert conf.detail.endswith("(fexit refused by the kernel: Operation not permitted)"), conf.detail
    assert ("kprobe ip_forward" in hooks) == (not has_reason)


def jiffies() -> int:
    """The kernel's jiffies_64 (bpf_jiffies64() in the program), from /proc/timer_list."""
    return int(re.search(r"^jiffies: (\d+)", Path("/proc/timer_list").read_text(), re.M).group(1))


def test_an_event_carries_what_a_hook_noted_of_its_flow(facts, node):
    # No hook can fire here, so the note __nf_conntrack_alloc's return probe leaves
    # for a full table is written into the per-CPU notes (cpu_state) as that probe would
    # (every CPU, stamped with the current jiffy), and a drop of that flow follows
    # at once: its event must carry the cause and nf_conntrack_max, a drop of
    # another port must not. The join allows two or three jiffies (8-12 ms at HZ=250),
    # so a late attempt is retried, a bounded number of times.
    from tracer.kernel.decode import Decoder
    from tracer.kernel.facts import Kallsyms
    from tracer.node.nsexec import socket_in

    db = node.pods["db"]
    ino = node.netns_inodes()[db.netns]
    dec = Decoder(facts.reasons, Kallsyms.load())
    sock = socket_in(f"/run/netns/{db.netns}", socket.AF_INET, socket.SOCK_DGRAM)
    assert sock is not None
    with sock, loader.Tracer(facts, Filters(netns=frozenset({ino})), loader.TracerSettings(max_event_rate=0)) as tracer:
        sock.bind(("127.0.0.1", 0))
        sport = sock.getsockname()[1]
        cpu_state = tracer.bpf[b"cpu_state"]   # struct nd_cpu: the notes beside the bookkeeping
        joined, other = [], []
        for _attempt in range(10):
            leaf = cpu_state.Leaf()
            now = jiffies()
            for c in leaf:
                n = c.fn
                n.skb[0], n.jiffies[0], n.newest = 0, now, now
                n.value[0], n.ports[0], n.l4proto[0] = 262144, sport << 16 | 9996, 17
                n.cause[0], n.next = registry.CAUSE_CODES["ct-table-full"], 1
            cpu_state[ctypes.c_int(0)] = leaf
            sock.sendto(b"x" * 10, ("127.0.0.1", 9996))
            sock.sendto(b"x" * 10, ("127.0.0.1", 9995))
            drops = [dec.decode_record(r) for r in tracer.poll_records(300)]
            joined = [d for d in drops if d.dport == 9996 and d.cause is not None]
            other += [d for d in drops if d.dport == 9995]
            if joined:
                break
    assert joined, "no attempt's drop joined its note within the jiffy window"
    assert (joined[0].cause, joined[0].ct_max, joined[0].sport) == ("ct-table-full", 262144, sport)
    assert other and all(d.cause is None for d in other)
