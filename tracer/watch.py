"""watch: the event loop. kernel event -> decode -> classify -> attribute -> groups -> sinks; counters on a tick.

Independent of how the results are shown: sinks get (drop, verdict) pairs,
on_tick gets the exact counters and stats about twice a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from .explain.classify import Classifier, classify
from .explain.evidence import Evidence
from .explain.explainer import Context, Explainer
from .explain.netfilter_verdict import NETFILTER_CATEGORIES
from .explain.verdict import Verdict
from .groups import Groups
from .kernel.decode import Decoder, Drop
from .kernel.loader import Stats, Tracer
from .memory import release_free_memory
from .pods.attribute import NO_POD, Attribution

TICK_SECONDS = 0.5
# Events taken per pass of the loop (~20-50 ms of Python) before it looks at
# stop, the clock and its tick: under a drop storm the ring buffer never
# empties, and a poll that consumed until it did would never return.
BATCH_EVENTS = 2048
DRAIN_SECONDS = 0.4     # the end-of-run drain: what is already in the ring, bounded in time
TRIM_SECONDS = 10.0     # how often freed memory goes back to the kernel (loader.release_free_memory)


class Sink(Protocol):
    def emit(self, drop: Drop, verdict: Verdict, who: Attribution) -> None: ...

    def flush(self) -> None: ...


class Attributor(Protocol):
    def attribute(self, drop: Drop) -> Attribution: ...


class Pipeline:
    """One batch of raw records through decode -> classify -> attribute ->
    groups -> sinks. Each event is decoded once (one struct step) and
    classified once (plain verdicts remembered by what they were made from:
    explain.classify.Classifier). scripts/bench replays records through it."""

    def __init__(self, decoder: Decoder, groups: Groups, sinks: list[Sink],
                 pods: Callable[[], Attributor | None] = lambda: None, explainer: Explainer | None = None,
                 evidence: Callable[[Drop], Evidence | None] | None = None) -> None:
        self.decoder = decoder
        self.groups = groups
        self.sinks = sinks
        self.pods = pods
        self.explainer = explainer
        # evidence (explain.evidence.EvidenceCache): the node's state behind the
        # hints of device, overlay, ipsec, ... drops, read off the event path.
        self.classify = Classifier(self.context) if evidence is None else Classifier(self.context, evidence=evidence)

    def context(self, netns: int) -> Context | None:
        return self.explainer.context(netns) if self.explainer is not None else None

    def deliver(self, records: list[bytes]) -> None:
        # Names bound once per batch: this loop is netdrop's per-event cost.
        index = self.pods()
        decode, verdict_of, add = self.decoder.decode_record, self.classify, self.groups.add_event
        emits = [sink.emit for sink in self.sinks]
        again = self.decoder.decode_again
        explainer = self.explainer
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
                last = rec[8:]
                drop = decode(rec)
                verdict = verdict_of(drop)      # a function hook's verdict first (Classifier)
                if explainer is not None and verdict.category in NETFILTER_CATEGORIES:
                    explainer.want(drop.netns)
                who = index.attribute(drop) if index is not None else NO_POD
            add(drop, verdict, who)
            for emit in emits:
                emit(drop, verdict, who)
        if records:
            for sink in self.sinks:
                sink.flush()


def run(tracer: Tracer, decoder: Decoder, groups: Groups, sinks: list[Sink],
        duration: float | None, stop: threading.Event,
        on_tick: Callable[[Stats, float, float | None], None] = lambda *a: None,
        pods: Callable[[], Attributor | None] = lambda: None,
        maintain: Callable[[], None] = lambda: None, explainer: Explainer | None = None,
        evidence: Callable[[Drop], Evidence | None] | None = None) -> Stats:
    """Trace until duration runs out or stop is set; returns the final stats.

    pods() gives the current pod index (swapped in whole by a background
    thread: the event path only reads it); maintain() runs on every tick in
    this thread, e.g. to bring the kernel's pod maps up to date. explainer
    (explain.explainer.Explainer) knows the rule counters and conntrack statistics
    that tell NETFILTER_DROP apart; it samples in its own thread."""
    pipeline = Pipeline(decoder, groups, sinks, pods, explainer, evidence)
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
        stats = tracer.stats(counts, totals)
        on_tick(stats, now - start, None if deadline is None else max(0.0, deadline - now))
        return stats

    while not stop.is_set():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        timeout = TICK_SECONDS if deadline is None else min(TICK_SECONDS, deadline - now)
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
    # counts are read below whatever is left undelivered).
    drain_until = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < drain_until:
        records = tracer.poll_records(0, BATCH_EVENTS)
        if not records:
            break
        deliver(records)
    return tick(time.monotonic())
