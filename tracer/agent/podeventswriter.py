"""podeventswriter: the Events podevents.py decides, written through the API; serve's side of them.

- EventWriter: one thread that makes the calls (CoreV1Api create_namespaced_event,
  patch_namespaced_event), each within pods/apicall.py's limits (a deadline and
  a byte cap; close() cuts off the call in flight), fed by a bounded queue:
  serve's loop never waits on the API. How each write went comes back as an
  Outcome: a patch answered 404 is an Event the API server let expire (GONE:
  created again), any other failure keeps the counts for a later try (FAILED).
- PodEventsAgent: what serve's loop calls once a tick (tick): the sampled drops
  it drained, for their destinations; every CHECK_SECONDS the kernel's counters,
  folded by a Series of its own (sinks/metrics.py, the pod's uid as the
  workload label: podevents.pod_uid), into PodEvents, whose writes go to the
  writer. Its Series is its own, so /metrics' and its memos never meet across
  threads; both are bounded the same way (--max-series, --series-ttl).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, Protocol

from ..errors import UserError
from ..kernel.decode import Drop
from ..kernel.event import CounterKey
from ..pods.apicall import KubeUnavailable
from ..pods.attribute import Attribution
from ..sinks.metrics import Names, Series
from .podevents import EventWrite, Outcome, PodEvents, pod_uid

CHECK_SECONDS = 5.0         # how often the counters are read for Events (at most the interval)
MAX_QUEUE = 64              # writes waiting for the writer; past it a write waits for the next check
ANSWER_BYTES = 256 << 10    # an Event the API server sends back is a few KiB
JOIN_SECONDS = 2.0


class Client(Protocol):
    """What the writer needs of pods/kube.py's KubeClient."""

    v1: Any

    def call_json(self, fn: Callable[..., Any], *args: Any, seconds: float | None = None,
                  max_bytes: int | None = None, **kw: Any) -> Any: ...

    def close(self) -> None: ...


class EventWriter:
    """Writes Events from a thread of its own (see the module's docstring)."""

    def __init__(self, client: Callable[[], Client], warn: Callable[[str], None] = lambda msg: None,
                 max_queue: int = MAX_QUEUE) -> None:
        """client: makes the API client, in the writer's thread when first needed (again after it failed)."""
        self._make = client
        self._client: Client | None = None
        self._warn = warn
        self._queue: queue.Queue[EventWrite | None] = queue.Queue(max_queue)
        self._done: queue.SimpleQueue[tuple[EventWrite, Outcome]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._problem: str | None = None        # the last failure said, not said again until a write succeeds
        self.written = self.failed = 0
        self._thread = threading.Thread(target=self._run, name="netdrop-pod-events", daemon=True)
        self._thread.start()

    def submit(self, write: EventWrite) -> bool:
        """False: the queue is full (the API is slow) or the writer is stopping."""
        if self._stop.is_set():
            return False
        try:
            self._queue.put_nowait(write)
        except queue.Full:
            return False
        return True

    def results(self) -> list[tuple[EventWrite, Outcome]]:
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        """Stop now: the call in flight is cut off, what waits is dropped."""
        self._stop.set()
        with self._lock:
            client = self._client
        if client is not None:
            client.close()
        while True:             # room for the wake-up, whatever waited
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(JOIN_SECONDS)

    def _run(self) -> None:
        while not self._stop.is_set():
            write = self._queue.get()
            if write is None or self._stop.is_set():
                return
            outcome = self._write(write)
            if outcome is Outcome.FAILED:
                self.failed += 1
            else:
                self.written += 1
            self._done.put((write, outcome))

    def _api(self) -> Client:
        with self._lock:
            if self._client is None:
                client = self._make()
                if self._stop.is_set():     # close() came meanwhile and saw no client to cut off
                    client.close()
                    raise KubeUnavailable("netdrop is stopping")
                self._client = client
            return self._client

    def _write(self, write: EventWrite) -> Outcome:
        try:
            api = self._api()
            if write.create:
                got = api.call_json(api.v1.create_namespaced_event, write.pod.namespace, body=write.event(),
                                    max_bytes=ANSWER_BYTES)
                if got is None:
                    raise KubeUnavailable(f"no namespace {write.pod.namespace} or no Events API (404)")
            else:
                got = api.call_json(api.v1.patch_namespaced_event, write.name, write.pod.namespace,
                                    body=write.patch(), max_bytes=ANSWER_BYTES,
                                    _content_type="application/strategic-merge-patch+json")
                if got is None:
                    return Outcome.GONE
        except (KubeUnavailable, UserError) as exc:
            if self._stop.is_set():
                return Outcome.FAILED
            said = str(exc)
            if said != self._problem:
                self._problem = said
                self._warn(f"Events on pods: not written, tried again later: {said}")
            return Outcome.FAILED
        if self._problem is not None:
            self._problem = None
            self._warn("Events on pods: written again")
        return Outcome.WRITTEN


class PodEventsAgent:
    """serve's side: tick() once a tick with the sampled drops drained; close() at the end."""

    def __init__(self, events: PodEvents, series: Series, counts: Callable[[], Mapping[CounterKey, object]],
                 decode: Callable[[bytes], Drop], live_pods: Callable[[], set[int] | None], writer: EventWriter,
                 now: float, wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.events, self.series, self.writer = events, series, writer
        self._counts, self._decode, self._live_pods, self._wall = counts, decode, live_pods, wall
        self.check = min(CHECK_SECONDS, events.interval)
        self._next = now

    def tick(self, records: Iterable[bytes], now: float) -> None:
        for rec in records:
            d = self._decode(rec)
            self.events.observe(self.series.labels_of((d.netns, d.reason_raw, d.location_raw, d.pod_raw, d.facts)), d)
        for write, outcome in self.writer.results():
            self.events.settled(write, outcome, now)
        if now < self._next:
            return
        self._next = now + self.check
        values = self.series.update(self._counts(), self._live_pods(), now)
        for write in self.events.update(values, now, self._wall()):
            if not self.writer.submit(write):
                self.events.bucket.give_back()
                self.events.settled(write, Outcome.FAILED, now)

    def close(self) -> None:
        self.writer.close()


def start(node: str, interval: float, counts: Callable[[], Mapping[CounterKey, object]], names: Names,
          decode: Callable[[bytes], Drop], pod_of_tag: Callable[[int], Attribution],
          live_pods: Callable[[], set[int] | None], kubeconfig: str | None, warn: Callable[[str], None],
          max_series: int, series_ttl: float) -> PodEventsAgent:
    """serve's Events on pods, their writer's thread started; the API client is made there."""
    from ..pods.apicall import Calls
    from ..pods.kube import KubeClient

    def client() -> Client:
        return KubeClient(kubeconfig, Calls(), warn)

    now = time.monotonic()
    series = Series(names, pod_of_tag, pod_uid, max_series, series_ttl)
    return PodEventsAgent(PodEvents(node, interval, now), series, counts, decode, live_pods,
                          EventWriter(client, warn), now)
