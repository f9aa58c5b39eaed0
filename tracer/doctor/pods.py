"""pods: what pods need of the node, and of the API's view of it: IPAM reservations of live
pods only, IPv6 where dual-stack Services send it, a route to every other node's pod CIDR."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..explain import evidence
from ..node.nsexec import read_in_netns
from ..pods.objects import DUAL_STACK_POLICIES
from .findings import Cmd, Finding, fix, plural
from .node import Node, pod_label, read_small

if TYPE_CHECKING:
    from ..pods.objects import PodInfo, ServiceInfo


@dataclass(frozen=True)
class ApiFacts:
    """What the Kubernetes API said, for the checks that compare it with the node."""

    services: tuple[ServiceInfo, ...] | None = None     # None: not read; `unread` says why
    pods: dict[int, PodInfo] = field(default_factory=dict)   # the API's pod of each sandbox (netns inode)
    unread: str = "no Kubernetes API (--kubeconfig)"


NO_API = ApiFacts()
# A Kubernetes object name (DNS-1123 subdomain): only such a name goes into a command we print.
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
SHOWN_SERVICES = 3      # per pod in the evidence, the rest counted


def pods_ipv6_off(node: Node) -> dict[int, list[str]]:
    """Per pod sandbox (netns inode): its devices other than lo with disable_ipv6=1.
    ip6_rcv_core() drops IPv6 arriving on such a device (IPV6DISABLED)."""
    off = {}
    for info in node.pods:
        sysctls = evidence.parse_sysctls(read_in_netns(info.path, *evidence.SYSCTL_CMD))
        devs = sorted(dev for (dev, name), on in sysctls.items()
                      if name == "disable_ipv6" and on and dev not in ("lo", "all", "default"))
        if devs:
            off[info.inode] = devs
    return off


def check_pod_ipv6(node: Node, api: ApiFacts = NO_API) -> list[Finding]:
    """IPv6 disabled in pods behind dual-stack Services (IPV6DISABLED)."""
    return pod_ipv6_findings(node, pods_ipv6_off(node), api)


def pod_ipv6_findings(node: Node, off: dict[int, list[str]], api: ApiFacts) -> list[Finding]:
    """The IPv6 check from what was read: `off` (pods_ipv6_off) and the API's
    Services and pods. A pod with IPv6 off is a problem where a Service sends it
    IPv6: kube-proxy DNATs the Service's IPv6 clusterIP to the pod's IPv6 address,
    and the pod's eth0 drops it. Without the Services, the node-level guess: some
    pod here has an IPv6 address, so IPv6 is in use."""
    labels = {info.inode: pod_label(node, info) for info in node.pods}
    lines = {inode: f"{labels.get(inode, inode)}: {', '.join(devs[:4])} disable_ipv6=1"
             for inode, devs in sorted(off.items(), key=lambda kv: str(labels.get(kv[0], kv[0])))}
    enable = "enable IPv6 in the pod (net.ipv6.conf.eth0.disable_ipv6=0: the pod's or the runtime's sysctls)"
    if api.services is None:
        unread = f"Services not read ({api.unread})"
        if not any(":" in ip for p in node.pods for ip in p.ips):
            return [Finding("pod ipv6", "ok", f"no pod has an IPv6 address: a single-stack node; {unread}")]
        if lines:
            return [Finding("pod ipv6", "warning", f"IPv6 is disabled in {plural(len(lines), 'pod')} of a "
                            "dual-stack node: IPv6 from dual-stack Services and peers is dropped there "
                            f"(IPV6DISABLED at ip6_rcv_core); {unread}: which Services reach them is unknown",
                            list(lines.values())[:10], f"{enable}, or make the Services that reach it SingleStack")]
        return [Finding("pod ipv6", "ok", f"IPv6 enabled in every pod ({plural(len(node.pods), 'pod')}); {unread}")]
    v6 = [s for s in api.services if s.ipv6]
    behind: dict[int, list[ServiceInfo]] = {}
    unknown = []
    for inode in lines:
        pod = api.pods.get(inode)
        if pod is None:
            unknown.append(inode)
        elif chosen := [s for s in v6 if s.selects(pod)]:
            behind[inode] = chosen
    counted = f"{plural(len(api.services), 'Service')} read, {len(v6)} with IPv6"
    if behind:
        evidence_lines = [f"{lines[inode]}; behind {_services_phrase(svcs)}" for inode, svcs in behind.items()]
        first = next(iter(behind.values()))[0]
        if first.primary_family == "IPv6":    # SingleStack keeps the primary family: IPv6 alone
            remedy = fix(f"{enable}: {first.key}'s primary family is IPv6, the pod must take IPv6")
        elif _K8S_NAME.fullmatch(first.namespace) and _K8S_NAME.fullmatch(first.name):
            remedy = fix(f"{enable}; or, if the Service needs no IPv6, make it SingleStack (it keeps its IPv4 "
                         "clusterIP): ", Cmd(f"kubectl -n {first.namespace} patch service {first.name} -p "
                                             """'{"spec":{"ipFamilyPolicy":"SingleStack"}}'"""))
        else:
            remedy = fix(f"{enable}; or, if the Service needs no IPv6, set its spec.ipFamilyPolicy to SingleStack")
        dual = all(s.ip_family_policy in DUAL_STACK_POLICIES for svcs in behind.values() for s in svcs)
        return [Finding("pod ipv6", "warning", f"IPv6 is disabled in {plural(len(behind), 'pod')} behind "
                        f"{'dual-stack' if dual else 'IPv6'} Services: the IPv6 the Services send them is dropped "
                        "there (IPV6DISABLED at ip6_rcv_core), "
                        f"and clients of the Services' IPv6 address time out ({counted})",
                        evidence_lines[:10], *remedy)]
    if lines:
        rest = [lines[i] + ("; not a pod the API names: its Services unknown" if i in unknown else
                            "; no IPv6 Service selects it") for i in lines]
        return [Finding("pod ipv6", "info", f"IPv6 is disabled in {plural(len(lines), 'pod')}, but no dual-stack "
                        f"Service selects {'it' if len(lines) == 1 else 'them'} ({counted}): only IPv6 sent to "
                        "their addresses directly is dropped (IPV6DISABLED)", rest[:10],
                        f"before making a Service that selects {'it' if len(lines) == 1 else 'them'} dual-stack: "
                        f"{enable}")]
    return [Finding("pod ipv6", "ok", f"IPv6 enabled in every pod ({plural(len(node.pods), 'pod')}; {counted})")]


def _services_phrase(services: list[ServiceInfo]) -> str:
    """'dual-stack Service default/db-svc (RequireDualStack)', several named, the rest counted."""
    dual = all(s.ip_family_policy in DUAL_STACK_POLICIES for s in services)
    kind = "dual-stack Service" if dual else "IPv6 Service"
    named = ", ".join(f"{s.key} ({s.ipv6})" for s in services[:SHOWN_SERVICES])
    more = f" and {len(services) - SHOWN_SERVICES} more" if len(services) > SHOWN_SERVICES else ""
    return f"{kind}{'s' if len(services) > 1 else ''} {named}{more}"


def check_ipam(node: Node, live_ips: set[str]) -> list[Finding]:
    if not node.cni_dir.is_dir():
        return [Finding("ipam", "unchecked", f"no host-local IPAM state at {node.cni_dir}")]
    out = []
    # The CNI's state directory: its entries are read, never followed or waited on.
    for net in sorted(p for p in _entries(node.cni_dir) if p.is_dir() and not p.is_symlink()):
        reserved = {}
        for f in _entries(net):
            try:
                ipaddress.ip_address(f.name)
            except ValueError:
                continue
            words = (read_small(f) or "").split()
            reserved[f.name] = words[0] if words else "?"
        stale = sorted(ip for ip in reserved if ip not in live_ips)
        held = [f"{net}: {len(reserved)} addresses reserved, {len(reserved) - len(stale)} in use by live pods"]
        if stale:
            held += [f"{ip} held by container {reserved[ip][:12]}" for ip in stale[:5]]
            out.append(Finding("ipam", "warning",
                               f"{len(stale)} of {len(reserved)} IPAM reservations in network {net.name} belong to "
                               "no live pod (dead sandboxes): new pods fail with 'no IP addresses available' once "
                               "the range runs out", held,
                               *fix("after checking the containers are gone: ",
                                    Cmd("rm " + " ".join(str(net / ip) for ip in stale[:5])))))
        else:
            out.append(Finding("ipam", "ok", f"network {net.name}: every reservation belongs to a live pod", held))
    return out or [Finding("ipam", "unchecked", f"no network directories in {node.cni_dir}")]


def _entries(d: Path) -> list[Path]:
    try:
        return list(d.iterdir())
    except OSError:
        return []


def check_pod_routes(node: Node, pod_cidrs: dict[str, list[str]] | None, this_node: str | None) -> list[Finding]:
    """A route to every other node's pod CIDR (the API's Node.spec.podCIDRs)."""
    if pod_cidrs is None:
        return [Finding("pod routes", "unchecked", "no Kubernetes API: other nodes' pod CIDRs unknown")]
    missing, fine, unreadable = [], [], []
    for name, cidrs in sorted(pod_cidrs.items()):
        if name == this_node:
            continue
        for cidr in cidrs:
            try:
                probe = str(next(iter(ipaddress.ip_network(cidr, strict=False).hosts())))
            except (ValueError, TypeError, StopIteration):
                unreadable.append(f"{name}: {str(cidr)[:60]!r} is not a CIDR")
                continue
            route = node.ip_json("route", "get", probe)
            if route and route[0].get("type", "unicast") == "unicast":
                fine.append(f"{name} {cidr} via {route[0].get('gateway', '-')} dev {route[0].get('dev')}")
            else:
                missing.append(f"{name} {cidr}")
    if missing:
        return [Finding("pod routes", "error", f"no route to the pod CIDR of {len(missing)} node"
                        f"{'s' if len(missing) > 1 else ''}: pods there are unreachable from here (IP_INNOROUTES "
                        "at ip_error)", missing,
                        *fix("check the CNI on this node (flannel/calico routes), e.g. ",
                             Cmd(f"ip route add {missing[0].split()[1]} via <that node's tunnel address>")))]
    if unreadable and not fine:
        return [Finding("pod routes", "unchecked", "the Node objects' pod CIDRs could not be read", unreadable)]
    return [Finding("pod routes", "ok", f"routes to {len(fine)} other nodes' pod CIDRs", fine + unreadable)]
