"""source: keeps the pod index current in the background, and says what the kernel's pod maps must hold.

Event-driven: one thread follows the API's pods of this node (list,
then watch, resumed from its resourceVersion), one waits on the node's own
notifications (node.events.NodeEvents: veths, addresses and namespace ids in the
node's namespace, /run/netns by inotify). After a change, that thread lets
more gather for SETTLE_SECONDS, looks up only what changed
(NodeScanner.refresh), and when pods or namespaces changed builds a new
attribute.PodIndex and swaps it in. Nothing is polled while the node is quiet
but namespaces CNI is still wiring (PENDING_POLL) and a full scan every
RESCAN_SECONDS as the safety net. The event loop reads current(), and on its
ticks takes new_kernel_pods() (only when the index changed) into the kernel's
pod maps (pipeline/loaded.py). Nothing here runs per event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import UserError
from .apicall import Calls
from .attribute import PodIds, PodIndex
from .apicall import KubeUnavailable
from .kube import START_SECONDS, KubeClient, Selection, check_selection
from .objects import PodInfo
from ..node.events import Changes, NodeEvents
from ..node.scan import NodeScanner
from ..node.namespaces import HOST_NETNS
from ..node.table import NodeSnapshot

if TYPE_CHECKING:
    from ..kernel.filters import KernelPods

T = TypeVar("T")

RESCAN_SECONDS = 30.0     # the full scan, a safety net behind the events
SETTLE_SECONDS = 0.2      # after a notification, more are gathered this long: one round per burst
PENDING_POLL = 0.25       # namespaces CNI is still wiring are read again this often (nothing notifies)
FALLBACK_SECONDS = 1.0    # without notifications (no netlink socket in the node's namespace): full scans
RECONNECT_SECONDS = 2.0     # between the end of one failed attempt and the next: one request at a time
STOP_SECONDS = 1.0          # stop() waits this long in all for the threads: their API calls were
                            # cut off, they end at once (a thread left in a blocking call when the
                            # interpreter exits can abort it: see apicall)


def _entered(node_netns: str, read: Callable[[], T]) -> T:
    """read() of the node's namespace, an OSError (removed meanwhile, not a
    namespace, no CAP_SYS_ADMIN to enter it, ...) made one line for the user."""
    try:
        return read()
    except OSError as exc:
        raise UserError(f"cannot read the node's network namespace {node_netns!r}: "
                        f"{exc.strerror or exc}") from None


class PodSource:
    def __init__(self, selection: Selection, kubeconfig: str | None = None, node: str | None = None,
                 node_netns: str = HOST_NETNS, warn: Callable[[str], None] = lambda msg: None,
                 calls: Calls | None = None):
        """calls: the API calls this source will make; closing them (stop(), or
        whoever builds the source in another thread and gives up on it) ends
        those in flight at once."""
        started = time.monotonic()
        self.calls = calls if calls is not None else Calls()
        self.selection = selection
        self.warn = warn
        self.scanner = _entered(node_netns, lambda: NodeScanner(node_netns))
        self.ids = PodIds()
        self.problem: str | None = None     # why there is no API, if there is none
        self.node_name: str | None = node
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._events: NodeEvents | None = None
        self._applied: PodIndex | None = None
        pods: list[PodInfo] | None = None
        self._pods: list[PodInfo] | None = None
        self.index: PodIndex | None = None
        self.kube: KubeClient | None = None      # an API that answered
        self._client: KubeClient | None = None   # a configured one, answering or not
        self._node_arg = node
        try:
            self.kube = self._client = KubeClient(kubeconfig, self.calls, warn)
        except KubeUnavailable as exc:
            self.problem = str(exc)
        if not self.attributing:      # no API, no pods asked for: nothing to attribute, nothing to scan
            self._pods, self.index = [], None
            return
        snapshot = _entered(node_netns, self.scanner.scan)
        if self.kube is not None:
            # START_SECONDS for every start-up call together: an API that does not
            # answer in time is asked again in the background (_reconnect).
            try:
                with self.kube.within(START_SECONDS, since=started):
                    self.node_name = self.kube.node_name(node, set(snapshot.node_ips))
                    pods, _ = self.kube.list_pods(self.node_name)
                    if selection.active:
                        check_selection(self.kube, self.node_name, selection, pods)
            except KubeUnavailable as exc:
                self.kube, self.problem, pods = None, str(exc), None
        self._pods = pods
        self.index = self._build(snapshot)
        self.check_traceable()

    def _build(self, snapshot: NodeSnapshot) -> PodIndex:
        # Without an API, pod sandboxes are only "unknown pods", and only worth
        # naming so when the user asked for a pod: then we trace them all.
        pods = self._pods
        if pods is None and not self.selection.active:
            pods = []
        return PodIndex(snapshot, pods, self.node_name, self.ids, self.selection)

    # -- what the CLI needs to know before tracing --
    @property
    def attributing(self) -> bool:
        return self._client is not None or self.selection.active

    def check_traceable(self) -> None:
        """A hostNetwork pod is told apart from the node only by a port it alone declares."""
        if self.index is None:
            return
        lost = [p for p in self.index.untraceable if self.selection.matches(p)]
        if lost and self.selection.name:
            raise UserError(f"{lost[0].key} uses hostNetwork and declares no port of its own: its drops cannot "
                            f"be told apart from the node's; watch the node's namespace instead")
        if lost:
            self.warn(f"pods: {', '.join(p.key for p in lost)} use hostNetwork without a port of their own: "
                      f"their drops cannot be told apart from the node's and are left out")

    def describe(self) -> str:
        idx = self.index
        if idx is None:
            return f"no Kubernetes API ({self.problem}): drops are not attributed to pods"
        if self.kube is None:
            if self.selection.active:
                return (f"no Kubernetes API ({self.problem}); {self.selection.describe()} cannot be told apart: "
                        f"showing all {len(idx.selected)} pod sandboxes of this node as unknown pods")
            return f"no Kubernetes API yet ({self.problem}): drops are attributed once it answers"
        text = f"{len(idx.by_netns)} pods on node {self.node_name}"
        if self.selection.active:
            names = [r.label for r in idx.selected_refs()]
            text += f"; watching {self.selection.describe()}: " + (", ".join(names[:6]) or "none running here yet")
            if len(names) > 6:
                text += f" and {len(names) - 6} more"
        if self.problem:
            text += f"; API: {self.problem}"
        return text

    # -- background --
    def start(self) -> None:
        if not self.attributing:
            return
        if self.kube is not None:
            self._start_watch()
        elif self._client is not None:   # configured but not answering: keep asking
            self._spawn(self._reconnect, "netdrop-pods-reconnect")
        self._spawn(self._scan_loop, "netdrop-node-scan")

    def _spawn(self, target: Callable[..., None], name: str, args: tuple[Any, ...] = ()) -> None:
        t = threading.Thread(target=target, name=name, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _start_watch(self) -> None:
        if self.kube is None or self.node_name is None:
            return
        self._spawn(self.kube.watch_pods, "netdrop-pods-watch",
                    (self.node_name, None, self._on_pods, self._stop, self._on_api_error))

    def _reconnect(self) -> None:
        """The API was unreachable at start: once it answers, pods get their names."""
        client = self._client
        if client is None:
            return
        while not self._stop.wait(RECONNECT_SECONDS):
            try:
                snapshot_ips = set(self.index.snapshot.node_ips) if self.index is not None else set()
                node = client.node_name(self._node_arg, snapshot_ips)
                pods, _ = client.list_pods(node)
            except (KubeUnavailable, UserError):
                continue
            with self._lock:
                self.node_name, self._pods = node, pods
                self.kube, self.problem = client, None
            self.warn(f"pods: the Kubernetes API at {client.server} answers again: pods are named from now on")
            if self.selection.active and not any(self.selection.matches(p) for p in pods):
                self.warn(f"pods: {self.selection.describe()} is not on node {node}")
            self._start_watch()
            self._changed.set()
            return

    def _on_pods(self, pods: list[PodInfo]) -> None:
        with self._lock:
            self._pods = pods
        self._changed.set()
        events = self._events
        if events is not None:
            events.wake()

    def _on_api_error(self, message: str | None) -> None:
        if message and message != self.problem:
            self.warn(f"pods: {message}")
        self.problem = message

    def _scan_loop(self) -> None:
        try:
            events: NodeEvents | None = NodeEvents(self.scanner.node_path, self.scanner.run_dir)
        except OSError as exc:
            self.warn(f"pods: no notifications from the node's namespace ({exc}): scanning it every "
                      f"{FALLBACK_SECONDS:g} s instead")
            events = None
        self._events = events
        self.scanner.keep_open = True      # one node socket for every round; closed below
        try:
            self._follow(events)
        finally:
            self._events = None
            self.scanner.close()
            if events is not None:
                events.close()

    def _follow(self, events: NodeEvents | None) -> None:
        last_full = float("-inf")      # the first round scans all: what changed before events were heard
        while not self._stop.is_set():
            now = time.monotonic()
            if events is None:
                self._changed.wait(FALLBACK_SECONDS)
                changes, full = Changes(), True
            else:
                due = max(0.0, last_full + RESCAN_SECONDS - now)
                timeout = 0.0 if self._changed.is_set() else min(due, PENDING_POLL) if self.scanner.has_pending() \
                    else due
                if events.wait(timeout):
                    self._stop.wait(SETTLE_SECONDS)     # the rest of the burst
                changes = events.drain()
                full = changes.overflow or time.monotonic() >= last_full + RESCAN_SECONDS
            if self._stop.is_set():
                break
            pods_changed = self._changed.is_set()
            self._changed.clear()
            try:
                if full:
                    snapshot = self.scanner.scan(lost=changes.overflow or events is None)
                    last_full = time.monotonic()
                    if events is not None:
                        events.watch_names()        # /run/netns made since
                elif changes or self.scanner.has_pending():
                    snapshot = self.scanner.refresh(changes)
                else:
                    snapshot = self.scanner.table.snapshot()
            # A namespace vanishing mid-scan, netlink hiccups: next round. This thread must
            # outlive whatever a netlink read raises, or pods would silently stop being followed.
            except Exception as exc:  # noqa: BLE001
                self.warn(f"pods: node scan failed ({type(exc).__name__}: {exc})")
                last_full = time.monotonic() - RESCAN_SECONDS + FALLBACK_SECONDS   # a full scan soon
                continue
            if pods_changed or self.index is None or snapshot is not self.index.snapshot:
                with self._lock:
                    index = self._build(snapshot)
                self.index = index   # one reference swap: readers see the old or the new index whole

    def current(self) -> PodIndex | None:
        return self.index

    def pods(self) -> list[PodInfo] | None:
        """The API's pods of this node as last received (what the current index
        was built from); None while the API has not answered. The same list
        object until they change, so a caller may key a cache on its identity;
        not to be modified."""
        return self._pods

    def new_kernel_pods(self) -> KernelPods | None:
        """What the kernel's pod maps must hold now, when the index changed since
        the last call (None: unchanged, or no index yet). The caller writes them
        (pipeline/loaded.py, in the event loop's thread)."""
        index = self.index
        if index is None or index is self._applied:
            return None
        self._applied = index
        return index.kernel_pods()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        events = self._events
        if events is not None:
            events.wake()
        self.calls.close()      # the watch's read and any call in flight end now
        deadline = time.monotonic() + STOP_SECONDS
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
