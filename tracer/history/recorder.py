"""recorder: the flight recorder serve feeds and a capture reads (events and counts together).

serve calls record() with every poll's records and tick() when due(); a
capture starting at Unix time `since` asks window(since) for where it really
starts (a counter edge), the counters then, and the events from then on.
All times are Unix times on the recorder's clock: CLOCK_MONOTONIC plus the
decoder's offset, fixed at start, so that counter edges and event times
agree whatever the wall clock does meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..kernel.loader import Count, CounterKey
from .counts import BUDGET as COUNTS_BUDGET
from .counts import INTERVAL, KEEP, CounterHistory
from .events import EventRing

EVENTS_BUDGET = 32 * 1024 * 1024
MAX_KEEP = 2 * 3600.0


@dataclass(frozen=True)
class Window:
    """What a capture starting at `asked` gets from the recorder."""

    asked: float                 # the start the capture asked for
    start: float                 # the counter edge it starts at: at or before asked, or later when cut
    cut: bool                    # the recorder's history began after `asked`: start > asked
    baseline: Mapping[CounterKey, Count] = field(repr=False)   # the counters at `start` (absent keys: 0)
    records: list[bytes] = field(repr=False)    # the events kept that happened at or after `start`
    events_from: float           # the events are complete from here on (> start: the ring had let some go)

    def counts(self, now: Mapping[CounterKey, Count]) -> dict[CounterKey, Count]:
        """The drops counted since `start`: the counters `now` less the baseline,
        the keys that changed only."""
        out: dict[CounterKey, Count] = {}
        base = self.baseline
        for key, c in now.items():
            b = base.get(key)
            p, n = (c.packets, c.bytes) if b is None else (c.packets - b.packets, c.bytes - b.bytes)
            if p > 0 or n > 0:
                out[key] = Count(max(p, 0), max(n, 0))
        return out


class FlightRecorder:
    """The sampled events (EventRing) and the counters' history (CounterHistory) of the last while."""

    def __init__(self, events_budget: int = EVENTS_BUDGET, keep: float = KEEP, interval: float = INTERVAL,
                 counts_budget: int = COUNTS_BUDGET, mono_to_wall: float | None = None,
                 loaded: float | None = None) -> None:
        """mono_to_wall: the decoder's (Decoder.mono_to_wall), so that decoded
        events show the times the recorder keeps them by. loaded: the
        CLOCK_MONOTONIC time the counters were all zero (just before the
        programs were loaded: their maps are new), the history's first edge;
        without it the first edge is the first reading, and a capture reaching
        back before it would lose the drops counted until then (they are in
        that reading's baseline)."""
        if not 0 < keep <= MAX_KEEP:
            raise ValueError(f"the recorder keeps at most {MAX_KEEP / 3600:.0f} h")
        self.mono_to_wall = time.time() - time.monotonic() if mono_to_wall is None else mono_to_wall
        self.events = EventRing(events_budget, self.mono_to_wall)
        self.counts = CounterHistory(interval, keep, counts_budget)
        if loaded is not None:
            self.counts.tick({}, loaded + self.mono_to_wall)

    def now(self) -> float:
        """The recorder's clock: Unix time as CLOCK_MONOTONIC advances."""
        return time.monotonic() + self.mono_to_wall

    def record(self, records: list[bytes]) -> None:
        """One poll's records (poll_records' list, taken as it is). Their times are their own (nd_event.ts_ns)."""
        self.events.record(records)

    def due(self, now: float | None = None) -> bool:
        """Is a counter reading due (tick)?"""
        return self.counts.due(self.now() if now is None else now)

    def tick(self, counts: Mapping[CounterKey, Count], now: float | None = None) -> None:
        """A counter edge: Tracer.counts() read just now."""
        self.counts.tick(counts, self.now() if now is None else now)

    def window(self, since: float) -> Window | None:
        """What a capture starting at Unix time `since` needs; None before the first counter reading."""
        got = self.counts.at(since)
        if got is None:
            return None
        start, baseline = got
        return Window(asked=since, start=start, cut=start > since, baseline=baseline,
                      records=self.events.since(start), events_from=max(start, self.events.reach))

    def describe(self) -> str:
        """One line for serve's start-up and stop messages."""
        oldest = self.counts.oldest
        back = 0.0 if oldest is None else max(0.0, self.now() - oldest)
        return (f"recorder: {len(self.events):,} events ({self.events.bytes / 2**20:.1f} of "
                f"{self.events.budget / 2**20:.0f} MiB, {self.events.evicted:,} let go), "
                f"counters {back / 60:.0f} of {self.counts.keep / 60:.0f} min back")
