"""kube: the pods of this node, from the Kubernetes API through the official client.

Nothing here touches the kernel. KubeUnavailable means "no API to ask"
(nothing configured, or unreachable): callers fall back to what the node
itself knows and show pods as unknown. UserError means the user asked for
something the API says is wrong (an unknown pod, a pod on another node).
"""

from __future__ import annotations

import difflib
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import UserError

# Where a node keeps credentials, after --kubeconfig, $KUBECONFIG and ~/.kube/config.
NODE_KUBECONFIGS = (Path("/etc/kubernetes/kubelet.conf"), Path("/etc/kubernetes/admin.conf"))
REQUEST_TIMEOUT = (3.0, 10.0)   # connect, read: an unreachable API must not hang the start
WATCH_SECONDS = 30              # server-side watch length; the client reconnects after it


class KubeUnavailable(Exception):
    """No Kubernetes API to ask; the message says why."""


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    node: str | None
    ips: tuple[str, ...]
    host_network: bool
    ports: tuple[int, ...]            # declared containerPort/hostPort numbers
    labels: tuple[tuple[str, str], ...]
    phase: str | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def pod_info(obj) -> PodInfo:
    """From a V1Pod (the client's model) or the same object as a dict."""
    def get(o, key):
        if isinstance(o, dict):
            return o.get(key)
        # Client models name attributes after the JSON keys in attribute_map (podIPs -> pod_ips).
        attr = next((a for a, k in type(o).attribute_map.items() if k == key), key)
        return getattr(o, attr, None)

    meta, spec, status = get(obj, "metadata") or {}, get(obj, "spec") or {}, get(obj, "status") or {}
    ips = [get(p, "ip") for p in (get(status, "podIPs") or [])] or [get(status, "podIP")]
    ports = set()
    for c in get(spec, "containers") or []:
        for p in get(c, "ports") or []:
            for k in ("containerPort", "hostPort"):
                if get(p, k):
                    ports.add(int(get(p, k)))
    return PodInfo(
        namespace=get(meta, "namespace"), name=get(meta, "name"), uid=get(meta, "uid"),
        node=get(spec, "nodeName"), ips=tuple(ip for ip in ips if ip),
        host_network=bool(get(spec, "hostNetwork")), ports=tuple(sorted(ports)),
        labels=tuple(sorted((get(meta, "labels") or {}).items())), phase=get(status, "phase"),
    )


def parse_selector(text: str) -> list[tuple[str, str, str | None]]:
    """-l 'app=web,tier!=db,canary' -> [(key, op, value)], op in =, !=, exists, !exists."""
    terms = []
    for raw in filter(None, (t.strip() for t in text.split(","))):
        if "!=" in raw:
            k, v = raw.split("!=", 1)
            terms.append((k.strip(), "!=", v.strip()))
        elif "=" in raw:
            k, v = raw.replace("==", "=").split("=", 1)
            terms.append((k.strip(), "=", v.strip()))
        elif raw.startswith("!"):
            terms.append((raw[1:].strip(), "!exists", None))
        else:
            terms.append((raw, "exists", None))
    if not terms or any(not k for k, _, _ in terms):
        raise UserError(f"not a label selector: {text!r} (example: app=web,tier!=db)")
    return terms


@dataclass(frozen=True)
class Selection:
    """Which pods the user asked for: --pod NAME [-n NS], -l SELECTOR, -A."""

    name: str | None = None
    namespace: str = "default"
    selector: str | None = None
    all_namespaces: bool = False

    @property
    def active(self) -> bool:
        return bool(self.name or self.selector or self.all_namespaces)

    def matches(self, pod: PodInfo) -> bool:
        if not self.all_namespaces and pod.namespace != self.namespace:
            return False
        if self.name and pod.name != self.name:
            return False
        if self.selector:
            labels = dict(pod.labels)
            for k, op, v in parse_selector(self.selector):
                if (op == "=" and labels.get(k) != v) or (op == "!=" and labels.get(k) == v) \
                        or (op == "exists" and k not in labels) or (op == "!exists" and k in labels):
                    return False
        return True

    def describe(self) -> str:
        if self.name:
            return f"pod {self.namespace}/{self.name}"
        where = "all namespaces" if self.all_namespaces else f"namespace {self.namespace}"
        return f"pods {self.selector} in {where}" if self.selector else f"pods in {where}"


class KubeClient:
    def __init__(self, kubeconfig: str | None = None):
        try:
            from kubernetes import client, config
        except ImportError:
            raise KubeUnavailable("the kubernetes Python client is not installed") from None
        self._client_mod = client
        self.source = self._load(config, kubeconfig)
        self.v1 = client.CoreV1Api()

    @staticmethod
    def _load(config, explicit: str | None) -> str:
        if explicit:
            if not Path(explicit).is_file():
                raise UserError(f"kubeconfig {explicit} does not exist")
            config.load_kube_config(config_file=explicit)
            return explicit
        candidates = [Path(p) for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        candidates += [Path.home() / ".kube" / "config", *NODE_KUBECONFIGS]
        for path in candidates:
            if path.is_file():
                try:
                    config.load_kube_config(config_file=str(path))
                except Exception as exc:  # the client raises ConfigException and others
                    raise KubeUnavailable(f"cannot use kubeconfig {path}: {exc}") from None
                return str(path)
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            return "in-cluster service account"
        raise KubeUnavailable("no kubeconfig found (--kubeconfig, $KUBECONFIG, ~/.kube/config, "
                              "/etc/kubernetes/kubelet.conf) and not running in a cluster")

    def _call(self, fn, *args, **kw):
        """One API call with a timeout; unreachable -> KubeUnavailable; 404 -> None."""
        ApiException = self._client_mod.exceptions.ApiException
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kw)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeUnavailable(f"the API server at {self.server} answered {exc.status} {exc.reason}") from None
        except Exception as exc:  # urllib3 connection errors, timeouts
            raise KubeUnavailable(f"cannot reach the API server at {self.server}: {type(exc).__name__}") from None

    @property
    def server(self) -> str:
        return self._client_mod.Configuration.get_default_copy().host

    def node_name(self, explicit: str | None, local_ips: set[str]) -> str:
        """--node, else the kubelet's default name (the hostname), else the Node
        whose addresses are this node's."""
        if explicit:
            if self._call(self.v1.read_node, explicit) is None:
                raise UserError(f"node {explicit} is not known to the API server")
            return explicit
        host = socket.gethostname().lower()
        if self._call(self.v1.read_node, host) is not None:
            return host
        nodes = self._call(self.v1.list_node)
        for node in nodes.items if nodes else []:
            addrs = {a.address for a in (node.status.addresses or [])}
            if addrs & local_ips:
                return node.metadata.name
        raise UserError(f"cannot tell which Kubernetes node this is (hostname {host} is not a node name and "
                        "no node has this machine's addresses): pass --node NAME")

    def pod_cidrs(self) -> dict[str, list[str]]:
        """Node name -> its pod CIDRs (spec.podCIDRs), for routes between nodes."""
        nodes = self._call(self.v1.list_node)
        out = {}
        for n in nodes.items if nodes else []:
            cidrs = n.spec.pod_cidrs or ([n.spec.pod_cidr] if n.spec.pod_cidr else [])
            out[n.metadata.name] = list(cidrs)
        return out

    def list_pods(self, node: str, label_selector: str | None = None) -> tuple[list[PodInfo], str]:
        kw = {"field_selector": f"spec.nodeName={node}"}
        if label_selector:
            kw["label_selector"] = label_selector
        res = self._call(self.v1.list_pod_for_all_namespaces, **kw)
        return [pod_info(p) for p in res.items], res.metadata.resource_version

    def find_pod(self, namespace: str, name: str) -> PodInfo | None:
        pod = self._call(self.v1.read_namespaced_pod, name, namespace)
        return pod_info(pod) if pod is not None else None

    def pod_names(self, namespace: str) -> list[str]:
        res = self._call(self.v1.list_namespaced_pod, namespace)
        return [p.metadata.name for p in res.items] if res else []

    def watch_pods(self, node: str, label_selector: str | None, on_change: Callable[[list[PodInfo]], None],
                   stop: threading.Event, on_error: Callable[[str | None], None] = lambda msg: None) -> None:
        """List, then follow changes until stop; calls on_change with the whole
        current list after every change. Reconnects (and relists) on errors."""
        from kubernetes import watch

        while not stop.is_set():
            try:
                pods, rv = self.list_pods(node, label_selector)
                current = {p.uid: p for p in pods}
                on_change(list(current.values()))
                on_error(None)
                kw = {"field_selector": f"spec.nodeName={node}", "resource_version": rv,
                      "timeout_seconds": WATCH_SECONDS, "_request_timeout": (REQUEST_TIMEOUT[0], WATCH_SECONDS + 10)}
                if label_selector:
                    kw["label_selector"] = label_selector
                w = watch.Watch()
                for ev in w.stream(self.v1.list_pod_for_all_namespaces, **kw):
                    if stop.is_set():
                        w.stop()
                        break
                    pod = pod_info(ev["object"])
                    if ev["type"] == "DELETED":
                        current.pop(pod.uid, None)
                    else:
                        current[pod.uid] = pod
                    on_change(list(current.values()))
            except KubeUnavailable as exc:
                on_error(str(exc))
                stop.wait(1.0)
            except Exception as exc:  # watch errors (410 Gone, resets): relist
                on_error(f"pod watch interrupted ({type(exc).__name__}); relisting")
                stop.wait(0.5)


def check_selection(kube: KubeClient, node: str, sel: Selection, pods: list[PodInfo]) -> list[PodInfo]:
    """The pods on this node that the user asked for, or a UserError that says what is wrong."""
    chosen = [p for p in pods if sel.matches(p)]
    if chosen or not sel.name:
        return chosen
    elsewhere = kube.find_pod(sel.namespace, sel.name)
    if elsewhere is not None:
        if elsewhere.node:
            raise UserError(f"pod {sel.namespace}/{sel.name} runs on node {elsewhere.node}, not on {node}: "
                            f"run netdrop there")
        raise UserError(f"pod {sel.namespace}/{sel.name} is not scheduled to a node yet")
    names = set(kube.pod_names(sel.namespace)) | {p.name for p in pods if p.namespace == sel.namespace}
    # Typing the Deployment's name for its pod is the usual slip: offer prefixes first.
    close = [n for n in sorted(names) if n.startswith(sel.name)][:3]
    close += [n for n in difflib.get_close_matches(sel.name, sorted(names), n=3, cutoff=0.5) if n not in close]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UserError(f"no pod {sel.name} in namespace {sel.namespace}{hint}")

