"""groups: what the console and the end-of-run summary show, kept from two sources.

Exact counts come from the kernel's counters keyed (netns, reason, location);
the latest flow and the hint of each group come from the events, which may be
incomplete when the reader falls behind. Nothing here touches the kernel.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from .classify import Verdict, category_of
from .decode import Drop

GroupKey = tuple[int, int, int]  # (netns, reason number, location address): the kernel counter key


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


class Groups:
    def __init__(self, decoder, recent: int = 8):
        self.decoder = decoder
        self.groups: dict[GroupKey, Group] = {}
        self.recent: collections.deque[tuple[Drop, Verdict]] = collections.deque(maxlen=recent)
        self.events = 0
        self._last_counts: dict[GroupKey, int] = {}
        self._last_time: float | None = None

    def _group(self, key: GroupKey) -> Group:
        g = self.groups.get(key)
        if g is None:
            netns, reason, addr = key
            rname = self.decoder.reason_name(reason)
            lname = self.decoder.location_name(addr)
            g = Group(netns, rname, lname, category_of(rname, lname))
            self.groups[key] = g
        return g

    def add_event(self, drop: Drop, verdict: Verdict) -> None:
        g = self._group((drop.netns, drop.reason_code, drop.location_addr))
        # An event may know more than the counter key (the ICMP error sent).
        g.category = verdict.category
        g.latest = drop
        g.hint = verdict.hint
        self.recent.append((drop, verdict))
        self.events += 1

    def update_counts(self, counts: dict[GroupKey, int], now: float) -> None:
        dt = now - self._last_time if self._last_time is not None else None
        for key, n in counts.items():
            g = self._group(key)
            if dt:
                g.rate = (n - self._last_counts.get(key, 0)) / dt
            g.count = n
        for key in self.groups.keys() - counts.keys():
            self.groups[key].rate = 0.0
        self._last_counts = dict(counts)
        self._last_time = now

    def rows(self) -> list[Group]:
        return sorted(self.groups.values(), key=lambda g: (-g.count, g.netns, g.category))

    @property
    def total(self) -> int:
        return sum(g.count for g in self.groups.values())
