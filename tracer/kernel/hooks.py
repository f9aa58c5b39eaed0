"""hooks: how the function hooks of bpf/funchooks.c (registry.FUNCTION_HOOKS) are attached.

Each hook has two programs in the one compiled module: a BTF form (fentry or
fexit: arguments and return value at once, ~no overhead) and a kprobe form
(kprobe, or kprobe + kretprobe keeping the arguments). Per hook, the BTF form is
tried first, loaded against the function's BTF, the kernel's or, for a module's
function, the module's (btfprog); where the kernel refuses it (lockdown, an LSM,
no BTF for the module: 5.10 has none), the kprobe form, attached by bcc by name.
A function of a module not loaded yet (nf_conntrack: kube-proxy loads it at
boot, often after netdrop starts) is waited for: maintain() attaches the hook
when the module comes and detaches it if the module goes.

`support()` answers the same question without attaching (for `netdrop doctor`):
the same BTF lookup and an empty program of the same attach type loaded and
closed, so doctor and watch name the same form. Nothing is remembered between
runs: the probe is one system call.

No bcc here: the loader hands the compiled module (for kprobes and the programs'
instructions) and reads `hooks`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import btfprog
from .facts import BTF_DIR, BtfFunction, KernelFacts, btf_function
from .registry import FUNCTION_HOOKS, FunctionHook

SYS_MODULE = Path("/sys/module")
# Return probes in flight per CPU at once: a softirq may nest one call in another.
KRETPROBE_MAXACTIVE = 16


@dataclass(frozen=True)
class Hook:
    """One attach point as the header, doctor and /metrics show it."""

    name: str
    attached: bool
    detail: str = ""


def wanted_hooks(facts: KernelFacts) -> tuple[FunctionHook, ...]:
    """The function hooks this kernel could use: ip_forward only without drop
    reasons, __icmp_send only without the icmp:icmp_send tracepoint."""
    return tuple(h for h in FUNCTION_HOOKS if not (h.only_without_reason and facts.has_reason)
                 and not (h.only_without_icmp_tp and facts.has_icmp_tp))


def module_loaded(module: str, sys_module: Path = SYS_MODULE) -> bool:
    """A loadable module is loaded and live: its initstate (which loadable modules
    alone have) says "live". While it says "coming" its init runs and its BTF is
    not yet usable (btf_try_get_module(), kernel/bpf/btf.c): not loaded yet."""
    try:
        with open(sys_module / module / "initstate", "rb") as f:
            return f.read(16).strip() == b"live"
    except OSError:
        return False


def module_built_in(module: str, sys_module: Path = SYS_MODULE) -> bool:
    """A module compiled into the kernel: /sys/module has it (for its parameters)
    without the initstate of a loadable one."""
    return (sys_module / module).is_dir() and not (sys_module / module / "initstate").exists()


def _load_refusal(exc: BaseException) -> str:
    """bcc's words for a refused load, in one line; it words EPERM as a privilege problem."""
    text = str(exc)
    return "program load not permitted" if "privilege" in text else " ".join(text.split())


def kprobe_refusal(tracefs: Path, exc: BaseException | None, btf_why: str) -> str:
    """Why a kprobe did not attach, in one line, with why the BTF form was not used."""
    if not (tracefs / "kprobe_events").exists():
        why = "unavailable: kernel built without CONFIG_KPROBES"
    else:
        why = f"refused by the kernel: {_load_refusal(exc)}" if exc is not None else "refused by the kernel"
    return f"{why}; {btf_why}"


def attach_kprobe_hook(bpf: Any, h: FunctionHook) -> None:
    """Attach h's kprobe (and kretprobe) programs; on failure nothing of h stays
    attached and bcc's exception is raised. The only place netdrop asks the
    kernel to attach a kprobe (tests/kernel/kernel/test_funchooks.py fakes its answer
    at bcc's lib.bpf_attach_kprobe)."""
    bpf.attach_kprobe(event=h.func.encode(), fn_name=h.entry.encode())
    if h.ret:
        try:
            bpf.attach_kretprobe(event=h.func.encode(), fn_name=h.ret.encode(), maxactive=KRETPROBE_MAXACTIVE)
        except BaseException:
            with suppress(Exception):
                bpf.detach_kprobe(event=h.func.encode(), fn_name=h.entry.encode())
            raise


def detach_kprobe_hook(bpf: Any, h: FunctionHook) -> None:
    # bcc raises bare Exception for a detach of what is gone already
    with suppress(Exception):
        if h.ret:
            bpf.detach_kretprobe(event=h.func.encode(), fn_name=h.ret.encode())
    with suppress(Exception):
        bpf.detach_kprobe(event=h.func.encode(), fn_name=h.entry.encode())


def _in_kernel(h: FunctionHook, btf_dir: Path, sys_module: Path) -> bool:
    """h's function is in the running kernel: built in (no module named, a module
    compiled in, or the function in vmlinux's BTF), or its module loaded."""
    return h.module is None or module_loaded(h.module, sys_module) or module_built_in(h.module, sys_module) \
        or btf_function(h.func, None, btf_dir) is not None


def _btf_target(h: FunctionHook, btf_dir: Path) -> tuple[BtfFunction, int] | str:
    """Where h's BTF form would attach: the function's BTF and an fd of the BTF
    object that holds it (0 for vmlinux; the caller closes a module's), or why
    there is none."""
    where = btf_function(h.func, h.module, btf_dir)
    if where is None:
        if h.module and not (btf_dir / h.module).exists():
            return f"{h.btf_form}: no BTF for module {h.module} (kernel built without CONFIG_DEBUG_INFO_BTF_MODULES)"
        return f"{h.btf_form}: {h.func} is not in the kernel's BTF"
    if where.module is None:
        return where, 0
    fd = btfprog.kernel_btf_fd(where.module)
    if fd is None:
        return f"{h.btf_form}: the kernel lists no BTF object for module {where.module}"
    return where, fd


@dataclass
class _Attached:
    form: str                           # "btf" or "kprobe"
    fds: tuple[int, ...] = ()           # BTF form: link, program, module BTF (closed in that order)
    in_module: bool = False             # the function is a loaded module's, which may go


class FunctionHooks:
    """The function hooks of one loaded program. `hooks` (one Hook per wanted
    hook, replaced in place so that whoever holds the list sees the change)
    says for each its form and whether it is attached, or why not."""

    def __init__(self, bpf: Any, wanted: Sequence[FunctionHook], tracefs: Path,
                 program: Callable[[str], tuple[int, int]], btf_dir: Path = BTF_DIR,
                 sys_module: Path = SYS_MODULE) -> None:
        """program(name) gives the address and length of a compiled program's
        instructions (bcc's bpf_function_start and _size)."""
        self._bpf, self._tracefs, self._program = bpf, tracefs, program
        self._btf_dir, self._sys_module = btf_dir, sys_module
        self.wanted = tuple(wanted)
        self._attached: dict[str, _Attached] = {}
        self.hooks: list[Hook] = []
        try:
            for h in self.wanted:
                self.hooks.append(self._attach(h))
        except BaseException:       # a signal meanwhile: what is attached goes again
            self.close()
            raise

    def _attach(self, h: FunctionHook) -> Hook:
        in_module = h.module is not None and module_loaded(h.module, self._sys_module)
        if not _in_kernel(h, self._btf_dir, self._sys_module):
            return Hook(f"{h.btf_form} {h.func}", False,
                        f"waiting for module {h.module}: attached when it is loaded")
        target = _btf_target(h, self._btf_dir)
        if not isinstance(target, str):
            where, obj_fd = target
            try:
                start, size = self._program(h.btf_prog)
                prog = btfprog.load_tracing(start, size, h.btf_prog, h.btf_form, where.btf_id, obj_fd)
                try:
                    link = btfprog.attach(prog)
                except btfprog.Refused:
                    os.close(prog)
                    raise
            except btfprog.Refused as exc:
                if obj_fd:
                    os.close(obj_fd)
                btf_why = f"{h.btf_form} refused by the kernel: {exc}"
            else:
                self._attached[h.func] = _Attached("btf", (link, prog, *((obj_fd,) if obj_fd else ())), in_module)
                return Hook(f"{h.btf_form} {h.func}", True, h.gives)
        else:
            btf_why = target
        try:
            attach_kprobe_hook(self._bpf, h)
        # bcc raises bare Exception for a failed attach
        except Exception as exc:  # noqa: BLE001
            return Hook(f"{h.kprobe_form} {h.func}", False, kprobe_refusal(self._tracefs, exc, btf_why))
        self._attached[h.func] = _Attached("kprobe", in_module=in_module)
        return Hook(f"{h.kprobe_form} {h.func}", True, f"{h.gives} ({btf_why})")

    def _detach(self, h: FunctionHook) -> None:
        got = self._attached.pop(h.func, None)
        if got is None:
            return
        if got.form == "kprobe":
            detach_kprobe_hook(self._bpf, h)
        for fd in got.fds:
            with suppress(OSError):
                os.close(fd)

    def _due(self, i: int, h: FunctionHook) -> bool:
        """Hook i awaits a module now live, or is attached to one that went."""
        if h.module is None:
            return False
        got = self._attached.get(h.func)
        if got is None:
            return self.hooks[i].detail.startswith("waiting") and module_loaded(h.module, self._sys_module)
        return got.in_module and not module_loaded(h.module, self._sys_module)

    def due(self) -> bool:
        """maintain() has something to do (a few stat() calls)."""
        return any(self._due(i, h) for i, h in enumerate(self.wanted))

    def maintain(self) -> bool:
        """Attach what waits for a module that is now loaded, detach what
        belongs to one that went (a kprobe on a function that is gone fires no
        more; an fentry/fexit program holds its module, which cannot go while
        it is attached). True if a hook changed."""
        changed = False
        for i, h in enumerate(self.wanted):
            if not self._due(i, h):
                continue
            if h.func not in self._attached:
                self.hooks[i] = self._attach(h)
                changed = True
            else:
                self._detach(h)
                self.hooks[i] = Hook(f"{h.btf_form} {h.func}", False,
                                     f"waiting for module {h.module}: it was unloaded; attached when it is loaded")
                changed = True
        return changed

    def close(self) -> None:
        for h in self.wanted:
            self._detach(h)


def support(facts: KernelFacts, btf_dir: Path = BTF_DIR, sys_module: Path = SYS_MODULE) -> list[Hook]:
    """Which function hooks this node allows, and in which form, without loading
    netdrop (for `netdrop doctor`): the same choice FunctionHooks makes, with an
    empty program loaded in place of the real one."""
    out = []
    kprobes = (facts.tracefs / "kprobe_events").exists()
    for h in wanted_hooks(facts):
        if not _in_kernel(h, btf_dir, sys_module):
            out.append(Hook(f"{h.btf_form} {h.func}", False,
                            f"module {h.module} is not loaded: netdrop attaches the hook when it is"))
            continue
        target = _btf_target(h, btf_dir)
        if isinstance(target, str):
            btf_why = target
        else:
            where, obj_fd = target
            why = btfprog.probe(h.btf_form, where.btf_id, obj_fd)
            if obj_fd:
                os.close(obj_fd)
            if why is None:
                out.append(Hook(f"{h.btf_form} {h.func}", True, f"allowed: {h.gives}"))
                continue
            btf_why = f"{h.btf_form} refused by the kernel: {why}"
        if kprobes:
            out.append(Hook(f"{h.kprobe_form} {h.func}", True, f"allowed: {h.gives} ({btf_why})"))
        else:
            out.append(Hook(f"{h.kprobe_form} {h.func}", False, kprobe_refusal(facts.tracefs, None, btf_why)))
    return out
