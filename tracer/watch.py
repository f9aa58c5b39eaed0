"""watch: the event loop. kernel event -> decode -> classify -> attribute -> groups -> sinks; counters on a tick.

Independent of how the results are shown: sinks get (drop, verdict) pairs,
on_tick gets the exact counters and stats about twice a second. With an
evidence reader, a group's first events wait for their namespace's evidence
before they are classified (explain/holding.py says why and how long); every
other event goes straight through.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from .explain.classify import Classifier, classify, evidence_rule, reads_evidence
from .explain.evidence import Evidence, EvidenceCache
from .explain.explainer import Context, Explainer
from .explain.holding import Holding, Reads
from .explain.netfilter_verdict import NETFILTER_CATEGORIES
from .explain.verdict import Verdict
from .groups import GroupKey, Groups
from .kernel.decode import Decoder, Drop
from .kernel.loader import Stats, Tracer
from .memory import release_free_memory
from .pods.attribute import NO_POD, Attribution

# How often a loop's tick runs (counters read, pod maps kept current, stop
# looked at): the event loop here and serve's (commands/serve.py).
TICK_SECONDS = 0.5
# Events taken per pass of the loop (~20-50 ms of Python) before it looks at
# stop, the clock and its tick: under a drop storm the ring buffer never
# empties, and a poll that consumed until it did would never return.
BATCH_EVENTS = 2048
DRAIN_SECONDS = 0.4     # the end-of-run drain: what is already in the ring, bounded in time
TRIM_SECONDS = 10.0     # how often freed memory goes back to the kernel (memory.release_free_memory)
HELD_POLL_SECONDS = 0.05    # the ring is polled this often while events wait for evidence (their release)


class Sink(Protocol):
    def emit(self, drop: Drop, verdict: Verdict, who: Attribution) -> None: ...

    def flush(self) -> None: ...


class Attributor(Protocol):
    def attribute(self, drop: Drop) -> Attribution: ...


class Pipeline:
    """One batch of raw records through decode -> classify -> attribute ->
    groups -> sinks. Each event is decoded once (one struct step) and
    classified once (plain verdicts remembered by what they were made from:
    explain.classify.Classifier). scripts/bench replays records through it.

    With reads (the evidence reader), an event of a group whose first event is
    not out yet and whose verdict reads evidence is held (explain.holding)
    and goes through when its namespace has been read; deliver() lets out what
    is due after each batch, flush_held() the rest."""

    def __init__(self, decoder: Decoder, groups: Groups, sinks: list[Sink],
                 pods: Callable[[], Attributor | None] = lambda: None, explainer: Explainer | None = None,
                 evidence: Callable[[Drop], Evidence | None] | None = None, reads: Reads | None = None) -> None:
        self.decoder = decoder
        self.groups = groups
        self.sinks = sinks
        self.pods = pods
        self.explainer = explainer
        # evidence (explain.evidence.EvidenceCache): the node's state behind the
        # hints of device, overlay, ipsec, ... drops, read off the event path.
        self.classify = Classifier(self.context) if evidence is None else Classifier(self.context, evidence=evidence)
        self.holding: Holding[GroupKey, tuple[Drop, Attribution]] | None = \
            Holding(reads) if reads is not None else None

    def context(self, netns: int) -> Context | None:
        return self.explainer.context(netns) if self.explainer is not None else None

    def deliver(self, records: list[bytes]) -> None:
        # Names bound once per batch: this loop is netdrop's per-event cost.
        index = self.pods()
        decode, verdict_of, add = self.decoder.decode_record, self.classify, self.groups.add_event
        group_key = self.groups.group_key       # the group a drop counts into (groups.py): Holding's key
        emits = [sink.emit for sink in self.sinks]
        again = self.decoder.decode_again
        explainer, holding = self.explainer, self.holding
        settled = holding.settled if holding is not None else None
        out = bool(records)
        last = b""
        verdict: Verdict        # set by the first record of the batch, which is always decoded
        who: Attribution
        for rec in records:
            # A storm of one flow is the same record again and again but for
            # its timestamp (nd_event.ts_ns, the first 8 bytes): within a batch,
            # such a record has the verdict and pod of the one before it (all
            # of them are functions of the record, the batch's pod index and
            # what the explainer and evidence knew a few ms earlier).
            if rec[8:] == last:
                drop = again(rec)
            else:
                drop = decode(rec)
                who = index.attribute(drop) if index is not None else NO_POD
                if settled is not None:
                    key = group_key((drop.netns, drop.reason_raw, drop.location_raw, drop.pod_raw, drop.facts))
                    # None: its events never wait; else which do (a new group: reads_evidence).
                    rule = settled.get(key, reads_evidence)
                    if rule is not None:
                        assert holding is not None
                        if holding.waiting(key) or rule(drop):
                            self._through(holding.hold(key, drop.netns, (drop, who)))
                            last = b""      # held, no verdict: the next record is looked at whole
                            continue
                        if rule is reads_evidence:
                            holding.settle(key, evidence_rule(drop))
                last = rec[8:]
                verdict = verdict_of(drop)      # a function hook's verdict first (Classifier)
                if explainer is not None and verdict.category in NETFILTER_CATEGORIES:
                    explainer.want(drop.netns)
            add(drop, verdict, who)
            for emit in emits:
                emit(drop, verdict, who)
        if holding is not None and holding.held:
            out = self._through(holding.due()) or out
        if out:
            for sink in self.sinks:
                sink.flush()

    def _through(self, items: list[tuple[Drop, Attribution]]) -> bool:
        """Held events, let out: the rest of deliver()'s way for each."""
        for drop, who in items:
            verdict = self.classify(drop)
            if self.explainer is not None and verdict.category in NETFILTER_CATEGORIES:
                self.explainer.want(drop.netns)
            self.groups.add_event(drop, verdict, who)
            for sink in self.sinks:
                sink.emit(drop, verdict, who)
        return bool(items)

    def flush_held(self) -> None:
        """The end of a run: what still waits goes out with the verdict it has now."""
        if self.holding is not None and self._through(self.holding.flush()):
            for sink in self.sinks:
                sink.flush()

    def revise(self) -> None:
        """Groups that went out without their evidence (their read took longer
        than the hold): their verdict made again now that it is read."""
        if self.holding is not None:
            for key in self.holding.revised():
                self.groups.revise(key, self.classify)

    @property
    def held(self) -> int:
        return self.holding.held if self.holding is not None else 0


def run(tracer: Tracer, decoder: Decoder, groups: Groups, sinks: list[Sink],
        duration: float | None, stop: threading.Event,
        on_tick: Callable[[Stats, float, float | None], None] = lambda *a: None,
        pods: Callable[[], Attributor | None] = lambda: None,
        maintain: Callable[[], None] = lambda: None, explainer: Explainer | None = None,
        evidence: EvidenceCache | None = None) -> Stats:
    """Trace until duration runs out or stop is set; returns the final stats.

    pods() gives the current pod index (swapped in whole by a background
    thread: the event path only reads it); maintain() runs on every tick in
    this thread, e.g. to bring the kernel's pod maps up to date. explainer
    (explain.explainer.Explainer) knows the rule counters and conntrack statistics
    that tell NETFILTER_DROP apart; it samples in its own thread. evidence
    (explain.evidence.EvidenceCache) reads the node's state behind hints in
    its own thread; a group's first events wait for it (explain/holding.py).
    At the end, held events get the rest of their wait within the drain, then
    go out as they stand."""
    pipeline = Pipeline(decoder, groups, sinks, pods, explainer, evidence, reads=evidence)
    context = pipeline.context
    start = time.monotonic()
    deadline = start + duration if duration else None
    next_tick = start
    next_trim = start       # at once: start-up (compiling, kallsyms, the first scans) freed the most

    deliver = pipeline.deliver

    def tick(now: float) -> Stats:
        maintain()
        totals = tracer.cpu_totals()        # before the counts: see Tracer.stats
        counts = tracer.counts()
        groups.update_counts({key: c.packets for key, c in counts.items()}, now, datetime.now(UTC))
        if explainer is not None:   # what the counters learnt since may explain a group better
            groups.reclassify(lambda d: classify(d, context(d.netns)), NETFILTER_CATEGORIES)
        pipeline.revise()
        stats = tracer.stats(counts, totals)
        on_tick(stats, now - start, None if deadline is None else max(0.0, deadline - now))
        return stats

    while not stop.is_set():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        timeout = TICK_SECONDS if deadline is None else min(TICK_SECONDS, deadline - now)
        if pipeline.held:       # released within this of their namespace's read
            timeout = min(timeout, HELD_POLL_SECONDS)
        deliver(tracer.poll_records(max(1, int(timeout * 1000)), BATCH_EVENTS))
        now = time.monotonic()
        if now >= next_tick:
            tick(now)
            next_tick = now + TICK_SECONDS
        if now >= next_trim:
            release_free_memory()
            next_trim = now + TRIM_SECONDS
    # What is already in the ring buffer belongs to the window: drain it,
    # bounded in time (under a storm new events keep arriving; the exact
    # counts are read below whatever is left undelivered). Held events get
    # the rest of their wait within the same bound, then go out as they stand.
    drain_until = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < drain_until:
        held = pipeline.held
        records = tracer.poll_records(int(HELD_POLL_SECONDS * 1000) if held else 0, BATCH_EVENTS)
        if not records and not held:
            break
        deliver(records)
    pipeline.flush_held()
    return tick(time.monotonic())
