"""loader: the Tracer, netdrop's BPF program loaded, attached, and read back.

It hands out raw records (the bytes of each ring buffer sample: struct
nd_event, then its packet) and raw counter keys; decoding happens elsewhere
(decode.py). bcc itself is reached through bccload, the only module that imports it.
"""

from __future__ import annotations

import ctypes
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ..errors import UserError
from ..memory import release_compiler_memory
from . import bccload, btfprog, registry, tracepoints
from . import event as ev
from .bccload import DEFAULT_CACHE
from .bpfsource import BPF_DIR
from .facts import KernelFacts, kernel_symbols, not_specified, type_flags
from .filters import Filters, KernelPods
from .hooks import FunctionHooks, Hook, module_built_in, wanted_hooks
from .podmaps import PodMaps, ip_key
from .ringbuf import DIRECT_RING, EventReader

RINGBUF_PAGES = 1024          # 4 MiB: ~28,000 events of headroom for the reader
MAX_COUNTERS = 16384          # distinct (netns, reason, location) groups
MAX_FILTER = 4096             # entries per filter map
MAX_EVENT_RATE = 10000        # events/s sent to Python by default; counts are exact regardless
# The most --max-event-rate may ask: a u32 budget per CPU per 100 ms window in the
# kernel (events_per_window: rate / 10 on one CPU), far above what Python reads.
MAX_EVENT_RATE_LIMIT = 10**9
MAX_CAUSE_COUNTERS = 4096     # distinct (netns, cause, pod) of the conntrack causes

R = TypeVar("R")


class Count(NamedTuple):
    """One counter key's value: the packets dropped and their bytes (IP length)."""

    packets: int
    bytes: int


CounterKey = ev.CounterKey


def _sum_counts(items: Iterable[tuple[Any, Any]]) -> dict[CounterKey, Count]:
    """bcc's (key, per-CPU values) pairs of the counts map, summed over CPUs."""
    out: dict[CounterKey, Count] = {}
    for key, percpu in items:
        packets = nbytes = 0
        for v in percpu:
            packets += v.packets
            nbytes += v.bytes
        out[(key.netns, key.reason, key.location, key.pod, key.facts)] = Count(packets, nbytes)
    return out


@dataclass(frozen=True)
class Stats:
    matched: int = 0       # drops that passed the filters, all counted exactly
    events: int = 0        # events written to the ring buffer
    lost: int = 0          # events the ring buffer had no room for
    sampled_out: int = 0   # events not sent: over the event rate limit
    counter_full: int = 0  # drops the counter map had no slot for


@dataclass(frozen=True)
class TracerSettings:
    """How the program is built and read, fixed for its life.

    snaplen > 0: events carry up to snaplen bytes of their packet, from the IP
    header on; headers_only stops at the end of the TCP/UDP/ICMP header.
    map_entries is the size of each filter and pod map. hold: count nothing
    until start_counting() (the pod maps that filter by pod are written
    first). tp_btf=False attaches the classic tracepoints even where tp_btf
    would load. direct_ring=False reads the ring buffer through bcc (libbpf's
    reader). stacks: each event carries its kernel stack's id (stack_frames()
    reads it)."""

    cache_dir: Path = DEFAULT_CACHE
    ringbuf_pages: int = RINGBUF_PAGES
    max_event_rate: int = MAX_EVENT_RATE
    snaplen: int = 0
    headers_only: bool = True
    map_entries: int = MAX_FILTER
    hold: bool = False
    tp_btf: bool = True
    direct_ring: bool = DIRECT_RING
    stacks: bool = False


def compile_flags(facts: KernelFacts, settings: TracerSettings, include: Path | None) -> list[str]:
    """The macros the BPF sources are compiled with: numbers read from the running
    kernel and netdrop's own settings, never text from the user."""
    flags = [
        f"-I{BPF_DIR}",
        f"-DND_HAVE_REASON={int(facts.has_reason)}",
        f"-DND_HAVE_ICMP_TP={int(facts.has_icmp_tp)}",
        *type_flags(include),
        f"-DND_REASON_NOT_SPECIFIED={not_specified(facts.reasons)}",
        f"-DND_RINGBUF_PAGES={int(settings.ringbuf_pages)}",
        f"-DND_MAX_COUNTERS={MAX_COUNTERS}",
        f"-DND_MAX_FILTER={int(settings.map_entries)}",
        f"-DND_PAGE_SIZE={os.sysconf('SC_PAGE_SIZE')}",
        f"-DND_STACKS={int(settings.stacks)}",
        *registry.cflags(),
    ]
    # nf_conntrack_max's address, for "table full (count = max = N)": only where
    # nf_conntrack is built in, so that the address holds for the whole run (a
    # module's data moves when it is loaded again). Elsewhere the table full is
    # named without the number. Reading kallsyms takes ~45 ms.
    ct_max = kernel_symbols(["nf_conntrack_max"]).get("nf_conntrack_max", 0) \
        if any(h.module == "nf_conntrack" for h in wanted_hooks(facts)) and module_built_in("nf_conntrack") else 0
    return [*flags, f"-DND_CT_MAX_ADDR={ct_max:#x}", f"-DND_MAX_CAUSE_COUNTERS={MAX_CAUSE_COUNTERS}"]


class Tracer:
    """The loaded BPF program: exact counters, an event ring buffer, filter maps."""

    def __init__(self, facts: KernelFacts, filters: Filters = Filters(),
                 settings: TracerSettings = TracerSettings(),
                 warn: Callable[[str], None] = lambda msg: None) -> None:
        """warn tells the user, once, of a kernel map that is full."""
        self._ready = 0 if settings.hold else ev.ND_FILTER_READY
        self._pod_gen = 1          # 0 marks an empty pod_memo entry
        self._batch_reads = True   # counts(): BPF_MAP_LOOKUP_BATCH until the kernel refuses it
        self.settings = settings
        if (why := btfprog.ringbuf_refusal()) is not None:
            raise UserError(why)
        if settings.ringbuf_pages & (settings.ringbuf_pages - 1):
            raise ValueError("ringbuf_pages must be a power of two")
        if not 0 <= settings.max_event_rate <= MAX_EVENT_RATE_LIMIT:
            raise ValueError(f"max_event_rate must be from 0 to {MAX_EVENT_RATE_LIMIT}")
        bccload.import_bcc()
        self.facts = facts
        if not 0 <= settings.snaplen <= ev.ND_MAX_SNAPLEN:
            raise UserError(f"snaplen must be between 1 and {ev.ND_MAX_SNAPLEN}")
        include, cflags = bccload.kernel_types(facts, settings.cache_dir)
        bccload.use_kernel_types(include)
        cflags += compile_flags(facts, settings, include)
        # The tracepoints as tp_btf where the kernel's BTF names them, else
        # classic tracepoints, which bcc attaches as it loads them.
        tp_ids = tracepoints.btf_ids(facts) if settings.tp_btf else None
        self._tp_btf = tracepoints.TpBtf()
        self._function_hooks: FunctionHooks | None = None
        self._reader: EventReader | None = None
        btf_refusal = ""
        self.bpf = bccload.compile_program([*cflags, f"-DND_TP_BTF={int(tp_ids is not None)}"])
        if tp_ids is not None:
            try:
                self._tp_btf.attach(facts, tp_ids, self._program)
            except btfprog.Refused as exc:
                self._tp_btf.close()
                self.bpf.cleanup()
                tp_ids, btf_refusal = None, f"; tp_btf refused: {exc}"
                self.bpf = bccload.compile_program([*cflags, "-DND_TP_BTF=0"])
            except BaseException:
                self.close()
                raise
        self.attach_form = "tp_btf" if tp_ids is not None else "tracepoint"
        self._stack_memo: dict[int, tuple[int, ...] | None] = {}
        try:
            if settings.stacks:
                self._stack_fd = int(self.bpf[b"stacks"].map_fd)
                self._stack_key, self._stack_value = ctypes.c_int(0), (ctypes.c_uint64 * ev.ND_STACK_DEPTH)()
                self._lookup = bccload.lookup_elem()
            release_compiler_memory()
            self._reader = EventReader(self.bpf, settings.ringbuf_pages, settings.direct_ring)
            form = self.attach_form
            # The first tracepoint's line (kfree_skb: the one every drop needs) says why not tp_btf.
            self.hooks = [Hook(f"{form} {tp.name}", tp.in_kernel(facts),
                               tp.says(facts) + (btf_refusal if i == 0 else ""))
                          for i, tp in enumerate(registry.TRACEPOINTS)]
            # Function hooks: fentry/fexit where the kernel takes them, else
            # kprobes; a module's function when the module is there (hooks.py).
            with bccload.quiet_stderr():   # libbcc prints each refused attach; the hook's line says it once
                self._function_hooks = FunctionHooks(self.bpf, wanted_hooks(facts), facts.tracefs, self._program)
            self._hooks_at = len(self.hooks)
            self.hooks += self._function_hooks.hooks
            self.filters = Filters()
            self.pods: KernelPods | None = None
            self._pod_maps = PodMaps(self.bpf, settings.map_entries, warn)
            self._budget = self._events_per_window()
            self.set_filters(filters)
        except BaseException:   # a signal or a bad filter: nothing stays attached
            self.close()
            raise

    def _program(self, name: str) -> tuple[int, int]:
        """The address and length of a compiled program's instructions (map fds in place)."""
        return bccload.program_span(self.bpf, name)

    @property
    def function_hooks(self) -> list[Hook]:
        """The function hooks' lines of `hooks`."""
        return self.hooks[self._hooks_at:]

    def maintain_hooks(self) -> bool:
        """Attach the function hooks of a module loaded since (nf_conntrack, which
        kube-proxy may load after netdrop started), detach those of one that went;
        `hooks` follows. A few stat() calls: call it on every tick. True if a hook changed."""
        fh = self._function_hooks
        if fh is None or not fh.due():
            return False
        with bccload.quiet_stderr():   # only around an attach: fd 2 is the whole process's
            changed = fh.maintain()
        if changed:
            self.hooks[self._hooks_at:] = fh.hooks
        return changed

    def poll_records(self, timeout_ms: int = 100, max_events: int | None = None) -> list[bytes]:
        """Events delivered since the last call (waits up to timeout_ms for the
        first), each as the bytes of its ring buffer sample: struct nd_event,
        then the packet bytes it carries (caplen of them; none unless snaplen).
        max_events: at most that many; what is left stays in the ring buffer for
        the next call, and what no longer fits there the kernel counts as lost.
        None: until the ring is empty, which under a drop storm is never."""
        # The stacks read for the last batch may have been replaced since (stack_frames).
        self._stack_memo.clear()
        reader = self._reader
        return [] if reader is None else reader.read(timeout_ms, max_events)

    def poll(self, timeout_ms: int = 100, max_events: int | None = None) -> list[tuple[ev.NdEvent, bytes]]:
        """poll_records, each event as a ctypes copy and its packet bytes."""
        head = ctypes.sizeof(ev.NdEvent)
        out = []
        for rec in self.poll_records(timeout_ms, max_events):
            raw = ev.NdEvent.from_buffer_copy(rec)
            out.append((raw, rec[head:head + raw.caplen]))
        return out

    def stack_frames(self, stack_id: int) -> tuple[int, ...] | None:
        """The frames (return addresses, innermost first) the stack map holds
        for stack_id now, None if it holds none. Read once per id per batch of
        records (poll_records): a storm repeats few stacks, and the kernel
        replaces a slot only when another stack's hash lands on it
        (kernel/stacks.py checks each stack against its event)."""
        memo = self._stack_memo
        if stack_id in memo:
            return memo[stack_id]
        frames: tuple[int, ...] | None = None
        if self.settings.stacks:
            self._stack_key.value = stack_id
            if self._lookup(self._stack_fd, ctypes.byref(self._stack_key), ctypes.byref(self._stack_value)) == 0:
                frames = tuple(ip for ip in self._stack_value if ip) or None
        memo[stack_id] = frames
        return frames

    def start_counting(self) -> None:
        """From the next drop on, count and report what passes the filters."""
        self._ready = ev.ND_FILTER_READY
        self._write_cfg()

    def set_filters(self, filters: Filters) -> None:
        """Replace the filter maps' contents; takes effect for the next drop."""
        flags = 0
        keys: Sequence[object]   # each map's own key type
        for name, keys, kind in (
            ("filter_netns", [ctypes.c_uint32(v) for v in filters.netns], ev.ND_FILTER_NETNS),
            ("filter_ip", [ip_key(v) for v in filters.ips], ev.ND_FILTER_IP),
            ("filter_port", [ctypes.c_uint16(v) for v in filters.ports], ev.ND_FILTER_PORT),
        ):
            if len(keys) > (most := self.settings.map_entries):
                raise UserError(f"at most {most} values per filter kind ({name}): {len(keys)} given")
            table = self.bpf[name.encode()]
            table.clear()
            for key in keys:
                table[key] = ctypes.c_uint8(1)
            if keys:
                flags |= kind
        self.filters = filters
        self._flags = flags
        self._write_cfg()

    def _write_cfg(self) -> None:
        cfg = ev.NdFilterCfg(self._flags | self._ready, self._budget)
        cfg.snaplen, cfg.headers_only = self.settings.snaplen, int(self.settings.headers_only)
        netns = self.filters.netns
        if 0 < len(netns) <= ev.ND_NETNS_INLINE:
            cfg.netns_inline_n = len(netns)
            for i, inode in enumerate(sorted(netns)):
                cfg.netns_inline[i] = inode
        if self.pods is not None:
            cfg.pod_flags_raw = ev.ND_POD_TAG | (ev.ND_POD_FILTER if self.pods.filter else 0)
            cfg.node_netns = self.pods.node_netns
        # Every write of the pod maps is followed by a new generation: the
        # program's per-CPU pod_memo forgets what it read under the old one.
        cfg.pod_gen = self._pod_gen
        self.bpf[b"filter_cfg"][ctypes.c_int(0)] = cfg

    def set_pods(self, pods: KernelPods | None) -> None:
        """Make the pod maps hold exactly `pods` (None: no pod tagging). New
        entries go in before stale ones go out, so a pod that stays is never
        missing from the maps, not even for a moment."""
        if pods == self.pods:   # the pod index is rebuilt twice a second, mostly unchanged
            return
        self._pod_maps.replace(self.pods, pods)
        self.pods = pods
        self._pod_gen += 1
        self._write_cfg()

    def _events_per_window(self) -> int:
        """The rate limit as a per-CPU budget per sampling window (0: none)."""
        rate = self.settings.max_event_rate
        if not rate:
            return 0
        ncpus = bccload.possible_cpus()
        per_window = rate * ev.ND_EVENT_WINDOW_NS / 1e9 / ncpus
        return max(1, math.ceil(per_window))

    def counts(self) -> dict[CounterKey, Count]:
        """Exact drop counts: (netns, reason, location address, pod tag, packet facts) -> packets
        and bytes since load: the counts hash plus the per-CPU slots
        (bpf/netdrop.c, count()), which hold disjoint parts of each key's count.
        One BPF_MAP_LOOKUP_BATCH (kernel 5.6+) reads a whole map: 9-10 ms for
        10,000 keys, where a lookup per key (items()) took 55-63 ms. A kernel or
        map that refuses batches is read key by key, and not asked again."""
        out = self._read(self.bpf[b"counts"], _sum_counts)
        for key, c in self._slot_counts().items():
            had = out.get(key)
            out[key] = c if had is None else Count(had.packets + c.packets, had.bytes + c.bytes)
        return out

    def _read(self, table: Any, take: Callable[[Iterable[tuple[Any, Any]]], R]) -> R:
        """take() of the map's (key, value) pairs as bcc reads them, by batch if
        the kernel allows. take() consumes them as they come: bcc's batch reader
        is a generator (a failed batch raises while it is consumed, and 10,000
        pairs alive at once cost the collector ~6 ms a read)."""
        if self._batch_reads:
            try:
                return take(table.items_lookup_batch())
            # bcc raises bare Exception for a failed bpf() call (EINVAL, ENOTSUPP before 5.6)
            except Exception:  # noqa: BLE001
                self._batch_reads = False
        return take(table.items())

    def _slot_counts(self) -> dict[CounterKey, Count]:
        """The per-CPU count slots, read twice: a slot counts only if it was taken
        (packets > 0) and its key is the same in both reads. A key is written
        once, when it takes a free slot, and a read that overlapped that write
        may have copied a torn key (the kernel's copy of the map value keeps no
        order); the second read, after, sees it whole. Such a slot's count waits
        for the next call: it is new, so leaving it out never shows a count
        going backwards."""
        table = self.bpf[b"count_slots"]
        first = self._read(table, list)
        # bcc gives an array's index as an int (batch reads) or a ctypes int (items())
        second = {int(getattr(index, "value", index)): percpu for index, percpu in self._read(table, list)}
        out: dict[CounterKey, Count] = {}
        for index, percpu in first:
            again = second.get(int(getattr(index, "value", index)))
            if again is None:
                continue
            for a, b in zip(percpu, again, strict=True):
                key = (a.netns, a.reason, a.location, a.pod, a.facts)
                if not a.packets or key != (b.netns, b.reason, b.location, b.pod, b.facts):
                    continue
                had = out.get(key)
                out[key] = (Count(a.packets, a.bytes) if had is None
                            else Count(had.packets + a.packets, had.bytes + a.bytes))
        return out

    def cause_counts(self) -> dict[tuple[int, int, int], Count]:
        """Exact counts of what the function hooks saw: (netns, cause, pod tag)
        -> packets and bytes, cause an ND_CAUSE_* (a conntrack insert race lost,
        a full table). Empty where no hook is attached."""
        out: dict[tuple[int, int, int], Count] = {}
        for (netns, _reason, cause, pod, _facts), c in _sum_counts(self.bpf[b"cause_counts"].items()).items():
            out[(netns, cause, pod)] = c
        return out

    def cpu_totals(self) -> dict[str, int]:
        """The per-CPU bookkeeping (struct nd_cpu_state, in cpu_state's struct nd_cpu) summed over CPUs."""
        percpu = self.bpf[b"cpu_state"][ctypes.c_int(0)]
        return {f: sum(getattr(c.st, f) for c in percpu) for f in ("events", "lost", "sampled_out", "counter_full")}

    def stats(self, counts: dict[CounterKey, Count] | None = None, totals: dict[str, int] | None = None) -> Stats:
        """Totals over all CPUs. matched is derived: every drop that passed the
        filters is in a counter, or in counter_full. Read totals (cpu_totals())
        before counts, as this does when given neither: the program counts a drop
        before it sends (or loses, or samples out) its event, so read in that
        order events + lost + sampled_out never exceed matched, even in a storm."""
        total = totals if totals is not None else self.cpu_totals()
        counted = sum(c.packets for c in (counts if counts is not None else self.counts()).values())
        return Stats(matched=counted + total["counter_full"], **total)

    def close(self) -> None:
        reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None:
            reader.close()
        hooks, self._function_hooks = getattr(self, "_function_hooks", None), None
        if hooks is not None:
            hooks.close()
        self._tp_btf.close()
        self.bpf.cleanup()

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
