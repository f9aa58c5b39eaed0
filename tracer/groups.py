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
    RATE_WINDOW = 5.0  # seconds over which the /s column averages

    def __init__(self, decoder, recent: int = 8):
        self.decoder = decoder
        self.groups: dict[GroupKey, Group] = {}
        self.recent: collections.deque[tuple[Drop, Verdict]] = collections.deque(maxlen=recent)
        self.events = 0
        self._history: collections.deque[tuple[float, dict[GroupKey, int]]] = collections.deque()

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
        g = self._group((drop.netns, drop.reason_raw, drop.location_raw))
        # An event may know more than the counter key (the ICMP error sent).
        g.category = verdict.category
        g.latest = drop
        g.hint = verdict.hint
        self.recent.append((drop, verdict))
        self.events += 1

    def update_counts(self, counts: dict[GroupKey, int], now: float) -> None:
        """New exact counts; rates average over the last RATE_WINDOW seconds."""
        while len(self._history) > 1 and now - self._history[1][0] >= self.RATE_WINDOW:
            self._history.popleft()
        then, old = self._history[0] if self._history else (None, {})
        dt = now - then if then is not None else 0.0
        for key, n in counts.items():
            g = self._group(key)
            g.count = n
            g.rate = (n - old.get(key, 0)) / dt if dt > 0 else 0.0
        for key in self.groups.keys() - counts.keys():
            self.groups[key].rate = 0.0
        self._history.append((now, dict(counts)))

    def rows(self) -> list[Group]:
        return sorted(self.groups.values(), key=lambda g: (-g.count, g.netns, g.category))

    @property
    def total(self) -> int:
        return sum(g.count for g in self.groups.values())
