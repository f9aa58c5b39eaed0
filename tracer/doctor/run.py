"""run: doctor from the command's few values to its findings, every check in order.

The node's namespaces are scanned once and the API asked once (each group of
calls within START_SECONDS, as at start): doctor answers in seconds whatever
the API does. Without the API, the checks that compare with it say so.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..env import TRACEFS_CANDIDATES
from ..errors import UserError
from ..node.namespaces import HOST_NETNS
from ..node.scan import NodeScanner
from ..pods.apicall import KubeUnavailable
from ..pods.kube import START_SECONDS, Selection
from ..pods.source import PodSource
from .findings import Finding, problems
from .forwarding import check_conntrack, check_forward, check_kube_proxy, check_sysctls
from .kernel import attach_findings, check_cgroup_programs, check_kernel
from .links import (check_addresses, check_bridges, check_hairpin, check_ipsec, check_mtu, check_neighbours,
                    check_overlay, flannel_vnis)
from .node import Node
from .pods import NO_API, ApiFacts, check_ipam, check_pod_ipv6, check_pod_routes

if TYPE_CHECKING:
    from ..node.table import NetnsInfo, NodeSnapshot


@dataclass(frozen=True)
class Scope:
    """What doctor is asked to look at."""

    netns: str                          # the node's namespace file; HOST_NETNS: the one netdrop runs in
    label: str                          # the node as the report names it
    pod: str | None = None              # only this pod's sandbox (found through the API)
    namespace: str = "default"          # the pod's namespace
    kubeconfig: str | None = None
    node_name: str | None = None        # this node's Kubernetes name
    cni_dir: Path = Path("/var/lib/cni/networks")
    tracefs: tuple[Path, ...] = TRACEFS_CANDIDATES


@dataclass(frozen=True)
class Report:
    node: Node
    findings: list[Finding]

    @property
    def problems(self) -> list[Finding]:
        return problems(self.findings)


def diagnose(scope: Scope, warn: Callable[[str], None]) -> Report:
    """Every check of the node in scope; UserError if --pod names no sandbox here."""
    snapshot = NodeScanner(scope.netns).scan()
    sandboxes = snapshot.pod_like()
    live = {ip for pod in sandboxes for ip in pod.ips}
    source = None
    if scope.pod or scope.kubeconfig:
        source = PodSource(Selection(name=scope.pod, namespace=scope.namespace), scope.kubeconfig, scope.node_name,
                           scope.netns, warn=warn)
    pods, names = _pods(scope, snapshot, sandboxes, source)
    node = Node(None if scope.netns == HOST_NETNS else scope.netns, scope.label, pods, names, scope.cni_dir)
    findings = run_all(node, live, api=_api_facts(source), tracefs=scope.tracefs)
    findings += attach_findings(scope.tracefs)
    cidrs, this_node = None, None
    if source is not None and source.kube is not None:
        with suppress(KubeUnavailable), source.kube.within(START_SECONDS):
            cidrs, this_node = source.kube.pod_cidrs(), source.node_name
            # The VNI other nodes' CNI announces against this node's VXLAN devices:
            # a mismatch drops all overlay traffic between them (VXLAN_VNI_NOT_FOUND).
            others = {n: v for n, v in flannel_vnis(source.kube.node_objects()).items() if n != this_node}
            if others:
                findings = [f for f in findings if f.check != "overlay"] + check_overlay(node, others)
    findings += check_pod_routes(node, cidrs, this_node)
    return Report(node, findings)


def _pods(scope: Scope, snapshot: NodeSnapshot, sandboxes: list[NetnsInfo],
          source: PodSource | None) -> tuple[list[NetnsInfo], dict[int, str]]:
    """The sandboxes the checks look into (with --pod, that pod's only) and the
    pod name of each the API knows: where it answers, the sandboxes it names."""
    idx = source.index if source is not None else None
    if source is None or idx is None:
        return sandboxes, {}
    names = {inode: idx.ids.refs[pid].label for inode, pid in idx.by_netns.items()}
    if not scope.pod:
        return ([p for p in sandboxes if p.inode in names] if names else sandboxes), names
    if source.kube is None:
        raise UserError(f"--pod needs the Kubernetes API to find {scope.pod}: {source.problem}")
    pods = [snapshot.namespaces[i] for i, pid in idx.by_netns.items() if pid in idx.selected]
    if not pods:
        raise UserError(f"pod {scope.namespace}/{scope.pod} has no sandbox on this node yet")
    return pods, names


def _api_facts(source: PodSource | None) -> ApiFacts:
    """The Services (which pods a dual-stack one sends IPv6) and the API's pod of
    each sandbox: without them the IPv6 check falls back to the node's view."""
    if source is None:
        return ApiFacts(unread="no Kubernetes API: pass --kubeconfig")
    if source.kube is None or source.index is None:
        return ApiFacts(unread=source.problem or "no Kubernetes API")
    idx, by_uid = source.index, {p.uid: p for p in source.pods() or []}
    pod_infos = {inode: by_uid[ref.uid] for inode, pid in idx.by_netns.items()
                 if (ref := idx.ids.refs.get(pid)) is not None and ref.uid in by_uid}
    try:
        with source.kube.within(START_SECONDS):
            return ApiFacts(tuple(source.kube.list_services()), pod_infos)
    except KubeUnavailable as exc:
        return ApiFacts(None, pod_infos, str(exc))


def run_all(node: Node, live_ips: set[str], *, api: ApiFacts = NO_API,
            tracefs: tuple[Path, ...] = TRACEFS_CANDIDATES) -> list[Finding]:
    """Every node check; `api`: what the Kubernetes API said (Services, the pods
    of the sandboxes), for the checks that compare it with the node; `tracefs`:
    where tracefs may be mounted, in order."""
    findings = check_kernel(tracefs)
    for check in (check_sysctls, check_forward, check_mtu, check_conntrack, check_kube_proxy, check_hairpin,
                  check_addresses, check_neighbours, check_bridges, check_overlay,
                  functools.partial(check_pod_ipv6, api=api), check_ipsec, check_cgroup_programs):
        try:
            findings += check(node)
        # A check that cannot look says so and the others still run: doctor is run during
        # incidents, on node text nothing vouches for, and one surprise must not cost every answer.
        except Exception as exc:  # noqa: BLE001
            name = str(getattr(getattr(check, "func", check), "__name__", "check"))
            findings.append(Finding(name.removeprefix("check_"), "unchecked",
                                    f"could not check: {type(exc).__name__}: {exc}"))
    findings += check_ipam(node, live_ips)
    return findings
