"""capturerun: one NetdropCapture carried out on this node, from its window's start to its end.

The controller (captures.py) decodes, classifies and attributes each event
once and offers it to every run; a run keeps what its capture selects:

- exact counts: the kernel's counters now minus their baseline at the
  window's edge (the flight recorder's interval edge at or before the
  capture's start), for the keys of its scope only: a pod capture counts a
  key whose pod tag names a selected pod (of the capture's namespace, never
  another's), a node capture every key of the node (serve's filters already
  keep other simulated nodes out). Categories narrow the counts; ports and
  ips only the events (docs/captures.md), as the kernel's keys have no ports.
- sampled events: the recorder's records since the start, then the live
  ones, through the capture's own Groups (as watch and capture count them)
  and its Recorder (events.jsonl, drops.pcapng), then summary.json at the end.

Memory per run: the baseline and Groups, one entry per kernel counter key at
most (the kernel's map bounds both), the Recorder's bounded flow table and
per-second timeline (a capture lasts at most an hour), and a list of
references to the past window's records, which the flight recorder holds
anyway (its byte budget), consumed BACKLOG_BATCH a tick.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from ..captures.report import FileEntry, Report, State, from_summary
from ..captures.spec import Capture, format_duration
from ..groups import Groups
from ..kernel.event import CounterKey
from ..kernel.loader import Stats
from ..pods.attribute import Attribution
from ..sinks import capture as files

if TYPE_CHECKING:
    from ..explain.verdict import Verdict
    from ..kernel.decode import Decoder, Drop
    from ..kernel.hooks import Hook
    from ..pods.objects import PodInfo
    from ..sinks.capture import OutputDir

BACKLOG_BATCH = 1024     # past records a run decodes per tick (~20 ms): a long `since` never holds the loop
MAX_SELECTED = 4096      # pod uids a pod capture remembers as selected (pods come and go while it runs)
CUT_SLACK = 1.0          # a window that starts this much later than asked is said to be cut


@dataclass(frozen=True)
class Window:
    """What the flight recorder gives a capture: the edge its counts start from
    (unix time), the counters' packets at that edge, the records since."""

    start: float
    baseline: Mapping[CounterKey, int]
    records: Sequence[bytes] = ()
    cut: bool = False           # it starts later than asked: the recorder's history does not reach back


class Past(Protocol):
    def window(self, since: float) -> Window: ...


class _Count(Protocol):
    @property
    def packets(self) -> int: ...


class _RecorderWindow(Protocol):
    """history.recorder.Window, as a run reads it."""

    @property
    def start(self) -> float: ...

    @property
    def cut(self) -> bool: ...

    @property
    def baseline(self) -> Mapping[CounterKey, _Count]: ...

    @property
    def records(self) -> Sequence[bytes]: ...


class _Recorder(Protocol):
    def window(self, since: float) -> _RecorderWindow | None: ...


class NoHistory:
    """Without a flight recorder: the window starts now, from the counters now."""

    def __init__(self, counts: Callable[[], Mapping[CounterKey, int]], clock: Callable[[], float]) -> None:
        self._counts, self._clock = counts, clock

    def window(self, since: float) -> Window:
        now = self._clock()
        return Window(max(since, now), dict(self._counts()), cut=since < now - CUT_SLACK)


class FromRecorder:
    """The flight recorder's window (history/recorder.py); before its first
    counter reading, the counters now (NoHistory)."""

    def __init__(self, recorder: _Recorder, now: NoHistory) -> None:
        self._recorder, self._now = recorder, now

    def window(self, since: float) -> Window:
        got = self._recorder.window(since)
        if got is None:
            return self._now.window(since)
        return Window(got.start, {k: c.packets for k, c in got.baseline.items()}, got.records, got.cut)


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Scope:
    """Which counter keys and events a capture sees: a node capture all of the
    node's; a pod capture those of its selected pods (by uid, in its namespace)."""

    def __init__(self, capture: Capture, pod_of_tag: Callable[[int], Attribution]) -> None:
        self.capture = capture
        self.pod_of_tag = pod_of_tag
        self.uids: set[str] = set()
        self._tags: dict[int, bool] = {}        # pod id (tag >> 2) -> selected; ids are never reused

    def select(self, pods: Sequence[PodInfo]) -> bool:
        """The node's pods now: those the capture selects join (they stay). True if any joined."""
        sel = self.capture.spec.pods
        if sel is None:
            return False
        new = {p.uid for p in pods if p.uid not in self.uids and sel.matches(p, self.capture.namespace)}
        if not new or len(self.uids) >= MAX_SELECTED:
            return False
        self.uids |= new
        self._tags = {k: v for k, v in self._tags.items() if v}    # a "no" may now be a "yes"
        return True

    def pod(self, who: Attribution) -> bool:
        if self.capture.node_scope:
            return True
        pod = who.pod
        return pod is not None and pod.uid in self.uids and pod.namespace == self.capture.namespace

    def tag(self, tag: int) -> bool:
        if self.capture.node_scope:
            return True
        if not tag:
            return False
        got = self._tags.get(tag >> 2)
        if got is None:
            got = self._tags[tag >> 2] = self.pod(self.pod_of_tag(tag))
        return got


class CaptureRun:
    """One capture on this node: its scope, groups and files, its report."""

    def __init__(self, capture: Capture, node: str, outdir: OutputDir, window: Window, *, decoder: Decoder,
                 pod_of_tag: Callable[[int], Attribution], totals: Mapping[str, int], pcap_snaplen: int,
                 hooks: Sequence[Hook] = ()) -> None:
        """Raises UserError when its files cannot be made (the caller reports Failed)."""
        self.capture, self.node, self.outdir = capture, node, outdir
        self.start = window.start
        self.baseline = window.baseline
        self.backlog: Sequence[bytes] = window.records
        self.at = 0                             # the next past record to go through
        self.scope = Scope(capture, pod_of_tag)
        self.groups = Groups(decoder, pod_of_tag=pod_of_tag)
        self.totals0 = dict(totals)
        self.hooks = hooks
        snaplen = pcap_snaplen if capture.spec.packets else 0
        self.recorder = files.Recorder(outdir, pcap_snaplen=snaplen,
                                       started=datetime.fromtimestamp(window.start, UTC))
        self.filters = capture.spec.filters
        self.ended: float | None = None         # unix time its counts were last read at, once past the end
        self.last_report = float("-inf")
        self.counted = 0                        # exact packets in scope, as of the last count()
        self.stats = Stats()
        self.note = f"since cut to {format_duration(max(0.0, capture.created.timestamp() - window.start))}: " \
                    f"the recorder's history" if capture.spec.since and window.cut else ""

    @property
    def key(self) -> str:
        return self.capture.uid

    # -- events --
    def offer(self, drop: Drop, verdict: Verdict, who: Attribution) -> None:
        """An event the controller decoded: kept if the capture selects it."""
        f = self.filters
        t = drop.time.timestamp()
        if t < self.start or t > self.capture.ends_at() or not self.scope.pod(who):
            return
        if f.categories and verdict.category not in f.categories:
            return
        if f.ports and drop.sport not in f.ports and drop.dport not in f.ports:
            return
        if f.ips and drop.src not in f.ips and drop.dst not in f.ips:
            return
        self.groups.add_event(drop, verdict, who)
        self.recorder.emit(drop, verdict, who)

    def flush(self) -> None:
        self.recorder.flush()

    def past(self, n: int = BACKLOG_BATCH) -> list[bytes]:
        """The next n records of the past window (the controller sends them through to this run only)."""
        chunk = list(self.backlog[self.at:self.at + n])
        self.at += len(chunk)
        if self.at >= len(self.backlog):
            self.backlog, self.at = (), 0       # the references go: the recorder may drop its records
        return chunk

    @property
    def behind(self) -> bool:
        return self.at < len(self.backlog)

    # -- counts --
    def count(self, counts: Mapping[CounterKey, int], totals: Mapping[str, int], now: float, wall: float) -> None:
        """The kernel's counters (packets per key) and per-CPU totals, read at wall (unix time)."""
        delta: dict[CounterKey, int] = {}
        in_scope, base = self.scope.tag, self.baseline
        for key, packets in counts.items():
            if in_scope(key[3]):
                n = packets - base.get(key, 0)
                if n > 0:
                    delta[key] = n
        when = datetime.fromtimestamp(wall, UTC)
        self.groups.update_counts(delta, now, when)
        self.recorder.tick(self.groups, when)
        cats = self.filters.categories
        self.counted = sum(g.count for g in self.groups.groups.values() if not cats or g.category in cats)
        grew = {k: max(0, totals.get(k, 0) - self.totals0.get(k, 0)) for k in ("lost", "sampled_out", "counter_full")}
        self.stats = Stats(matched=self.counted + (grew["counter_full"] if self.capture.node_scope else 0),
                           events=self.recorder.delivered, **grew)

    # -- the report --
    def base(self, state: State, message: str = "", updated: float | None = None) -> Report:
        note = "; ".join(m for m in (message, self.note) if m)
        return Report(self.capture.name, self.capture.uid, self.node, state, note,
                      window_from=rfc3339(self.start),
                      window_to=rfc3339(self.ended) if self.ended is not None and state != "Recording" else None,
                      updated=rfc3339(updated) if updated is not None else None)

    def summary(self, ended: float, why: str) -> dict[str, object]:
        from ..sinks.summary.build import build

        self.stats = replace(self.stats, events=self.recorder.delivered)

        cats = self.filters.categories
        if cats:        # the counts are exact per category: those not asked for leave the summary
            for k in [k for k, g in self.groups.groups.items() if g.category not in cats]:
                del self.groups.groups[k]
        notices = ["ports and ips narrow the sampled events only (flows, events.jsonl, drops.pcapng): the kernel's "
                   "counts have no ports; the counts are exact per pod, category, reason and location"] \
            if self.filters.narrows_events_only else []
        if self.note:
            notices.append(self.note)
        summary: dict[str, object] = dict(build(
            self.groups, self.recorder, ended=datetime.fromtimestamp(ended, UTC), reason_ended=why, stats=self.stats,
            hooks=self.hooks, filters=describe_filters(self.capture), pods=self.capture.spec.describe(),
            node=self.node, names={}, notices=notices))
        return summary

    def progress(self, wall: float) -> Report:
        """Recording, with the running totals (at most every REPORT_SECONDS: the controller decides)."""
        self.last_report = wall
        return from_summary(self.base("Recording", updated=wall), self.summary_now(wall), ())

    def summary_now(self, wall: float) -> dict[str, object]:
        from ..sinks.summary.build import build

        self.stats = replace(self.stats, events=self.recorder.delivered)

        return dict(build(self.groups, self.recorder, ended=datetime.fromtimestamp(wall, UTC), reason_ended="recording",
                          stats=self.stats, hooks=(), filters=[], pods=None, node=self.node, names={}))

    def finish(self, wall: float, why: str = "duration reached", failed: str | None = None) -> Report:
        """summary.json written, the files closed; the final report (Done, or Failed with `failed`)."""
        self.ended = min(wall, self.capture.ends_at()) if failed is None else wall
        summary = self.summary(wall, why)
        self.recorder.close()
        write_error = None
        try:
            files.write_summary(self.outdir, summary)
        except Exception as exc:  # noqa: BLE001 - UserError: a full disk, a read-only store
            write_error = str(exc)
        self.outdir.close()
        message = failed or write_error or self.recorder.write_error or ""
        state: State = "Failed" if failed or write_error else "Done"
        return from_summary(self.base(state, message, updated=wall), summary, self.files())

    def files(self) -> tuple[FileEntry, ...]:
        out = []
        for name in (files.SUMMARY_FILE, files.EVENTS_FILE, files.PCAP_FILE):
            try:
                st = os.stat(self.outdir.path / name, follow_symlinks=False)
            except OSError:
                continue
            out.append(FileEntry(name, st.st_size))
        return tuple(out)


def describe_filters(capture: Capture) -> list[str]:
    f = capture.spec.filters
    return [s for s in (("ports " + ", ".join(map(str, f.ports))) if f.ports else "",
                        ("ips " + ", ".join(f.ips)) if f.ips else "",
                        ("categories " + ", ".join(f.categories)) if f.categories else "") if s]


def with_endpoint(report: Report, endpoint: str, cert_sha256: str) -> Report:
    return replace(report, endpoint=endpoint, cert_sha256=cert_sha256)
