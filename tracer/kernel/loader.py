"""loader: compiles bpf/netdrop.c with bcc, attaches it, and reads it back.

The only module that imports bcc. It hands out raw records (the bytes of
each ring buffer sample: struct nd_event, then its packet) and raw counter
keys; decoding happens elsewhere (decode.py).
"""

from __future__ import annotations

import ctypes
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from ..errors import UserError
from ..node.nsexec import own_working_directory
from ..trust import private_dir
from . import event as ev
from . import btfprog
from .facts import (
    KernelFacts,
    bcc_helper_ids,
    btf_include_tree,
    btf_tracepoint_ids,
    kernel_headers,
    kernel_symbols,
    not_specified,
    type_flags,
)
from .hooks import FunctionHooks, Hook, module_built_in, wanted_hooks
from ..memory import release_compiler_memory
from .ringbuf import DIRECT_RING, RingReader
from .filters import Filters, ip_key_bytes

if TYPE_CHECKING:
    from ..pods.attribute import KernelPods

DEFAULT_CACHE = Path(os.environ.get("NETDROP_CACHE", "/var/cache/netdrop"))
RINGBUF_PAGES = 1024          # 4 MiB: ~28,000 events of headroom for the reader
MAX_COUNTERS = 16384          # distinct (netns, reason, location) groups
MAX_FILTER = 4096             # entries per filter map
MAX_EVENT_RATE = 10000        # events/s sent to Python by default; counts are exact regardless
# The most --max-event-rate may ask: a u32 budget per CPU per 100 ms window in the
# kernel (events_per_window: rate / 10 on one CPU), far above what Python reads.
MAX_EVENT_RATE_LIMIT = 10**9
MAX_CAUSE_COUNTERS = 4096     # distinct (netns, cause, pod) of the conntrack causes

_string_at = ctypes.string_at
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


def _import_bcc() -> ModuleType:
    try:
        import bcc  # noqa: PLC0415 - only this module may import bcc
    except ImportError:
        raise UserError(
            "bcc is not importable: install Debian's python3-bpfcc and run netdrop from "
            "the environment scripts/setup makes (.venv, with system site-packages)"
        ) from None
    return cast(ModuleType, bcc)   # bcc has no type information: to mypy it is Any


def _libbcc_text(maps: Path = Path("/proc/self/maps")) -> bytes:
    """The bytes of the libbcc this process loaded (its helpers.h and copy of
    the UAPI bpf.h are compiled into it: facts.bcc_helper_ids reads them)."""
    _import_bcc()
    for line in maps.read_text().splitlines():
        path = line.split(maxsplit=5)[5:]
        if path and "/libbcc.so" in path[0]:
            return Path(path[0]).read_bytes()
    return b""


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """libbcc prints load failures straight to fd 2; a refused probe is expected here."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# Tracepoint -> its tp_btf program in bpf/netdrop.c (loaded by btfprog: bcc does not attach tp_btf)
_TP_BTF_PROGRAMS = {"kfree_skb": "nd_kfree_skb", "icmp_send": "nd_icmp_send"}
_SMALL_BATCH = 64           # poll_records: fewer records than this wait _GATHER_SECONDS for more
_GATHER_SECONDS = 0.002


def _ip_key(addr: str) -> ev.NdIpKey:
    return ev.NdIpKey((ctypes.c_uint8 * 16)(*ip_key_bytes(addr)))


# The pod maps of bpf/netdrop.c and how a KernelPods key becomes a map key. Each map has
# its own key type (int, (netns, ifindex) or an address: see KernelPods), hence Any.
PodKey = Any
_POD_MAPS: dict[str, Callable[[PodKey], object]] = {
    "pod_netns": ctypes.c_uint32,
    "pod_veth": lambda v: ev.NdIfKey(*v),
    "pod_ip": _ip_key,
    "pod_hostport": ctypes.c_uint16,
    "node_ip": _ip_key,            # a set: the value is a plain 1
}


class Tracer:
    """The loaded BPF program: exact counters, an event ring buffer, filter maps."""

    def __init__(self, facts: KernelFacts, filters: Filters = Filters(),
                 cache_dir: Path = DEFAULT_CACHE, ringbuf_pages: int = RINGBUF_PAGES,
                 max_event_rate: int = MAX_EVENT_RATE, snaplen: int = 0, headers_only: bool = True,
                 warn: Callable[[str], None] = lambda msg: None, map_entries: int = MAX_FILTER,
                 hold: bool = False, tp_btf: bool = True, direct_ring: bool = DIRECT_RING,
                 stacks: bool = False) -> None:
        """snaplen > 0: events carry up to snaplen bytes of their packet, from the
        IP header on; headers_only stops at the end of the TCP/UDP/ICMP header.
        warn tells the user, once, of a kernel map that is full; map_entries is
        the size of each filter and pod map. hold: count nothing until
        start_counting() (the pod maps that filter by pod are written first).
        tp_btf=False attaches the classic tracepoints even where tp_btf would load.
        direct_ring=False reads the ring buffer through bcc (libbpf's reader).
        stacks: each event carries its kernel stack's id (stack_frames() reads it)."""
        self._warn = warn
        self._ready = 0 if hold else ev.ND_FILTER_READY
        self.full_maps: set[str] = set()
        self._unwritten: dict[str, set[PodKey]] = {}
        self._batch: int | None = None
        self._pod_gen = 1          # 0 marks an empty pod_memo entry
        self._batch_reads = True   # counts(): BPF_MAP_LOOKUP_BATCH until the kernel refuses it
        self.map_entries = map_entries
        if os.geteuid() != 0:
            raise UserError("netdrop needs root to load BPF programs: run it with sudo")
        if (why := btfprog.ringbuf_refusal()) is not None:
            raise UserError(why)
        if ringbuf_pages & (ringbuf_pages - 1):
            raise ValueError("ringbuf_pages must be a power of two")
        if not 0 <= max_event_rate <= MAX_EVENT_RATE_LIMIT:
            raise ValueError(f"max_event_rate must be from 0 to {MAX_EVENT_RATE_LIMIT}")
        bcc = _import_bcc()
        self.facts = facts
        self.ringbuf_pages = ringbuf_pages
        self.max_event_rate = max_event_rate
        if not 0 <= snaplen <= ev.ND_MAX_SNAPLEN:
            raise UserError(f"snaplen must be between 1 and {ev.ND_MAX_SNAPLEN}")
        self.snaplen, self.headers_only = snaplen, headers_only
        include, cflags = self._kernel_types(facts, cache_dir)
        if include is not None:
            os.environ["BCC_KERNEL_SOURCE"] = str(include)
        cflags += [
            f"-I{ev.HEADER.parent}",
            f"-DND_HAVE_REASON={int(facts.has_reason)}",
            f"-DND_HAVE_ICMP_TP={int(facts.has_icmp_tp)}",
            *type_flags(include),
            f"-DND_REASON_NOT_SPECIFIED={not_specified(facts.reasons)}",
            f"-DND_RINGBUF_PAGES={int(ringbuf_pages)}",
            f"-DND_MAX_COUNTERS={MAX_COUNTERS}",
            f"-DND_MAX_FILTER={int(map_entries)}",
            f"-DND_PAGE_SIZE={os.sysconf('SC_PAGE_SIZE')}",
            f"-DND_STACKS={int(stacks)}",
        ]
        # nf_conntrack_max's address, for "table full (count = max = N)": only where
        # nf_conntrack is built in, so that the address holds for the whole run (a
        # module's data moves when it is loaded again). Elsewhere the table full is
        # named without the number. Reading kallsyms takes ~45 ms.
        hooks = wanted_hooks(facts)
        ct_max = kernel_symbols(["nf_conntrack_max"]).get("nf_conntrack_max", 0) \
            if any(h.module == "nf_conntrack" for h in hooks) and module_built_in("nf_conntrack") else 0
        cflags += [f"-DND_CT_MAX_ADDR={ct_max:#x}", f"-DND_MAX_CAUSE_COUNTERS={MAX_CAUSE_COUNTERS}"]
        # The tracepoints as tp_btf where the kernel's BTF names them (plain loads
        # instead of probe reads, no perf record: bpf/netdrop.c, nd_kfree_skb), else
        # classic tracepoints, which bcc attaches as it loads them.
        tp_ids = btf_tracepoint_ids(_TP_BTF_PROGRAMS) if btfprog.SYS_BPF and tp_btf else {}
        use_btf = "kfree_skb" in tp_ids and (not facts.has_icmp_tp or "icmp_send" in tp_ids)
        self._btf_fds: list[int] = []
        self._function_hooks: FunctionHooks | None = None
        btf_refusal = ""
        self.bpf = self._compile(bcc, [*cflags, f"-DND_TP_BTF={int(use_btf)}"])
        if use_btf:
            try:
                self._attach_tp_btf(tp_ids, facts.has_icmp_tp)
            except btfprog.Refused as exc:
                self._close_btf()
                self.bpf.cleanup()
                use_btf, btf_refusal = False, f"; tp_btf refused: {exc}"
                self.bpf = self._compile(bcc, [*cflags, "-DND_TP_BTF=0"])
            except BaseException:
                self.close()
                raise
        self.attach_form = "tp_btf" if use_btf else "tracepoint"
        self.stacks = stacks
        self._stack_memo: dict[int, tuple[int, ...] | None] = {}
        try:
            if stacks:
                self._stack_fd = int(self.bpf[b"stacks"].map_fd)
                self._stack_key, self._stack_value = ctypes.c_int(0), (ctypes.c_uint64 * ev.ND_STACK_DEPTH)()
                self._lookup = bcc.lib.bpf_lookup_elem
            release_compiler_memory()
            self._events: list[bytes] = []
            self._ring: RingReader | None = None
            if direct_ring:
                self._ring = RingReader(self.bpf[b"events"].map_fd, ringbuf_pages * os.sysconf("SC_PAGE_SIZE"))
            else:
                self.bpf[b"events"].open_ring_buffer(self._on_event)
            form = self.attach_form
            self.hooks = [Hook(f"{form} skb:kfree_skb", True, ("drop reason" if facts.has_reason else
                                                              "no reason field: classify by location") + btf_refusal)]
            self.hooks.append(Hook(f"{form} icmp:icmp_send", facts.has_icmp_tp, "" if facts.has_icmp_tp else
                                   "not in this kernel (5.10 has none, 6.1 has it): __icmp_send is hooked instead"))
            # Function hooks: fentry/fexit where the kernel takes them, else
            # kprobes; a module's function when the module is there (hooks.py).
            with _quiet_stderr():   # libbcc prints each refused attach; the hook's line says it once
                self._function_hooks = FunctionHooks(self.bpf, hooks, facts.tracefs, self._program)
            self._hooks_at = len(self.hooks)
            self.hooks += self._function_hooks.hooks
            self.filters = Filters()
            self.pods: KernelPods | None = None
            self._budget = self._events_per_window()
            self.set_filters(filters)
        except BaseException:   # a signal or a bad filter: nothing stays attached
            self.close()
            raise

    def _program(self, name: str) -> tuple[int, int]:
        """The address and length of a compiled program's instructions (map fds in place)."""
        bcc = _import_bcc()
        start = bcc.lib.bpf_function_start(self.bpf.module, name.encode())
        size = bcc.lib.bpf_function_size(self.bpf.module, name.encode())
        if not start or not size:
            raise btfprog.Refused(f"{name} is not in the compiled program")
        return int(start), int(size)

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
        with _quiet_stderr():   # only around an attach: fd 2 is the whole process's
            changed = fh.maintain()
        if changed:
            self.hooks[self._hooks_at:] = fh.hooks
        return changed

    def _attach_tp_btf(self, tp_ids: dict[str, int], icmp: bool) -> None:
        """Load and attach the tp_btf programs; their fds are kept until close()."""
        for tracepoint, func in _TP_BTF_PROGRAMS.items():
            if tracepoint == "icmp_send" and not icmp:
                continue
            start, size = self._program(func)
            fd = btfprog.load_tracing(start, size, func, "tp_btf", tp_ids[tracepoint])
            self._btf_fds.append(fd)
            self._btf_fds.append(btfprog.attach(fd))

    def _close_btf(self) -> None:
        """Detach the tp_btf programs (closing the link) and free them, links first."""
        for fd in reversed(self._btf_fds):
            with suppress(OSError):
                os.close(fd)
        self._btf_fds = []

    @staticmethod
    def _compile(bcc: ModuleType, cflags: list[str]) -> Any:
        """netdrop.c and funchooks.c as one text: bcc makes programs only of the
        main file's functions. #line keeps the compiler's messages pointing at
        the right file and line. Both are fixed files of netdrop's, never user text."""
        text = (f'#line 1 "{ev.BPF_SOURCE}"\n{ev.BPF_SOURCE.read_text()}\n'
                f'#line 1 "{ev.FUNCHOOKS_SOURCE}"\n{ev.FUNCHOOKS_SOURCE.read_text()}')
        # bcc chdir()s into the headers' directory while it compiles: for this thread only.
        own_working_directory()
        try:
            return bcc.BPF(text=text.encode(), cflags=cflags)
        # bcc raises bare Exception (the compiler's output went to stderr)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"could not load the BPF program: {exc}") from None

    @staticmethod
    def _kernel_types(facts: KernelFacts, cache_dir: Path) -> tuple[Path | None, list[str]]:
        """Headers of exactly this kernel if installed, else types from BTF."""
        if kernel_headers(facts.release):
            return None, ["-DND_KERNEL_HEADERS"]
        # The cache holds the C headers compiled into the program root loads:
        # only a directory nobody else can change will do.
        private_dir(cache_dir, "cache directory (NETDROP_CACHE)")
        return btf_include_tree(cache_dir, facts.release, helper_ids=bcc_helper_ids(_libbcc_text())), []

    def _on_event(self, _ctx: object, data: int, size: int) -> int:
        # One copy, nothing parsed: the callback runs once per event, and
        # decode.py unpacks the bytes in one step later.
        self._events.append(_string_at(data, size))
        # A full batch: -1 makes ring_buffer__poll() return (bcc 0.26's RingBuf
        # passes our int through), so the event loop gets to its stop check and
        # tick under a storm that never empties the ring. libbpf's
        # ringbuf_process_ring() has already moved its consumer position past
        # this sample when it calls us, so the sample is taken first: returning
        # -1 *instead of* taking it lost one event per full batch, uncounted
        # (tests/kernel/test_counts.py).
        return -1 if self._batch is not None and len(self._events) >= self._batch else 0

    def poll_records(self, timeout_ms: int = 100, max_events: int | None = None) -> list[bytes]:
        """Events delivered since the last call (waits up to timeout_ms for the
        first), each as the bytes of its ring buffer sample: struct nd_event,
        then the packet bytes it carries (caplen of them; none unless snaplen).
        max_events: at most that many; what is left stays in the ring buffer for
        the next call, and what no longer fits there the kernel counts as lost.
        None: until the ring is empty, which under a drop storm is never."""
        # The stacks read for the last batch may have been replaced since (stack_frames).
        self._stack_memo.clear()
        if self._ring is not None:
            limit = None if max_events is None else max(1, max_events)
            records = self._ring.read(limit)
            if not records:
                self._ring.wait(timeout_ms)
                records = self._ring.read(limit)
            if timeout_ms and 0 < len(records) < _SMALL_BATCH and (limit is None or len(records) < limit):
                # A few records: in a storm the reader has caught up with the
                # producer and would take them a handful at a time, paying the
                # event loop's per-batch cost for each handful (11 records a
                # call, ~1 us each). A moment's wait gathers a real batch; a
                # lone drop is late by as much.
                time.sleep(_GATHER_SECONDS)
                records += self._ring.read(None if limit is None else limit - len(records))
            return records
        self._batch = None if max_events is None else max(1, max_events)
        self.bpf.ring_buffer_poll(timeout_ms)
        if not self._events:
            # The program wakes the reader for one event in 64 (bpf/netdrop.c,
            # wakeup_flags): the others are in the ring, unannounced.
            self.bpf.ring_buffer_consume()
        out, self._events = self._events, []
        return out

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
        if self.stacks:
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
            ("filter_ip", [_ip_key(v) for v in filters.ips], ev.ND_FILTER_IP),
            ("filter_port", [ctypes.c_uint16(v) for v in filters.ports], ev.ND_FILTER_PORT),
        ):
            if len(keys) > self.map_entries:
                raise UserError(f"at most {self.map_entries} values per filter kind ({name}): {len(keys)} given")
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
        cfg.snaplen, cfg.headers_only = self.snaplen, int(self.headers_only)
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

        def entries(kp: KernelPods | None) -> dict[str, dict[PodKey, tuple[int, bool]]]:
            if kp is None:
                return {name: {} for name in _POD_MAPS}
            return {"pod_netns": kp.netns, "pod_veth": kp.veth, "pod_ip": kp.ips,
                    "pod_hostport": kp.hostports, "node_ip": dict.fromkeys(kp.node_ips, (0, True))}

        new, old = entries(pods), entries(self.pods)
        for name, to_key in _POD_MAPS.items():
            table = self.bpf[name.encode()]
            unwritten = self._unwritten.setdefault(name, set())
            changed = [key for key, val in new[name].items() if old[name].get(key) != val or key in unwritten]
            unwritten.clear()
            self._write_pod_entries(name, table, to_key, changed, new[name], unwritten)
            for key in old[name].keys() - new[name].keys():
                with suppress(KeyError):   # never written (its map was full): nothing to delete
                    del table[to_key(key)]
            if unwritten:   # room freed by the deletions above
                retry, unwritten_now = list(unwritten), set[PodKey]()
                self._write_pod_entries(name, table, to_key, retry, new[name], unwritten_now)
                self._unwritten[name] = unwritten_now
                if unwritten_now and name not in self.full_maps:
                    self.full_maps.add(name)
                    self._warn(f"the kernel's {name} map is full ({self.map_entries} entries): {len(unwritten_now)} "
                               f"pod entries are not in it, so drops there are counted without their pod "
                               f"(counts stay exact); more pods than netdrop was built for")
        self.pods = pods
        self._pod_gen += 1
        self._write_cfg()

    @staticmethod
    def _write_pod_entries(name: str, table: Any, to_key: Callable[[PodKey], object], keys: list[PodKey],
                           values: dict[PodKey, tuple[int, bool]], unwritten: set[PodKey]) -> None:
        """Write keys' entries into table (a bcc map); what does not fit goes into unwritten."""
        for key in keys:
            tag, selected = values[key]
            value = ctypes.c_uint8(1) if name == "node_ip" else ev.NdPodVal(tag, int(selected))
            try:
                table[to_key(key)] = value
            # bcc raises a bare Exception for a failed update; E2BIG: the map is full
            except Exception:  # noqa: BLE001
                unwritten.add(key)

    def _events_per_window(self) -> int:
        """The rate limit as a per-CPU budget per sampling window (0: none)."""
        if not self.max_event_rate:
            return 0
        ncpus = len(_import_bcc().utils.get_possible_cpus())
        per_window = self.max_event_rate * ev.ND_EVENT_WINDOW_NS / 1e9 / ncpus
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
        """The per-CPU bookkeeping (struct nd_cpu_state) summed over CPUs."""
        percpu = self.bpf[b"cpu_state"][ctypes.c_int(0)]
        return {f: sum(getattr(c, f) for c in percpu) for f in ("events", "lost", "sampled_out", "counter_full")}

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
        ring, self._ring = getattr(self, "_ring", None), None
        if ring is not None:
            ring.close()
        hooks, self._function_hooks = getattr(self, "_function_hooks", None), None
        if hooks is not None:
            hooks.close()
        self._close_btf()
        self.bpf.cleanup()

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
