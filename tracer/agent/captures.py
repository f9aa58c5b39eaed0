"""captures: the agent's controller of NetdropCaptures (docs/captures.md, "The agent").

serve's main loop calls tick() with the records it polled; nothing here
waits on the API there: the captures are listed and watched in one thread
(captures/api.py), reports written in another (ReportWriter, one pending
report per capture: a newer one replaces an unwritten older one), and the
loop takes the latest set of captures when it changed.

Each tick: a capture not yet ended that this node takes part in (its node is
selected, or it hosts a selected pod: looked at again whenever the node's pods
or the captures change) gets a CaptureRun (capturerun.py), at most MAX_ACTIVE
at once; each event is decoded, classified and attributed once (watch.Pipeline)
and offered to every run; every COUNT_SECONDS the kernel's counters are read
once for all runs; a run writes its report when it starts, at most every
REPORT_SECONDS while recording (small: report.recording()), and once done or failed.

A capture the agents refuse (SpecError) gets one Failed report from each node
that hosts a pod of its namespace; in the agents' namespace, where every node
hosts an agent, only from the nodes its spec names (docs/captures.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from ..captures.api import CaptureClient, Refused, Seen
from ..captures.report import REPORT_SECONDS, Report, recording
from ..captures.spec import AGENTS_NAMESPACE, Capture, CaptureSpec
from ..errors import UserError
from ..explain.verdict import Verdict
from ..groups import Groups
from ..kernel.decode import Decoder, Drop
from ..pods.apicall import KubeUnavailable
from ..pods.attribute import NO_POD, Attribution
from ..watch import Attributor, Pipeline
from .capturerun import BACKLOG_BATCH, CaptureRun, Past, rfc3339

if TYPE_CHECKING:
    from ..kernel.event import CounterKey
    from ..kernel.hooks import Hook
    from ..pods.objects import PodInfo
    from ..sinks.capture import OutputDir

MAX_ACTIVE = 32         # captures run at once on a node; more get a Failed report
COUNT_SECONDS = 2.0     # how often the runs read the kernel's counters (one read for all)
MAX_FINISHED = 4096     # captures run here remembered (not run again; their files removed with them)
WRITE_BACKOFF = (1.0, 30.0)
PRUNE_SECONDS = 60.0    # how often the store drops captures past their retention or its budget
TOO_MANY = f"too many captures on this node ({MAX_ACTIVE} running)"
STOPPED = "agent stopped"


class Store(Protocol):
    """The node's capture directories (agent/capturefiles.py)."""

    def open(self, capture: Capture) -> OutputDir: ...

    def remove(self, namespace: str, name: str) -> object: ...

    def prune(self, now: float | None = None, keep: frozenset[tuple[str, str]] = frozenset()) -> object: ...


def owner(refused: Refused) -> Capture:
    """What report_object needs of a capture to own its report: its namespace, name and uid."""
    return Capture(refused.namespace, refused.name, refused.uid, datetime.fromtimestamp(0, UTC),
                   CaptureSpec(None, None, 0.0))


def takes_part(capture: Capture, node: str, pods: Sequence[PodInfo]) -> bool:
    """Whether this node carries capture out: its node is selected, or it hosts a selected pod."""
    if capture.spec.nodes is not None:
        return capture.spec.nodes.matches(node)
    sel = capture.spec.pods
    return sel is not None and any(sel.matches(p, capture.namespace) for p in pods)


def reports_refusal(refused: Refused, node: str, pods: Sequence[PodInfo]) -> bool:
    """Which nodes write the Failed report of a capture the agents refuse: those
    hosting a pod of its namespace; in the agents' namespace (an agent on every
    node) those its spec names, else every node."""
    if refused.namespace == AGENTS_NAMESPACE:
        return node in refused.node_names if refused.node_names else True
    return any(p.namespace == refused.namespace for p in pods)


def report_due(last: float, now: float) -> bool:
    """A running capture's report at most every REPORT_SECONDS."""
    return now - last >= REPORT_SECONDS


class ReportWriter:
    """Writes reports in its own thread, the latest of each capture; an API
    that fails is asked again after a growing wait. endpoint() and cert() fill
    in where the files are (endpoint may ask the API: this thread)."""

    def __init__(self, client: CaptureClient, endpoint: Callable[[], str], cert: Callable[[], str],
                 warn: Callable[[str], None] = lambda msg: None) -> None:
        self.client, self.endpoint, self.cert, self.warn = client, endpoint, cert, warn
        self._pending: dict[str, tuple[Capture, Report]] = {}
        self._rv: dict[str, str | None] = {}
        self._cond = threading.Condition()
        self._busy = self._stop = False
        self._failing: str | None = None
        self.writes = 0
        self.thread = threading.Thread(target=self._run, name="netdrop-capture-reports", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, capture: Capture, report: Report) -> None:
        with self._cond:
            self._pending.pop(capture.uid, None)
            self._pending[capture.uid] = (capture, report)
            self._cond.notify_all()

    def _run(self) -> None:
        backoff = WRITE_BACKOFF[0]
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if not self._pending:
                    return
                uid = next(iter(self._pending))
                capture, report = self._pending.pop(uid)
                self._busy = True
            failed = False
            try:
                full = replace(report, endpoint=self.endpoint(), cert_sha256=self.cert())
                rv = self.client.write_report(capture, full, self._rv.get(uid))
                if report.final:
                    self._rv.pop(uid, None)
                else:
                    self._rv[uid] = rv
                self.writes += 1
                if self._failing is not None:
                    self._failing = None
                    self.warn("captures: reports are written again")
                backoff = WRITE_BACKOFF[0]
            except KubeUnavailable as exc:
                failed = True
                self._rv.pop(uid, None)         # what is there now is unknown: create, or read and replace
                if self._failing is None:
                    self._failing = str(exc)
                    self.warn(f"captures: cannot write the report of {capture.key}: {exc}; trying again")
            with self._cond:
                self._busy = False
                if failed and not self._stop:
                    self._pending.setdefault(uid, (capture, report))    # unless a newer one came meanwhile
                    self._cond.notify_all()
                    self._cond.wait(backoff)
                    backoff = min(backoff * 2, WRITE_BACKOFF[1])
                elif failed:
                    self._pending.pop(uid, None)
                self._cond.notify_all()

    def flush(self, seconds: float) -> bool:
        """Wait until every pending report is written (or failed once more); False if time ran out."""
        deadline = time.monotonic() + seconds
        with self._cond:
            self._stop = True       # a failed write is not tried again: the agent is stopping
            self._cond.notify_all()
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, seconds: float = 0.5) -> None:
        with self._cond:
            self._stop = True
            self._pending.clear()
            self._cond.notify_all()
        self.client.close()         # a write still waiting on the API ends now
        if self.thread.is_alive():
            self.thread.join(seconds)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending) + self._busy


class _Unkept(Groups):
    """The pipeline's own groups: each run keeps its own (CaptureRun.groups)."""

    def add_event(self, drop: Drop, verdict: Verdict, who: Attribution = NO_POD) -> None:
        pass


class _Fanout:
    """The pipeline's sink: each event to the runs it is for."""

    def __init__(self) -> None:
        self.runs: list[CaptureRun] = []

    def emit(self, drop: Drop, verdict: Verdict, who: Attribution) -> None:
        for run in self.runs:
            run.offer(drop, verdict, who)

    def flush(self) -> None:
        for run in self.runs:
            run.flush()


class Controller:
    def __init__(self, node: str, client: CaptureClient, store: Store, past: Past, *, decoder: Decoder,
                 pod_of_tag: Callable[[int], Attribution], pods: Callable[[], Sequence[PodInfo] | None],
                 attributor: Callable[[], Attributor | None], counts: Callable[[], Mapping[CounterKey, int]],
                 totals: Callable[[], Mapping[str, int]], endpoint: Callable[[], str], cert: Callable[[], str],
                 hooks: Sequence[Hook] = (), snaplen: int = 0, warn: Callable[[str], None] = lambda msg: None,
                 max_active: int = MAX_ACTIVE, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.node, self.client, self.store, self.past = node, client, store, past
        self.decoder, self.pod_of_tag, self.pods = decoder, pod_of_tag, pods
        self.counts, self.totals, self.hooks, self.snaplen = counts, totals, hooks, snaplen
        self.warn, self.max_active, self.clock, self.monotonic = warn, max_active, clock, monotonic
        self.writer = ReportWriter(client, endpoint, cert, warn)
        self.fanout = _Fanout()
        self.pipeline = Pipeline(decoder, _Unkept(decoder, pod_of_tag=pod_of_tag), [self.fanout], attributor)
        self.runs: dict[str, CaptureRun] = {}
        self.finished: dict[str, tuple[str, str]] = {}    # uid -> (namespace, name): run here, or refused
        self.known: dict[str, Seen] | None = None          # None until the first list
        self._latest: dict[str, Seen] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pods_seen: object = None
        self._next_count = 0.0
        self._api_problem: str | None = None
        self.watcher = threading.Thread(target=self._watch, name="netdrop-capture-watch", daemon=True)
        self._next_prune = monotonic()
        self.tick_seconds = 0.0         # the longest tick so far (measured: what captures cost the main loop)

    # -- threads --
    def start(self) -> None:
        self.writer.start()
        self.watcher.start()

    def _watch(self) -> None:
        self.client.watch_captures(self._changed, self._stop, self._on_error)

    def _changed(self, known: dict[str, Seen]) -> None:
        with self._lock:
            self._latest = known

    def _on_error(self, msg: str | None) -> None:
        if msg is not None and msg != self._api_problem:
            self.warn(f"captures: {msg}")
        elif msg is None and self._api_problem is not None:
            self.warn("captures: the capture watch works again")
        self._api_problem = msg

    # -- the main loop's tick --
    def tick(self, records: list[bytes]) -> None:
        t0 = self.monotonic()
        wall = self.clock()
        with self._lock:
            latest, self._latest = self._latest, None
        if latest is not None:
            self._forget(latest)
            self.known = latest
        pods = self.pods()
        if self.known is not None and pods is not None and (latest is not None or pods is not self._pods_seen):
            self._pods_seen = pods
            self._consider(pods, wall)
        if self.runs:
            self._deliver(records)
            self._count_and_report(t0, wall)
        if t0 >= self._next_prune:
            # Retention and the store's budget: the captures recording now only by age.
            self._next_prune = t0 + PRUNE_SECONDS
            try:
                self.store.prune(wall, frozenset((r.capture.namespace, r.capture.name) for r in self.runs.values()))
            except OSError as exc:
                self.warn(f"captures: cannot prune {exc.filename or 'the capture store'}: {exc.strerror}")
        self.tick_seconds = max(self.tick_seconds, self.monotonic() - t0)

    def _forget(self, latest: dict[str, Seen]) -> None:
        """Captures deleted since: a running one stops (nothing to report to: its
        reports went with it), the files of any run here are removed."""
        from ..captures.api import MAX_KNOWN

        if self.known is None or len(latest) >= MAX_KNOWN:     # a list cut short proves no deletion
            return
        for uid in [u for u in self.runs if u not in latest]:
            run = self.runs.pop(uid)
            run.recorder.close()
            run.outdir.close()
            self._remove_files(run.capture.namespace, run.capture.name)
        for uid in [u for u in self.finished if u not in latest]:
            ns, name = self.finished.pop(uid)
            self._remove_files(ns, name)

    def _remove_files(self, namespace: str, name: str) -> None:
        try:
            self.store.remove(namespace, name)
        except OSError as exc:
            self.warn(f"captures: cannot remove the files of {namespace}/{name}: {exc.strerror}")

    def _consider(self, pods: Sequence[PodInfo], wall: float) -> None:
        assert self.known is not None
        for run in self.runs.values():
            run.scope.select(pods)
        for uid, seen in self.known.items():
            if uid in self.runs or uid in self.finished:
                continue
            if isinstance(seen, Refused):
                if reports_refusal(seen, self.node, pods):
                    self._finish_early(uid, owner(seen), seen.why, wall)
                continue
            if wall >= seen.ends_at() or not takes_part(seen, self.node, pods):
                continue
            if len(self.runs) >= self.max_active:
                self._finish_early(uid, seen, TOO_MANY, wall)
                continue
            self._start(seen, pods, wall)

    def _finish_early(self, uid: str, capture: Capture, why: str, wall: float) -> None:
        self._remember(uid, capture)
        self.writer.put(capture, Report(capture.name, capture.uid, self.node, "Failed", why, updated=rfc3339(wall)))

    def _remember(self, uid: str, capture: Capture) -> None:
        if len(self.finished) >= MAX_FINISHED:
            self.finished.pop(next(iter(self.finished)))
        self.finished[uid] = (capture.namespace, capture.name)

    def _start(self, capture: Capture, pods: Sequence[PodInfo], wall: float) -> None:
        window = self.past.window(capture.starts_at())
        try:
            outdir = self.store.open(capture)
        except (UserError, OSError) as exc:
            self._finish_early(capture.uid, capture, f"cannot make the capture's directory: {exc}", wall)
            return
        try:
            run = CaptureRun(capture, self.node, outdir, window, decoder=self.decoder, pod_of_tag=self.pod_of_tag,
                             totals=self.totals(), pcap_snaplen=self.snaplen, hooks=self.hooks)
        except UserError as exc:
            outdir.close()
            self._finish_early(capture.uid, capture, str(exc), wall)
            return
        run.scope.select(pods)
        run.count(self.counts(), self.totals(), self.monotonic(), wall)
        self.runs[capture.uid] = run
        self.writer.put(capture, recording(run.progress(wall)))

    def _deliver(self, records: list[bytes]) -> None:
        live = [r for r in self.runs.values() if r.ended is None]
        if live and records:
            self.fanout.runs = live
            self.pipeline.deliver(records)
        budget = BACKLOG_BATCH
        for run in self.runs.values():
            if budget <= 0:
                break
            if run.behind:
                chunk = run.past(budget)
                budget -= len(chunk)
                self.fanout.runs = [run]
                self.pipeline.deliver(chunk)
        self.fanout.runs = []

    def _count_and_report(self, now: float, wall: float) -> None:
        ending = [r for r in self.runs.values() if r.ended is None and wall >= r.capture.ends_at()]
        if now >= self._next_count or ending:
            totals = self.totals()      # before the counts (Tracer.stats says why)
            counts = self.counts()
            for run in self.runs.values():
                if run.ended is None:
                    run.count(counts, totals, now, wall)
            for run in ending:
                run.ended = wall
            self._next_count = now + COUNT_SECONDS
        for uid, run in list(self.runs.items()):
            if run.ended is not None and not run.behind:
                self.writer.put(run.capture, run.finish(wall))
                del self.runs[uid]
                self._remember(uid, run.capture)
            elif run.ended is None and report_due(run.last_report, wall):
                self.writer.put(run.capture, recording(run.progress(wall)))

    # -- stop --
    def close(self, seconds: float = 1.0) -> None:
        """Stop within about `seconds`: each running capture's files end with its
        summary and its report becomes Failed "agent stopped" if the API answers
        in time; then every thread and call ends."""
        self._stop.set()
        self.client.stop_watch()
        wall = self.clock()
        if self.runs:       # the counts up to now, into each run's summary
            totals, counts, now = self.totals(), self.counts(), self.monotonic()
            for run in self.runs.values():
                if run.ended is None:
                    run.count(counts, totals, now, wall)
        for uid, run in list(self.runs.items()):
            try:
                self.writer.put(run.capture, run.finish(wall, why="stopped early (agent stopped)", failed=STOPPED))
            except OSError as exc:
                self.warn(f"captures: {run.capture.key}: {exc}")
            del self.runs[uid]
        if not self.writer.flush(seconds):
            self.warn(f"captures: {self.writer.pending} report(s) not written: the API did not answer in time")
        self.writer.close()
        self.watcher.join(0.5)

    def describe(self) -> str:
        return f"{len(self.runs)} running, {self.writer.writes} reports written"


# -- what serve builds --

class Endpoint:
    """Where clients fetch this agent's files, for its reports: --advertise; else
    the listen address; on 0.0.0.0 or [::] (no address a client can use), the
    Node's InternalIP (asked of the API, in the report writer's thread) and the
    listen port. "" while it cannot be told."""

    def __init__(self, scheme: str, host: str, port: int, node_ip: Callable[[], str | None]) -> None:
        self.scheme, self.host, self.port, self.node_ip = scheme, host, port, node_ip
        self._known: str | None = None if host in ("0.0.0.0", "::") else self._url(host)

    def _url(self, host: str) -> str:
        return f"{self.scheme}://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def __call__(self) -> str:
        if self._known is None:
            try:
                ip = self.node_ip()
            except KubeUnavailable:
                ip = None
            if ip is None:
                return ""
            self._known = self._url(ip)
        return self._known


def internal_ip(client: CaptureClient, node: str) -> str | None:
    """The Node's first InternalIP (status.addresses), as the API says."""
    from ..pods import apitext
    from ..pods.objects import api_field, list_field

    obj = client.kube.call_json(client.kube.v1.read_node, node)
    for a in list_field(api_field(obj, "status"), "addresses"):
        if api_field(a, "type") == "InternalIP" and (ip := apitext.ip(api_field(a, "address"))):
            return ip
    return None
