"""attribute: which pod a drop belongs to, and in which direction.

The join of the API's pods (kube.PodInfo) with what the node knows
(nodeview.NodeSnapshot) is a PodIndex: an immutable value built in the
background and swapped in whole, so the event path only reads it. The
kernel does the per-drop work (bpf/netdrop.c tags each drop with a pod id
and direction from the maps kernel_pods() describes), so counts are exact
per pod; attribute() turns the tag back into a pod. Where the node cannot
tell, the answer is no pod, never a guess: a hostNetwork pod shares the
node's namespace and addresses, so it is named only by a port that it alone
declares, on a node address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..kernel.decode import Drop
from ..kernel.event import ND_DIR_FROM_POD, ND_DIR_IN_POD, ND_DIR_MASK, ND_DIR_TO_POD
from .kube import PodInfo, Selection
from .nodeview import NetnsInfo, NodeSnapshot

DIRECTIONS = {ND_DIR_IN_POD: "in-pod", ND_DIR_FROM_POD: "from-pod", ND_DIR_TO_POD: "to-pod"}
MAX_POD_ID = (1 << 30) - 1


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


@dataclass(frozen=True)
class KernelPods:
    """The contents of the pod maps of bpf/netdrop.c. Values: (tag, selected)."""

    node_netns: int
    netns: dict[int, tuple[int, bool]]
    veth: dict[tuple[int, int], tuple[int, bool]]     # (node netns, ifindex)
    ips: dict[str, tuple[int, bool]]
    hostports: dict[int, tuple[int, bool]]             # hostNetwork pods' own ports
    node_ips: frozenset[str]
    filter: bool                                       # keep only selected pods' drops


class PodIds:
    """Stable small ids for pods, for the whole run: a tag in flight still names
    its pod after the pod is gone. Unknown sandboxes are keyed by netns inode."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self.refs: dict[int, PodRef] = {}

    def id_for(self, key: str, ref: PodRef) -> int:
        pid = self._ids.get(key)
        if pid is None:
            pid = len(self._ids) + 1
            if pid > MAX_POD_ID:
                raise OverflowError("too many pods for the tag space")
            self._ids[key] = pid
        self.refs[pid] = ref
        return pid


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
        self.by_ip = self._peer_ips()             # pod address -> id, for the other end of a drop

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
            ref = PodRef(pod.namespace, pod.name, pod.uid, pod.node, sandbox=info.label, ips=pod.ips)
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
            ref = PodRef(pod.namespace, pod.name, pod.uid, pod.node, host_network=True, ips=pod.ips)
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
        return [self.ids.refs[p] for p in sorted(self.selected)]

    def attribute_tag(self, tag: int) -> Attribution:
        """The pod and direction a kernel tag (id << 2 | direction) stands for."""
        ref = self.ids.refs.get(tag >> 2) if tag else None
        return Attribution(ref, DIRECTIONS.get(tag & ND_DIR_MASK)) if ref is not None else NO_POD

    def attribute(self, drop: Drop) -> Attribution:
        """The drop's pod and direction from its kernel tag, and the pod at the
        other end of the packet (peer) from its addresses."""
        who = self.attribute_tag(drop.pod_raw)
        if who.pod is None or drop.src is None or drop.dst is None:
            return who
        pid = drop.pod_raw >> 2
        if who.direction == "from-pod":
            mine_is_src: bool | None = True
        elif who.direction == "to-pod":
            mine_is_src = False
        else:
            # In the pod's own namespace the tag says nothing of the ends: the
            # pod's end is the one with its address (a packet it sent, or one
            # it received).
            mine_is_src = self._own_end(pid, who.pod, drop.src, drop.dst)
        if mine_is_src is None:
            return who
        mine, theirs = (drop.src, drop.dst) if mine_is_src else (drop.dst, drop.src)
        other = self.by_ip.get(theirs)
        if other is None or other == pid or self.by_ip.get(mine, pid) != pid:
            # No pod there, the pod itself, or the pod's own end carries another
            # pod's address (tagged by its veth, a spoofed source): no guess.
            return who
        peer, peer_dir = self.ids.refs[other], "to-pod" if mine_is_src else "from-pod"
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
