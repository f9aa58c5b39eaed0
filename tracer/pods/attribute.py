"""attribute: which pod a drop belongs to, and in which direction.

The join of the API's pods (kube.PodInfo) with what the node knows
(node.table.NodeSnapshot) is a PodIndex: an immutable value built in the
background and swapped in whole, so the event path only reads it. The
kernel does the per-drop work (bpf/netdrop.c tags each drop with a pod id
and direction from the maps kernel_pods() describes), so counts are exact
per pod; attribute() turns the tag back into a pod. Where the node cannot
tell, the answer is no pod, never a guess: a hostNetwork pod shares the
node's namespace and addresses, so it is named only by a port that it alone
declares, on a node address.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..kernel.decode import Drop
from ..kernel.event import ND_DIR_FROM_POD, ND_DIR_IN_POD, ND_DIR_MASK, ND_DIR_TO_POD
from ..kernel.filters import KernelPods
from .kube import Selection
from .objects import PodInfo
from ..node.table import NetnsInfo, NodeSnapshot
from .workload import workload_of

DIRECTIONS = {ND_DIR_IN_POD: "in-pod", ND_DIR_FROM_POD: "from-pod", ND_DIR_TO_POD: "to-pod"}
MAX_POD_ID = (1 << 30) - 1
# A gone pod's ref is kept this long (an event or counter key carrying its tag
# is read within a tick or a scrape: seconds), and for at most this many gone
# pods (4,096 refs with their keys: about 3.5 MiB, measured), see PodIds.
GONE_SECONDS = 600.0
GONE_MAX = 4096
MEMO_MAX = 8192     # PodIndex.attribute's remembered answers (about 2 MiB at most)


@dataclass(frozen=True)
class PodRef:
    """A pod as drops name it. known=False: a pod sandbox the node has but the
    API was not there to name (then only `sandbox` and `ips` are set)."""

    namespace: str | None
    name: str | None
    uid: str | None
    node: str | None
    host_network: bool = False
    known: bool = True
    sandbox: str | None = None
    ips: tuple[str, ...] = ()
    workload: str | None = None    # its controller's name (workload.workload_of): how a console shortens it

    @property
    def label(self) -> str:
        if not self.known:
            return f"unknown pod ({self.sandbox}{', ' + self.ips[0] if self.ips else ''})"
        return f"{self.namespace}/{self.name}" + (" (hostNetwork)" if self.host_network else "")

    def to_json(self) -> dict[str, Any] | None:
        if not self.known:
            return None
        out: dict[str, Any] = {"namespace": self.namespace, "name": self.name, "uid": self.uid, "node": self.node}
        if self.host_network:
            out["hostNetwork"] = True
        return out


@dataclass(frozen=True)
class Attribution:
    pod: PodRef | None
    direction: str | None
    # The pod at the other end of the packet (by its address), when that is a
    # pod too: "web -> db". None when the other end is no pod the index knows.
    # peer_direction says which end the peer is, in the words of `direction`:
    # "from-pod" when the packet came from the peer (it is the source),
    # "to-pod" when it was going to the peer (it is the destination).
    peer: PodRef | None = None
    peer_direction: str | None = None


NO_POD = Attribution(None, None)


class PodIds:
    """Small ids for pods, part of the kernel's pod tag and so of its counter keys.

    An id is never handed out twice in a run. The kernel's counter map never
    deletes a key while netdrop runs (loader.Tracer only ever reads it;
    sinks/metrics.py relies on that too), so any id once used may sit in a
    counter key until the end: a reused id would add one pod's drops to
    another's group and series. Ids count up instead; the 2**30 of the tag
    (bpf/netdrop.h: id << 2 | direction in a u32) last 3.4 years of ten new
    pods a second, every second.

    A gone pod's PodRef is kept a while, so a tag in flight (an event in the
    ring buffer, a counter key first read on the next tick or scrape) still
    names its pod: at least GONE_SECONDS after the pod left the index, unless
    more than GONE_MAX pods went meanwhile (then the oldest gone are forgotten
    first). Then its key and ref are dropped: memory is bounded by the pods
    the node has plus GONE_MAX, whatever the churn. A pod that comes back
    while still remembered (same uid; an unknown sandbox: same namespace inode)
    gets its id back; forgotten, it gets a new one. Readers on the event path
    use refs.get() (one dict operation, atomic under the GIL) while the
    background thread adds and forgets."""

    def __init__(self, gone_seconds: float = GONE_SECONDS, gone_max: int = GONE_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ids: dict[str, int] = {}                  # pod key -> id, pods live and remembered
        self._keys: dict[int, str] = {}                 # id -> pod key
        self.refs: dict[int, PodRef] = {}
        self._gone: dict[int, float] = {}               # id -> since when gone, oldest first
        self._live: set[int] = set()                    # ids of the last index settled
        self._building: set[int] = set()                # ids handed out since
        self._next = 1
        self.gone_seconds, self.gone_max, self._clock = gone_seconds, gone_max, clock

    def id_for(self, key: str, ref: PodRef) -> int:
        pid = self._ids.get(key)
        if pid is None:
            pid = self._next
            if pid > MAX_POD_ID:
                raise OverflowError("pod ids exhausted: over 2**30 pods in one run; restart netdrop")
            self._next += 1
            self._ids[key] = pid
            self._keys[pid] = key
        self.refs[pid] = ref
        self._building.add(pid)
        return pid

    def settle(self) -> None:
        """After an index is built (one builder at a time): the ids id_for() gave
        since the last settle are the live ones; the others are gone from now on
        (if not already), and those gone too long, or beyond GONE_MAX, forgotten."""
        live, self._building = self._building, set()
        now = self._clock()
        for pid in live - self._live:       # new, or back while remembered
            self._gone.pop(pid, None)
        for pid in self._live - live:       # left just now
            self._gone[pid] = now
        self._live = live
        while self._gone:
            pid, since = next(iter(self._gone.items()))
            if now - since < self.gone_seconds and len(self._gone) <= self.gone_max:
                break
            del self._gone[pid]
            del self._ids[self._keys.pop(pid)]
            del self.refs[pid]

    @property
    def gone(self) -> int:
        """Gone pods still remembered."""
        return len(self._gone)


class PodIndex:
    def __init__(self, snapshot: NodeSnapshot, pods: list[PodInfo] | None, node_name: str | None,
                 ids: PodIds, selection: Selection = Selection()):
        """pods=None: no API; the node's pod sandboxes become unknown pods."""
        self.snapshot = snapshot
        self.node_name = node_name
        self.api = pods is not None
        self.selection = selection
        self.ids = ids
        self.by_netns: dict[int, int] = {}
        self.veths: dict[int, tuple[int, NetnsInfo]] = {}
        self.selected: set[int] = set()
        self.ambiguous: list[PodInfo] = []        # API pods whose IPs sit in several sandboxes
        self.host_network: list[PodInfo] = []
        self.hostports: dict[int, int] = {}       # port -> id of the one hostNetwork pod declaring it
        self.untraceable: list[PodInfo] = []      # hostNetwork pods with no port of their own
        self.missing: list[PodInfo] = []          # API pods whose sandbox the node does not show
        if pods is None:
            self._unknown_sandboxes()
        else:
            self._join(pods)
        ids.settle()
        self.by_ip = self._peer_ips()             # pod address -> id, for the other end of a drop
        # attribute()'s answers by (tag, src, dst): what it reads (this index, the
        # ids' refs of its pods) is fixed for the index's life, and a storm is a
        # few flows repeated. Emptied when full: bounded, and a new index starts afresh.
        self._memo: dict[tuple[int, str | None, str | None], Attribution] = {}

    def _join(self, pods: list[PodInfo]) -> None:
        by_ip: dict[str, list[NetnsInfo]] = {}
        for info in self.snapshot.pod_like():
            for ip in info.ips:
                by_ip.setdefault(ip, []).append(info)
        for pod in pods:
            if pod.phase in ("Succeeded", "Failed"):
                continue
            if pod.host_network:
                self.host_network.append(pod)
                continue
            spaces = {n.inode: n for ip in pod.ips for n in by_ip.get(ip, [])}
            if len(spaces) != 1:
                (self.ambiguous if spaces else self.missing).append(pod)
                continue
            info = next(iter(spaces.values()))
            if info.host_veth is None:    # pod_like() namespaces have one
                continue
            ref = PodRef(pod.namespace, pod.name, pod.uid, pod.node, sandbox=info.label, ips=pod.ips,
                         workload=workload_of(pod).name)
            pid = self.ids.id_for(f"uid:{pod.uid}", ref)
            self.by_netns[info.inode] = pid
            self.veths[pid] = (info.host_veth.ifindex, info)
            if self.selection.matches(pod):
                self.selected.add(pid)
        self._host_network_ports()

    def _host_network_ports(self) -> None:
        owners: dict[int, list[PodInfo]] = {}
        for pod in self.host_network:
            for port in pod.ports:
                owners.setdefault(port, []).append(pod)
        for pod in self.host_network:
            own = [port for port in pod.ports if len(owners[port]) == 1]
            if not own:
                self.untraceable.append(pod)
                continue
            ref = PodRef(pod.namespace, pod.name, pod.uid, pod.node, host_network=True, ips=pod.ips,
                         workload=workload_of(pod).name)
            pid = self.ids.id_for(f"uid:{pod.uid}", ref)
            for port in own:
                self.hostports[port] = pid
            if self.selection.matches(pod):
                self.selected.add(pid)

    def _unknown_sandboxes(self) -> None:
        for info in self.snapshot.pod_like():
            if info.host_veth is None:    # pod_like() namespaces have one
                continue
            ref = PodRef(None, None, None, self.node_name, known=False, sandbox=info.label, ips=info.ips)
            pid = self.ids.id_for(f"netns:{info.inode}", ref)
            self.by_netns[info.inode] = pid
            self.veths[pid] = (info.host_veth.ifindex, info)
            self.selected.add(pid)   # the user's pod is one of them; we cannot say which

    def _peer_ips(self) -> dict[str, int]:
        """The addresses that name exactly one pod of this index: those of its pod
        sandboxes, less any address two sandboxes claim (a stale twin) and the
        node's own (hostNetwork pods share them: no pod is named by one)."""
        claims: dict[str, int] = {}
        for info in self.snapshot.pod_like():
            for ip in info.ips:
                claims[ip] = claims.get(ip, 0) + 1
        node_ips = set(self.snapshot.node_ips)
        out: dict[str, int] = {}
        for pid in self.by_netns.values():
            for ip in self.veths[pid][1].ips:
                if claims.get(ip) == 1 and ip not in node_ips:
                    out[ip] = pid
        return out

    def kernel_pods(self) -> KernelPods:
        netns, veth, ips = {}, {}, {}
        for inode, pid in self.by_netns.items():
            val = (pid << 2, pid in self.selected)
            netns[inode] = val
            ifindex, info = self.veths[pid]
            veth[(self.snapshot.node_netns, ifindex)] = val
            for ip in info.ips:
                ips[ip] = val
        hostports = {port: (pid << 2, pid in self.selected) for port, pid in self.hostports.items()}
        return KernelPods(self.snapshot.node_netns, netns, veth, ips, hostports,
                          frozenset(self.snapshot.node_ips) if hostports else frozenset(),
                          filter=self.selection.active)

    def selected_refs(self) -> list[PodRef]:
        refs = self.ids.refs
        return [r for p in sorted(self.selected) if (r := refs.get(p)) is not None]

    def attribute_tag(self, tag: int) -> Attribution:
        """The pod and direction a kernel tag (id << 2 | direction) stands for."""
        ref = self.ids.refs.get(tag >> 2) if tag else None
        return Attribution(ref, DIRECTIONS.get(tag & ND_DIR_MASK)) if ref is not None else NO_POD

    def attribute(self, drop: Drop) -> Attribution:
        """The drop's pod and direction from its kernel tag, and the pod at the
        other end of the packet (peer) from its addresses. Runs per event."""
        tag = drop.pod_raw
        if not tag:
            return NO_POD
        key = (tag, drop.src, drop.dst)
        got = self._memo.get(key)
        if got is None:
            got = self._attribute(tag, drop.src, drop.dst)
            if len(self._memo) >= MEMO_MAX:
                self._memo.clear()
            self._memo[key] = got
        return got

    def _attribute(self, tag: int, src: str | None, dst: str | None) -> Attribution:
        who = self.attribute_tag(tag)
        if who.pod is None or src is None or dst is None:
            return who
        pid = tag >> 2
        if who.direction == "from-pod":
            mine_is_src: bool | None = True
        elif who.direction == "to-pod":
            mine_is_src = False
        else:
            # In the pod's own namespace the tag says nothing of the ends: the
            # pod's end is the one with its address (a packet it sent, or one
            # it received).
            mine_is_src = self._own_end(pid, who.pod, src, dst)
        if mine_is_src is None:
            return who
        mine, theirs = (src, dst) if mine_is_src else (dst, src)
        other = self.by_ip.get(theirs)
        if other is None or other == pid or self.by_ip.get(mine, pid) != pid:
            # No pod there, the pod itself, or the pod's own end carries another
            # pod's address (tagged by its veth, a spoofed source): no guess.
            return who
        peer, peer_dir = self.ids.refs.get(other), "to-pod" if mine_is_src else "from-pod"
        if peer is None:    # gone and forgotten since this index was built (PodIds)
            return who
        if self.selection.active and pid not in self.selected and other in self.selected:
            # The kernel tags the selected end when a filter is on (node_pod() in
            # bpf/netdrop.c passes over unselected candidates); a tag from maps
            # one index older may still name the other: the user's pod is `pod`.
            return Attribution(peer, peer_dir, who.pod, "from-pod" if mine_is_src else "to-pod")
        return Attribution(who.pod, who.direction, peer, peer_dir)

    def _own_end(self, pid: int, ref: PodRef, src: str, dst: str) -> bool | None:
        """True if src is the pod's address, False if dst is, None if both or neither are."""
        src_mine = self.by_ip.get(src) == pid or src in ref.ips
        dst_mine = self.by_ip.get(dst) == pid or dst in ref.ips
        return src_mine if src_mine != dst_mine else None
