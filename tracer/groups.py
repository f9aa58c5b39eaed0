"""groups: what the console and the end-of-run summary show, kept from two sources.

Exact counts come from the kernel's counters keyed (netns, reason, location,
pod, packet facts), folded here into groups keyed (netns, reason, location,
pod, benign): the facts split a group only where they change whether it is
benign (explain/benign.py);
the latest flow and the hint of each group come from the events, which may be
incomplete when the reader falls behind. Nothing here touches the kernel.

Views rank the groups with ranked() (by recent rate, then count, or another
of SORTS) and may take a snapshot() to show from another thread: copies the
event loop does not change under them.
"""

from __future__ import annotations

import collections
import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from .explain.benign import benign_why
from .explain.classify import key_category
from .explain.verdict import Verdict
from .kernel.decode import Decoder, Drop
from .kernel.event import CounterKey
from .kernel.stacks import Stack
from .pods.attribute import NO_POD, Attribution

GroupKey = tuple[int, int, int, int, bool]   # (netns, reason, location address, pod tag, benign)
FLOWS_KEPT = 8      # the latest events of each group, for the console's details (bounded memory per group)
STACKS_KEPT = 3     # distinct kernel stacks sampled per group, each with its count of events


@dataclass
class Group:
    netns: int
    reason: str | None
    location: str | None
    category: str
    count: int = 0
    rate: float = 0.0
    latest: Drop | None = None
    hint: str | None = None
    detail: dict[str, object] | None = None
    pod_raw: int = 0
    attribution: Attribution | None = None
    events: int = 0                       # events delivered for this group
    first_seen: datetime | None = None    # from events; from the counter ticks (±0.5 s)
    last_seen: datetime | None = None     # for drops no event was delivered for
    _events_at_tick: int = 0
    key: GroupKey = (0, 0, 0, 0, False)
    # Expected on a healthy node (explain/benign.py): decided by the counter
    # key's reason, location and packet facts, the same for its events.
    benign: bool = False
    latest_drops: collections.deque[Drop] = field(default_factory=lambda: collections.deque(maxlen=FLOWS_KEPT))
    # The kernel stacks of its events (when stacks are taken): the first
    # STACKS_KEPT distinct ones with their events, and the events of any other.
    stacks: dict[Stack, int] = field(default_factory=dict)
    stacks_other: int = 0

    def add_stack(self, stack: Stack) -> None:
        kept = self.stacks
        if stack in kept:
            kept[stack] += 1
        elif len(kept) < STACKS_KEPT:
            kept[stack] = 1
        else:
            self.stacks_other += 1

    @property
    def pod_label(self) -> str:
        pod = self.attribution.pod if self.attribution else None
        return pod.label if pod else ""


def _by_rate(g: Group) -> tuple[float, int, int, str]:
    return (-g.rate, -g.count, g.netns, g.category)


def _by_count(g: Group) -> tuple[int, float, int, str]:
    return (-g.count, -g.rate, g.netns, g.category)


def _by_newest(g: Group) -> tuple[float, int, int, str]:
    return (-(g.last_seen.timestamp() if g.last_seen else 0.0), -g.count, g.netns, g.category)


def _by_pod(g: Group) -> tuple[bool, str, int, int, str]:
    return (g.attribution is None or g.attribution.pod is None, g.pod_label, -g.count, g.netns, g.category)


# What a view may rank by; the first is the default: what is dropping now comes first.
SORTS: dict[str, Callable[[Group], tuple[object, ...]]] = {
    "rate": _by_rate, "count": _by_count, "newest": _by_newest, "pod": _by_pod}


def ranked(groups: Iterable[Group], sort: str = "rate") -> list[Group]:
    """Groups in the order a view lists them (sort: one of SORTS)."""
    return sorted(groups, key=SORTS[sort])


class Groups:
    RATE_WINDOW = 5.0  # seconds over which the /s column averages

    def __init__(self, decoder: Decoder, recent: int = 8,
                 pod_of_tag: Callable[[int], Attribution] = lambda tag: NO_POD) -> None:
        """pod_of_tag names the pod behind a kernel pod tag, for groups no event has reached."""
        self.decoder = decoder
        self.pod_of_tag = pod_of_tag
        self.groups: dict[GroupKey, Group] = {}
        self.recent: collections.deque[tuple[Drop, Verdict, Attribution]] = collections.deque(maxlen=recent)
        self.events = 0
        self._history: collections.deque[tuple[float, dict[GroupKey, int]]] = collections.deque()
        self._keys: dict[CounterKey, GroupKey] = {}     # memo of group_key, bounded by MEMO_KEYS

    MEMO_KEYS = 65536

    def group_key(self, key: CounterKey) -> GroupKey:
        """The group a kernel counter key counts into: its facts only say whether it is benign."""
        got = self._keys.get(key)
        if got is None:
            netns, reason, addr, pod, facts = key
            benign = benign_why(self.decoder.reason_name(reason), self.decoder.location_name(addr), facts)
            got = (netns, reason, addr, pod, benign is not None)
            if len(self._keys) >= self.MEMO_KEYS:
                self._keys.clear()
            self._keys[key] = got
        return got

    def _group(self, key: GroupKey, facts: int = 0) -> Group:
        """The group of key, made on first sight; facts: of the kernel key that made it, whose
        category it takes until an event says more."""
        g = self.groups.get(key)
        if g is None:
            netns, reason, addr, pod, benign = key
            rname = self.decoder.reason_name(reason)
            lname = self.decoder.location_name(addr)
            g = Group(netns, rname, lname, key_category(rname, lname, facts), pod_raw=pod,
                      attribution=self.pod_of_tag(pod) if pod else None, key=key, benign=benign)
            self.groups[key] = g
        return g

    def add_event(self, drop: Drop, verdict: Verdict, who: Attribution = NO_POD) -> None:
        g = self._group(self.group_key((drop.netns, drop.reason_raw, drop.location_raw, drop.pod_raw, drop.facts)),
                        drop.facts)
        # An event may know more than the counter key (the ICMP error sent).
        g.category = verdict.category
        g.latest = drop
        g.hint = verdict.hint
        g.detail = verdict.detail
        g.attribution = who
        g.latest_drops.append(drop)
        if drop.stack is not None:
            g.add_stack(drop.stack)
        g.events += 1
        t = drop.time      # events of several CPUs arrive in no strict order
        if g.first_seen is None or t < g.first_seen:
            g.first_seen = t
        if g.last_seen is None or t > g.last_seen:
            g.last_seen = t
        self.recent.append((drop, verdict, who))
        self.events += 1

    def update_counts(self, raw: dict[CounterKey, int], now: float, wall: datetime | None = None) -> None:
        """New exact counts of the kernel's keys; rates average over the last
        RATE_WINDOW seconds. wall (the tick's clock time) dates drops that no event showed."""
        counts: dict[GroupKey, int] = {}
        for k, n in raw.items():
            gk = self.group_key(k)
            counts[gk] = counts.get(gk, 0) + n
            if gk not in self.groups:
                self._group(gk, k[4])
        while len(self._history) > 1 and now - self._history[1][0] >= self.RATE_WINDOW:
            self._history.popleft()
        then, old = self._history[0] if self._history else (None, {})
        dt = now - then if then is not None else 0.0
        for key, n in counts.items():
            g = self._group(key)
            if wall is not None and n - g.count > g.events - g._events_at_tick:
                g.first_seen = g.first_seen or wall
                g.last_seen = max(g.last_seen, wall) if g.last_seen else wall
            g._events_at_tick = g.events
            g.count = n
            g.rate = (n - old.get(key, 0)) / dt if dt > 0 else 0.0
        for key in self.groups.keys() - counts.keys():
            self.groups[key].rate = 0.0
        self._history.append((now, dict(counts)))

    def reclassify(self, verdict_of: Callable[[Drop], Verdict], categories: tuple[str, ...]) -> None:
        """Classify each group's latest drop again (new context may explain it better)."""
        for g in self.groups.values():
            if g.latest is not None and g.category in categories:
                v = verdict_of(g.latest)
                if v.detail is None and g.detail is not None:
                    continue    # what was learnt stays: a policy set back since does not unexplain its drops
                g.category, g.hint, g.detail = v.category, v.hint, v.detail

    def revise(self, key: GroupKey, verdict_of: Callable[[Drop], Verdict]) -> None:
        """The group's verdict made again from its latest drop: its events went
        out before their namespace's evidence was read (explain/holding.py)."""
        g = self.groups.get(key)
        if g is not None and g.latest is not None:
            v = verdict_of(g.latest)
            g.category, g.hint, g.detail = v.category, v.hint, v.detail     # benign is the key's

    def rows(self, sort: str = "rate") -> list[Group]:
        """Ranked by recent rate, then count (or by another of SORTS)."""
        return ranked(self.groups.values(), sort)

    def snapshot(self) -> list[Group]:
        """Copies of the groups, their latest drops too: a view in another thread
        reads them while the event loop goes on changing the originals."""
        out = []
        for g in list(self.groups.values()):
            c = copy.copy(g)
            c.latest_drops = collections.deque(g.latest_drops, maxlen=FLOWS_KEPT)
            c.stacks = dict(g.stacks)
            out.append(c)
        return out

    @property
    def total(self) -> int:
        return sum(g.count for g in self.groups.values())
