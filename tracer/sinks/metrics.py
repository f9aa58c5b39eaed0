"""metrics: the kernel's exact drop counters as Prometheus metrics, read when scraped.

netdrop serve registers a DropCollector: each scrape reads the BPF counter
map (kernel/loader.py's Tracer.counts()) and turns its keys (netns, reason,
location, pod tag, packet facts) into series labelled node, namespace, pod,
workload, direction, category, reason and benign. A drop costs nothing in Python: the
work is per scrape and per counter key, never per drop.

Names come from where netdrop keeps them: reason and location from the
decoder, the category from explain.classify.key_category, benign from
explain.benign.benign_why, the pod and direction from the pod index, the
workload from pods.workload. Both category and benign are judged from the
counter key alone (benign by its reason, location and packet facts: keys that
differ only in facts that do not change it add into one series), so a series
keeps its labels for life; what only an event could add (which rule, conntrack's verdict) is the
console's and the capture's.

Series obey three rules (Series):
- a live series never goes backwards: every counter key only grows while
  the programs are attached, the keys behind a series only get more, and a
  label set once given to a series (or folded) stays so;
- at most max_series series of their own: past that a new label set folds
  into one series per (category, reason, benign) with namespace, pod and
  workload "_other", and netdrop_series_folded_total counts the label sets folded;
- a series whose pods are all gone for ttl seconds is removed, and its pods'
  keys are never counted again (a folded one's count stays in its _other
  series, which must not go backwards).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from ..explain.benign import benign_why
from ..explain.classify import key_category
from ..kernel.event import CounterKey
from ..pods.attribute import Attribution

DROPS, DROPS_HELP = ("netdrop_drops", "Packets the kernel dropped, counted exactly in the kernel (skb:kfree_skb), "
                     "by pod, direction, category and drop reason; benign=\"true\": drops every healthy node makes")
BYTES, BYTES_HELP = ("netdrop_drop_bytes", "Bytes of the packets the kernel dropped (IP length, counted in the kernel)")
OTHER = "_other"
DEFAULT_MAX_SERIES = 10000
DEFAULT_TTL = 300.0
LABELS = ("node", "namespace", "pod", "workload", "direction", "category", "reason", "benign")
POD_TAG_SHIFT = 2       # a pod tag is (pod id << 2) | direction (bpf/netdrop.h, attribute.PodIndex.kernel_pods)


class Tally(NamedTuple):
    """One counter key's value: packets, and bytes where the kernel counts them (None: it does not)."""

    packets: int
    bytes: int | None = None


def tally(value: object) -> Tally:
    """A counter value as Tracer.counts() gives it: anything with packets and
    bytes (kernel.loader.Count: the kernel counts both), a (packets, bytes)
    pair, or a plain int (packets alone: no bytes counted)."""
    # The common case first (a scrape takes one per counter key): loader.Count,
    # a (packets, bytes) named tuple of ints.
    if isinstance(value, tuple) and len(value) == 2:
        p, b = value
        if type(p) is int and type(b) is int:
            return Tally(p, b)
    packets = getattr(value, "packets", None)
    nbytes = getattr(value, "bytes", None)
    if isinstance(packets, int) and isinstance(nbytes, int):
        return Tally(packets, nbytes)
    if isinstance(value, int):
        return Tally(value)
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return Tally(value[0], value[1])
    raise TypeError(f"not a counter value: {value!r}")


# The labels of a series, less node (one per agent):
# (namespace, pod, workload, direction, category, reason, benign)
SeriesLabels = tuple[str, str, str, str, str, str, str]


class Names(Protocol):
    """What the collector needs of kernel/decode.py's Decoder."""

    def reason_name(self, code: int) -> str | None: ...

    def location_name(self, addr: int) -> str | None: ...


@dataclass
class _Series:
    pods: set[int] = field(default_factory=set)      # ids of the pods whose keys count here
    base: Tally = Tally(0, 0)                        # what retired keys had counted (an _other series)


Row = tuple[CounterKey, SeriesLabels, Tally]


class Series:
    """The drop series of one agent, from one scrape to the next (pure: plain data in, series out)."""

    def __init__(self, names: Names, attribute: Callable[[int], Attribution],
                 workload: Callable[[Attribution], str], max_series: int = DEFAULT_MAX_SERIES,
                 ttl: float = DEFAULT_TTL) -> None:
        """attribute: a pod tag -> its pod and direction (attribute.PodIndex.attribute_tag; a tag
        names the same pod for the whole run). workload: the workload label of a pod."""
        self.names = names
        self.attribute = attribute
        self.workload = workload
        self.max_series = max_series
        self.ttl = ttl
        self._labels: dict[CounterKey, SeriesLabels] = {}     # memo: a key's labels never change
        self._assigned: dict[SeriesLabels, SeriesLabels] = {}  # natural labels -> themselves or _other
        self._series: dict[SeriesLabels, _Series] = {}         # what is exported
        self._own = 0                                          # series of their own (not _other)
        self._gone: dict[int, float] = {}                      # pod id -> since when it is gone
        # Keys of removed series and of pods retired from an _other series: never counted
        # again. Bounded by the kernel's counter map (keys are never deleted there).
        self._retired: set[CounterKey] = set()
        self.folded = 0                                        # label sets folded into _other

    def labels_of(self, key: CounterKey) -> SeriesLabels:
        got = self._labels.get(key)
        if got is not None:
            return got
        _netns, reason, location, tag, facts = key
        rname, lname = self.names.reason_name(reason), self.names.location_name(location)
        who = self.attribute(tag) if tag else None
        pod = who.pod if who is not None else None
        if who is not None and pod is not None and pod.known and pod.namespace and pod.name:
            where = (pod.namespace, pod.name, self.workload(who), who.direction or "")
        else:
            where = ("", "", "", "")
        got = (*where, key_category(rname, lname, facts), rname or "unknown",
               "true" if benign_why(rname, lname, facts) is not None else "false")
        self._labels[key] = got
        return got

    def _place(self, natural: SeriesLabels) -> SeriesLabels:
        out = self._assigned.get(natural)
        if out is not None:
            return out
        if self._own < self.max_series:
            out = natural
            self._own += 1
        else:
            out = (OTHER, OTHER, OTHER, "", natural[4], natural[5], natural[6])
            self.folded += 1
        self._assigned[natural] = out
        return out

    def update(self, counts: Mapping[CounterKey, object], live_pods: set[int] | None,
               now: float) -> dict[SeriesLabels, Tally]:
        """The series' values now. live_pods: the ids of the pods the node has
        now (None: not known, e.g. no API: nothing expires)."""
        rows: list[Row] = []
        fresh: list[tuple[SeriesLabels, CounterKey, Tally]] = []
        for key, value in counts.items():
            if key in self._retired:
                continue
            natural = self.labels_of(key)
            out = self._assigned.get(natural)
            if out is None:
                fresh.append((natural, key, tally(value)))
            else:
                rows.append((key, out, tally(value)))
        # New label sets take series of their own by size while there is room:
        # a storm's biggest groups keep their names, the tail folds.
        fresh.sort(key=lambda f: (-f[2].packets, f[0]))
        rows += [(key, self._place(natural), t) for natural, key, t in fresh]
        sums: dict[SeriesLabels, list[int | None]] = {}
        for key, out, t in rows:
            _add(sums.setdefault(out, [0, 0]), t)
            pid = key[3] >> POD_TAG_SHIFT
            if pid:
                s = self._series.get(out)
                if s is None:
                    s = self._series[out] = _Series()
                if pid not in s.pods:
                    s.pods.add(pid)
                    self._gone.setdefault(pid, -1.0)
        for out in sums:
            if out not in self._series:
                self._series[out] = _Series()
        if live_pods is not None:
            self._expire(rows, sums, live_pods, now)
        result: dict[SeriesLabels, Tally] = {}
        for out, s in self._series.items():
            acc: list[int | None] = [s.base.packets, s.base.bytes]
            got = sums.get(out)
            if got is not None:
                _add(acc, Tally(got[0] or 0, got[1]))
            result[out] = Tally(acc[0] or 0, acc[1])
        return result

    def _expire(self, rows: list[Row], sums: dict[SeriesLabels, list[int | None]], live: set[int],
                now: float) -> None:
        expired: set[int] = set()
        for pid, since in self._gone.items():
            if pid in live:
                self._gone[pid] = -1.0          # -1: alive
            elif since < 0:
                self._gone[pid] = now
            elif now - since >= self.ttl:
                expired.add(pid)
        if not expired:
            return
        removed: set[SeriesLabels] = set()
        leaving: dict[SeriesLabels, set[int]] = {}     # _other series -> its pods that leave it
        for out, s in self._series.items():
            if not s.pods:
                continue                        # no pod's drops: never expires
            if out[1] == OTHER:
                if s.pods & expired:
                    leaving[out] = s.pods & expired
            elif s.pods <= expired:
                removed.add(out)
        if not removed and not leaving:
            return
        for key, out, t in rows:
            if out in removed:
                self._retired.add(key)
            elif out in leaving and key[3] >> POD_TAG_SHIFT in leaving[out]:
                # What a folded pod counted stays in its _other series: it must not go back.
                self._retired.add(key)
                s = self._series[out]
                acc: list[int | None] = [s.base.packets, s.base.bytes]
                _add(acc, t)
                s.base = Tally(acc[0] or 0, acc[1])
                _sub(sums[out], t)
        for out in removed:
            del self._series[out]
            sums.pop(out, None)
            self._own -= 1
        for out, pids in leaving.items():
            self._series[out].pods -= pids
        # Forget what only the retired keys needed: their labels, the label sets
        # placed in removed series, and pods no series holds any more.
        for key in [k for k in self._labels if k in self._retired]:
            del self._labels[key]
        for natural in [n for n, o in self._assigned.items() if o in removed]:
            del self._assigned[natural]
        held = set().union(*(s.pods for s in self._series.values()))
        for pid in expired - held:
            del self._gone[pid]

    def __len__(self) -> int:
        return len(self._series)


def _add(acc: list[int | None], t: Tally) -> None:
    acc[0] = (acc[0] or 0) + t.packets
    acc[1] = None if acc[1] is None or t.bytes is None else acc[1] + t.bytes


def _sub(acc: list[int | None], t: Tally) -> None:
    acc[0] = (acc[0] or 0) - t.packets
    acc[1] = None if acc[1] is None or t.bytes is None else acc[1] - t.bytes


@dataclass(frozen=True)
class AgentState:
    """What one scrape reads besides the drop counters (kernel/loader.py's Stats and hooks)."""

    events_lost: int
    ungrouped: int
    hooks: tuple[tuple[str, bool], ...]
    conntrack: Mapping[str, int] | None      # the node namespace's conntrack statistics (None: not loaded)


class DropCollector(Collector):
    """prometheus_client's custom collector: everything is read when scraped."""

    def __init__(self, node: str, series: Series, counts: Callable[[], Mapping[CounterKey, object]],
                 state: Callable[[Mapping[CounterKey, object]], AgentState],
                 live_pods: Callable[[], set[int] | None], version: str, kernel: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.series = series
        self._counts = counts
        self._state = state
        self._live_pods = live_pods
        self.version, self.kernel = version, kernel
        self._clock = clock
        # One scrape at a time, from the read of the kernel's map to the last line of
        # text: Series and the label-text cache below are plain dicts that every
        # scrape changes (a second scrape adding text while the first forgets that
        # of expired series made `dictionary changed size during iteration`).
        # A lock rather than a copy per scrape: a copy of 10,000 entries would cost
        # each scrape what the cache saves, and the server shares one render among
        # concurrent scrapers anyway. close() takes it too.
        self.lock = threading.Lock()
        self.scrapes = 0
        self._label_text: dict[SeriesLabels, str] = {}

    def read(self) -> tuple[dict[SeriesLabels, Tally], AgentState]:
        with self.lock:
            return self._read()

    def _read(self) -> tuple[dict[SeriesLabels, Tally], AgentState]:
        counts = self._counts()
        values = self.series.update(counts, self._live_pods(), self._clock())
        state = self._state(counts)
        self.scrapes += 1
        return values, state

    def collect(self) -> Iterator[Metric]:
        values, state = self.read()
        yield from self.metrics(values, state)

    def render(self, openmetrics: bool = False) -> tuple[bytes, list[Metric]]:
        """One scrape: the drop series as exposition text (either format), and
        the other metrics as families for prometheus_client's encoder (which
        puts OpenMetrics' `# EOF` after them). The drop series are written here
        because prometheus_client validates and escapes every label of every
        sample on every scrape (three quarters of a scrape of 10,000 series):
        here a series' label text is escaped once, when it first appears."""
        with self.lock:
            return self._render(openmetrics)

    def _render(self, openmetrics: bool) -> tuple[bytes, list[Metric]]:
        values, state = self._read()
        cache = self._label_text
        if len(cache) > 2 * len(values) + 64:      # series removed since: forget their text
            self._label_text = cache = {k: t for k, t in cache.items() if k in values}
        node = _escape(self.node)
        out: list[str] = []
        with_bytes = bool(values) and all(v.bytes is not None for v in values.values())
        for family, doc, index in ((DROPS, DROPS_HELP, 0), (BYTES, BYTES_HELP, 1)):
            if index == 1 and not with_bytes:
                continue
            name = family if openmetrics else f"{family}_total"
            out.append(f"# HELP {name} {_escape_help(doc)}\n# TYPE {name} counter\n")
            prefix = f'{family}_total{{node="{node}",'
            for labels, v in values.items():
                text = cache.get(labels)
                if text is None:
                    text = cache[labels] = ",".join(f'{k}="{_escape(val)}"'
                                                    for k, val in zip(LABELS[1:], labels, strict=True)) + "} "
                out.append(f"{prefix}{text}{v[index]}\n")
        return "".join(out).encode(), list(self.metrics(values, state, drops=False))

    def describe(self) -> Iterator[Metric]:
        return iter(())     # nothing read at registration: the programs may not be loaded yet

    def metrics(self, values: Mapping[SeriesLabels, Tally], state: AgentState, drops: bool = True
                ) -> Iterator[Metric]:
        """The metric families; drops=False: all but the drop series (render() writes those)."""
        node = self.node
        if drops:
            packets = CounterMetricFamily(DROPS, DROPS_HELP, labels=LABELS)
            with_bytes = bool(values) and all(v.bytes is not None for v in values.values())
            nbytes = CounterMetricFamily(BYTES, BYTES_HELP, labels=LABELS)
            for labels, v in values.items():
                packets.add_metric([node, *labels], v.packets)
                if with_bytes and v.bytes is not None:
                    nbytes.add_metric([node, *labels], v.bytes)
            yield packets
            if with_bytes:
                yield nbytes
        yield _counter("netdrop_events_lost", "Drop events the ring buffer had no room for "
                       "(details lost; the drop counts stay exact)", node, state.events_lost)
        yield _counter("netdrop_drops_ungrouped", "Drops the kernel's counter map had no slot for "
                       "(counted in no series: more groups than netdrop was built for)", node, state.ungrouped)
        yield _counter("netdrop_series_folded", "Label sets folded into pod=\"_other\" past --max-series",
                       node, self.series.folded)
        races = CounterMetricFamily("netdrop_conntrack_insert_races",
                                    "conntrack insert races in the node's namespace: resolved (clash_resolve) "
                                    "or failed, the packet dropped (insert_failed)", labels=("node", "outcome"))
        full = CounterMetricFamily("netdrop_conntrack_table_full_drops",
                                   "Packets conntrack dropped in the node's namespace for want of a new entry "
                                   "(the table full, /proc/net/stat/nf_conntrack 'drop')", labels=("node",))
        ct = state.conntrack
        if ct is not None:
            races.add_metric([node, "resolved"], ct.get("clash_resolve", 0))
            races.add_metric([node, "failed"], ct.get("insert_failed", 0))
            full.add_metric([node], ct.get("drop", 0))
            yield races
            yield full
        hooks = GaugeMetricFamily("netdrop_hook_attached", "1 if netdrop's program is attached at this hook",
                                  labels=("node", "hook"))
        for name, attached in state.hooks:
            hooks.add_metric([node, name], 1 if attached else 0)
        yield hooks
        series = GaugeMetricFamily("netdrop_series", "Drop series exported now (their own and _other)",
                                   labels=("node",))
        series.add_metric([node], len(self.series))
        yield series
        info = InfoMetricFamily("netdrop_build", "netdrop's version and the kernel it runs on",
                                labels=("node",))
        info.add_metric([node], {"version": self.version, "kernel": self.kernel})
        yield info


def _escape(value: str) -> str:
    """A label value in the exposition formats (text 0.0.4 and OpenMetrics alike)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _counter(name: str, doc: str, node: str, value: int) -> CounterMetricFamily:
    m = CounterMetricFamily(name, doc, labels=("node",))
    m.add_metric([node], value)
    return m
