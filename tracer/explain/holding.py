"""holding: a group's first events wait, briefly, for their namespace's evidence.

The node's state behind a hint (explain/evidence.py: a veth whose peer is
down, a bridge port blocking, an IPsec policy without its state) is read by a
background thread, a few commands per namespace, while the event path never
waits on a command. The first events of a new group would come before that
read and say what the event alone tells ("a queue or traffic-control rule
dropped it on a0") where the node's state says something else ("a0 is UP, no
carrier: its peer is down").

netdrop holds those first events until the read is done, rather than writing
them at once and correcting the group afterwards with a follow-up record:

- A line once written stays where it went: a log shipper, `grep`, `jq`, a
  ticket pasted from the first lines of `watch --json`, a capture's
  events.jsonl. A correcting record helps only a consumer that knows to join
  it to the lines before it; every other reader keeps the wrong why. Held,
  each line is written once, with the evidence.
- The cost is latency, and only where the evidence matters: events whose
  category's hint reads the node's state (categories.Category.evidence), of a
  group none of whose events with evidence is out yet, wait until a read of
  their namespace that began after they arrived is done (about 25 ms of
  commands; the evidence thread paces reads 0.1 s apart), at most
  HOLD_SECONDS. Every other event passes at once. A group whose category reads
  evidence for some drops only (UDP NO_SOCKET: those to an overlay port) is
  asked per event until one of those has gone out. Order is kept within a
  group, not across groups: a held group's lines come after lines of others
  that arrived later (each line has its kernel time).
- Counting never waits: the counts are the kernel's counters, read on ticks.
- Memory is bounded: at most MAX_HELD events wait; beyond, the group waiting
  longest goes out as it stands.
- A group whose read took longer than HOLD_SECONDS goes out without the
  evidence; its group's verdict (the console, the summary) is made again once
  the read is done (Holding.revised), so the views settle on the why with
  evidence even then. On stop, the end-of-run drain gives held events the rest
  of their time (within the drain's own bound); what still waits after it is
  written with the verdict it has (flushed, never dropped).

Holding keeps only keys and items; what a key, an item and a read are is the
caller's (watch.Pipeline: the kernel counter key, (drop, pod), EvidenceCache).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

HOLD_SECONDS = 0.5      # the longest a group's first events wait for their namespace's evidence
MAX_HELD = 4096         # events waiting at once, all groups together
MAX_GROUPS = 65536      # groups remembered as settled, then forgotten at once (the kernel keeps 16,384 by default)
MAX_LATE = 4096         # groups out by the bound whose evidence is still awaited for their verdict

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Reads(Protocol):
    """The evidence reader (evidence.EvidenceCache)."""

    def ask(self, netns: int, since: float) -> None:
        """Read netns with a read beginning at or after since, soon."""

    def answered(self, netns: int, since: float) -> bool:
        """A read of netns begun at or after since is done."""


@dataclass
class _Waiting(Generic[T]):
    netns: int
    since: float                # when its first event arrived: the read it waits for begins after
    items: list[T] = field(default_factory=list)


class Holding(Generic[K, T]):
    """Items per group key, held until their namespace is read or HOLD_SECONDS pass.

    The caller looks its key up in settled first (a dict lookup: the path of
    nearly every event): absent, the group is new; None, its events never
    wait; a rule, those of its events for which rule(item's drop) is true
    wait. Then waiting(key) or the rule decides between hold() and letting it
    pass; a new group's first event that passes settles it (settle())."""

    def __init__(self, reads: Reads, hold_seconds: float = HOLD_SECONDS, max_held: int = MAX_HELD,
                 max_groups: int = MAX_GROUPS, clock: Callable[[], float] = time.monotonic) -> None:
        self.reads = reads
        self.hold_seconds = hold_seconds
        self.max_held = max_held
        self.max_groups = max_groups
        self.clock = clock
        # Groups whose first event is out -> None (theirs never wait) or the
        # rule of those that still would. Read directly by the event loop.
        self.settled: dict[K, Callable[..., bool] | None] = {}
        self.held = 0
        self._waiting: dict[K, _Waiting[T]] = {}       # in the order they began to wait
        self._late: dict[K, tuple[int, float]] = {}    # out by the bound: netns and the read they await

    def waiting(self, key: K) -> bool:
        return key in self._waiting

    def settle(self, key: K, rule: Callable[..., bool] | None = None) -> None:
        """key's events go out as they come from now on; with a rule, those
        for which it is true still wait (until one of them has gone out)."""
        if len(self.settled) >= self.max_groups:
            self.settled.clear()
        self.settled[key] = rule

    def hold(self, key: K, netns: int, item: T) -> list[T]:
        """Hold item behind its group's earlier ones. Returns what must go out
        now instead: with MAX_HELD reached, the items of the group waiting
        longest (item itself among them if that is its group)."""
        w = self._waiting.get(key)
        if w is None:
            w = self._waiting[key] = _Waiting(netns, self.clock())
            self.reads.ask(netns, w.since)
        w.items.append(item)
        self.held += 1
        if self.held > self.max_held:
            return self._release(next(iter(self._waiting)), late=True)
        return []

    def due(self) -> list[T]:
        """The items whose wait is over (their namespace read, or the bound
        passed), in arrival order within each group."""
        if not self._waiting:
            return []
        now = self.clock()
        out: list[T] = []
        for key, w in list(self._waiting.items()):
            if self.reads.answered(w.netns, w.since):
                out += self._release(key, late=False)
            elif now - w.since >= self.hold_seconds:
                out += self._release(key, late=True)
        return out

    def flush(self) -> list[T]:
        """Everything held, at once (the end of a run): what is answered with
        its evidence, the rest as it stands."""
        out: list[T] = []
        for key, w in list(self._waiting.items()):
            out += self._release(key, late=not self.reads.answered(w.netns, w.since))
        return out

    def revised(self) -> list[K]:
        """Groups that went out without their evidence (by the bound, or a
        full queue) and whose namespace has been read since: their verdict
        can be made again now. Each key is handed out once."""
        done = [key for key, (netns, since) in self._late.items() if self.reads.answered(netns, since)]
        for key in done:
            del self._late[key]
        return done

    def _release(self, key: K, late: bool) -> list[T]:
        w = self._waiting.pop(key)
        self.held -= len(w.items)
        self.settle(key)
        if late:
            if len(self._late) >= MAX_LATE:
                del self._late[next(iter(self._late))]
            self._late[key] = (w.netns, w.since)
        return w.items
