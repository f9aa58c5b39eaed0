"""podevents: which Events the agent writes on the pods whose traffic breaks (docs/captures.md, "Events on pods").

Pure: the exact counts and the sampled drops go in, the writes come out, with
the clock passed in; podeventswriter.py makes the calls and says how each
went. What it decides:

- which drops: only those of a path-breaking category (the registry's
  `path_breaking`), not benign, and attributed to a pod the API named. Drops
  attributed to no pod never make an Event: a hostNetwork pod shares the
  node's namespace, and the node's drops are not its drops (attribute.py
  names one only by a port it alone declares);
- one series per (pod uid, category, kernel reason), the counts folded by
  sinks/metrics.py's Series (the same folding /metrics shows; this agent
  gives its own Series the pod's uid as the workload label: pod_uid), summed
  over the directions. Its Event's `count` is the series' exact packet count
  since it began, from the kernel's counters; the sampled events only add the
  destination and the words for what happened;
- aggregated as client-go's legacy recorder does (tools/record/events_cache.go):
  its EventAggregator groups events that differ only in their message (same
  source, involved object, type, reason) and its eventLogger PATCHes the
  existing Event's `count`, `lastTimestamp` and `message` (the three fields
  its strategic merge patch carries) instead of creating another. Here a
  series is that group: created once, then patched, at most every
  `interval` (--events-interval); the message changes with the count;
- a rate cap for the whole node: a token bucket of BURST writes refilled one
  every REFILL_SECONDS. client-go's spam filter (EventSourceObjectSpamFilter)
  allows each (source, object) a burst of 25 refilled one every 300 s, and
  a node runs many recorders; one netdrop agent writes for every pod of its
  node, so its cap is on all of its writes together: at most 25 + 12 a minute
  whatever the node drops. New series go first (a pod's first Event is worth
  more than another count), then the series written longest ago;
- memory bounded: at most max_series series (client-go's caches hold 4096),
  the least recently grown forgotten first; the sampled destinations of at
  most max_series (pod, category) pairs, RECENT each.

A series forgotten and found again is a new series that begins then: its
Event counts the drops since (its predecessor's Event still holds the
earlier ones), so no drop is counted on two Events.
"""

from __future__ import annotations

import re
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from ..explain.categories import REGISTRY, entry
from ..explain.causes import cause
from ..explain.functionhooks import hook_verdict
from ..kernel.decode import Drop
from ..pods.attribute import Attribution
from ..sinks.metrics import OTHER, SeriesLabels, Tally
from ..textsafe import printable

REASON = "PacketsDropped"
KIND = "Warning"
COMPONENT = "netdrop"               # source.component, as kubectl describe shows it ("From")
CONTROLLER = "netdrop.io/agent"     # reportingController: a qualified name, as the API server asks
DEFAULT_INTERVAL = 60.0             # --events-interval: a series is written at most this often
BURST = 25                          # writes the node may make at once ...
REFILL_SECONDS = 5.0                # ... then one every this many seconds
MAX_SERIES = 4096                   # series remembered (client-go's maxLruCacheEntries)
RECENT = 32                         # sampled drops kept per (pod, category) for the destination
RETRY_SECONDS = 10.0                # after a failed write; doubled each failure in a row ...
MAX_RETRY_SECONDS = 600.0           # ... up to this
MAX_MESSAGE = 1024                  # bytes of UTF-8 (docs/captures.md)
MAX_WHAT = 256                      # characters of what happened, within the message
MAX_INT32 = 2**31 - 1               # Event.count is an int32

PATH_BREAKING: frozenset[str] = frozenset(c.name for c in REGISTRY if c.path_breaking)

# Kubernetes' limits on the names an Event carries (k8s.io/apimachinery/pkg/util/validation):
# a namespace is a DNS label, a pod's name a DNS subdomain; a uid is what the API server made.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_UID = re.compile(r"[A-Za-z0-9-]{1,128}")
MAX_NAME = 253
MAX_INSTANCE = 128                  # reportingInstance

# (pod uid, category, kernel reason): one Event each.
SeriesKey = tuple[str, str, str]


def pod_uid(who: Attribution) -> str:
    """The workload label of this agent's own Series (sinks/metrics.py): the pod's uid, which
    tells a recreated pod (a StatefulSet's web-0) from its predecessor of the same name."""
    pod = who.pod
    return pod.uid or "" if pod is not None else ""


@dataclass(frozen=True)
class PodId:
    namespace: str
    name: str
    uid: str


def pod_id(namespace: str, name: str, uid: str) -> PodId | None:
    """The pod as an Event names it, None if a name is not one Kubernetes allows (the API
    server would refuse the Event: no pod it stores is named so)."""
    if _DNS_LABEL.fullmatch(namespace) and _DNS_SUBDOMAIN.fullmatch(name) and _UID.fullmatch(uid):
        return PodId(namespace, name, uid)
    return None


def timestamp(wall: datetime) -> str:
    """metav1.Time as JSON: RFC 3339 in UTC, whole seconds."""
    return wall.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_name(pod: str, stamp_ns: int) -> str:
    """client-go's name for a new Event (tools/record/event.go makeEvent: "<name>.<UnixNano as hex>"),
    kept a DNS subdomain of at most 253 characters."""
    suffix = f".{stamp_ns:x}"
    head = pod[:MAX_NAME - len(suffix)].rstrip(".-")
    return head + suffix


def destination(drop: Drop) -> str | None:
    """"10.96.0.10:53", "[fd00::a]:53", the address alone without a port; None without an IP header."""
    if drop.dst is None:
        return None
    if drop.dport is None:
        return drop.dst
    return f"[{drop.dst}]:{drop.dport}" if drop.family == 6 else f"{drop.dst}:{drop.dport}"


def what_happened(category: str, drop: Drop) -> str:
    """A few words for what dropped it: what a function hook saw (a conntrack insert race),
    else the category's lead (the fact a console row starts with), else what the reason or the
    freeing function means. From the drop alone: serve reads no node state for it."""
    hooked = hook_verdict(drop) if drop.cause else None
    found = entry(hooked.category if hooked is not None else category)
    text = found.lead(drop, hooked.detail if hooked is not None else None) if found.lead is not None else None
    return text or cause(drop)


def message(count: int, dest: str | None, what: str, node: str) -> str:
    """"42 packets to 10.96.0.10:53 dropped: conntrack insert race, udp/53 (node-1)", within MAX_MESSAGE."""
    packets = f"{count} packet{'' if count == 1 else 's'}"
    to = f" to {printable(dest)}" if dest else ""
    text = f"{packets}{to} dropped: {printable(what)[:MAX_WHAT]} ({printable(node)[:MAX_NAME]})"
    raw = text.encode()
    return text if len(raw) <= MAX_MESSAGE else raw[:MAX_MESSAGE].decode(errors="ignore")


@dataclass(frozen=True)
class EventWrite:
    """One write of one series' Event: a create, or a patch of its count, lastTimestamp and message."""

    key: SeriesKey
    pod: PodId
    name: str
    create: bool
    count: int
    first: datetime
    last: datetime
    message: str
    node: str

    def event(self) -> dict[str, Any]:
        """The whole core/v1 Event, for create_namespaced_event."""
        node = self.node[:MAX_INSTANCE]
        return {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": self.name, "namespace": self.pod.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": self.pod.namespace,
                               "name": self.pod.name, "uid": self.pod.uid},
            "reason": REASON, "type": KIND, "message": self.message,
            "source": {"component": COMPONENT, "host": self.node[:MAX_NAME]},
            "reportingComponent": CONTROLLER, "reportingInstance": node,
            "count": min(self.count, MAX_INT32),
            "firstTimestamp": timestamp(self.first), "lastTimestamp": timestamp(self.last),
        }

    def patch(self) -> dict[str, Any]:
        """What changes from one write of a series to the next: the fields client-go's recorder patches."""
        return {"count": min(self.count, MAX_INT32), "lastTimestamp": timestamp(self.last), "message": self.message}


class Outcome(Enum):
    WRITTEN = "written"
    GONE = "gone"           # a patch found no Event: it expired (the API server keeps Events for --event-ttl, 1 h)
    FAILED = "failed"       # anything else: the counts stay, the series is written again later


class TokenBucket:
    """burst writes at once, then one every `every` seconds (time passed in)."""

    def __init__(self, burst: int, every: float, now: float) -> None:
        self.burst, self.every = burst, every
        self.tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        if now > self._at:
            self.tokens = min(float(self.burst), self.tokens + (now - self._at) / self.every)
            self._at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def give_back(self) -> None:
        self.tokens = min(float(self.burst), self.tokens + 1.0)


class _Series:
    __slots__ = ("pod", "base", "count", "first", "last", "name", "written", "written_at", "pending",
                 "failures", "retry_at")

    def __init__(self, pod: PodId, base: int, wall: datetime) -> None:
        self.pod = pod
        self.base = base                    # the counters' total when the series began
        self.count = 0                      # its packets since
        self.first = self.last = wall       # when it began; when its count last grew
        self.name: str | None = None        # its Event, once created
        self.written = 0                    # the count its Event holds
        self.written_at = float("-inf")
        self.pending: EventWrite | None = None
        self.failures = 0
        self.retry_at = float("-inf")


class PodEvents:
    """The Events of one node's agent (see the module's docstring)."""

    def __init__(self, node: str, interval: float = DEFAULT_INTERVAL, now: float = 0.0,
                 max_series: int = MAX_SERIES, burst: int = BURST, refill: float = REFILL_SECONDS) -> None:
        self.node = node
        self.interval = interval
        self.max_series = max_series
        self.bucket = TokenBucket(burst, refill, now)
        self._series: OrderedDict[SeriesKey, _Series] = OrderedDict()
        self._totals: dict[SeriesKey, int] = {}     # the last update's totals (as many as Series has)
        self._recent: OrderedDict[tuple[str, str], deque[tuple[str, str | None, str]]] = OrderedDict()
        self._last_ns = 0
        self.forgotten = 0                          # series forgotten for room
        self.refused = 0                            # writes the rate cap held back (counted once per update)

    def __len__(self) -> int:
        return len(self._series)

    def observe(self, labels: SeriesLabels, drop: Drop) -> None:
        """A sampled drop, with the labels of its counter key (Series.labels_of): where it went
        and what happened, for the messages."""
        _ns, pod, uid, _direction, category, reason, benign = labels
        if benign == "true" or category not in PATH_BREAKING or not uid or pod in ("", OTHER):
            return
        key = (uid, category)
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = deque(maxlen=RECENT)
            if len(self._recent) > self.max_series:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(key)
        recent.append((reason, destination(drop), what_happened(category, drop)))

    def update(self, values: Mapping[SeriesLabels, Tally], now: float, wall: datetime) -> list[EventWrite]:
        """The writes due now. values: what this agent's Series (pod_uid as its workload)
        gives for the counters now; now: monotonic seconds; wall: the time for the Events."""
        totals: dict[SeriesKey, int] = {}
        pods: dict[SeriesKey, PodId] = {}
        for (ns, pod, uid, _direction, category, reason, benign), t in values.items():
            if benign == "true" or category not in PATH_BREAKING or not uid or pod in ("", OTHER):
                continue
            key = (uid, category, reason)
            if key not in pods:
                who = pod_id(ns, pod, uid)
                if who is None:
                    continue
                pods[key] = who
            totals[key] = totals.get(key, 0) + t.packets
        before, self._totals = self._totals, totals
        for key, total in totals.items():
            s = self._series.get(key)
            if s is None:
                had = before.get(key, 0)
                if total <= had:
                    continue            # no new drop: a series forgotten stays so until its pod drops again
                s = self._series[key] = _Series(pods[key], had, wall)
                if len(self._series) > self.max_series:
                    self._series.popitem(last=False)
                    self.forgotten += 1
            if total - s.base > s.count:
                s.count, s.last = total - s.base, wall
                self._series.move_to_end(key)
        return self._due(now, wall)

    def _due(self, now: float, wall: datetime) -> list[EventWrite]:
        due = [(key, s) for key, s in self._series.items()
               if s.pending is None and s.count > s.written and now >= s.retry_at
               and (s.name is None or now - s.written_at >= self.interval)]
        due.sort(key=lambda d: (d[1].name is not None, d[1].written_at))
        writes: list[EventWrite] = []
        for key, s in due:
            if not self.bucket.take(now):
                self.refused += 1
                break
            create = s.name is None
            name = self._new_name(s.pod.name, wall) if create else s.name
            assert name is not None
            write = EventWrite(key, s.pod, name, create, s.count, s.first, s.last,
                               self._message(key, s.count), self.node)
            s.pending = write
            writes.append(write)
        return writes

    def _new_name(self, pod: str, wall: datetime) -> str:
        # Unique within this agent even for two series created in one update (same clock reading).
        ns = max(int(wall.timestamp() * 1e9), self._last_ns + 1)
        self._last_ns = ns
        return event_name(pod, ns)

    def _message(self, key: SeriesKey, count: int) -> str:
        uid, category, reason = key
        recent = self._recent.get((uid, category), ())
        dest = _most_common(d for _r, d, _w in recent if d is not None)
        what = _most_common(w for r, _d, w in recent if r == reason) or entry(category).verdict
        return message(count, dest, what, self.node)

    def settled(self, write: EventWrite, outcome: Outcome, now: float) -> None:
        """How a write went (podeventswriter.py); a series forgotten meanwhile is left so."""
        s = self._series.get(write.key)
        if s is None or s.pending is not write:
            return
        s.pending = None
        if outcome is Outcome.WRITTEN:
            s.name, s.written, s.written_at, s.failures = write.name, write.count, now, 0
        elif outcome is Outcome.GONE:
            # Expired: create it again with the series' count and first time (client-go's
            # recordEvent does the same when its patch finds the Event gone).
            s.name, s.written, s.failures = None, 0, 0
        else:
            s.failures += 1
            s.retry_at = now + min(RETRY_SECONDS * 2 ** (s.failures - 1), MAX_RETRY_SECONDS)

    def pending(self) -> int:
        return sum(1 for s in self._series.values() if s.pending is not None)


def _most_common(items: Any) -> str | None:
    """The most frequent; of equals, the latest."""
    counts: Counter[str] = Counter()
    last: dict[str, int] = {}
    for i, item in enumerate(items):
        counts[item] += 1
        last[item] = i
    if not counts:
        return None
    return max(counts, key=lambda k: (counts[k], last[k]))
