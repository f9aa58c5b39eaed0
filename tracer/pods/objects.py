"""objects: API objects (Pods, Services) become netdrop's own types here, and only here.

pod_info and service_info read the client's models or the same objects as
plain JSON; any field may be missing, null or of another type, and none makes
them raise. Every text value passes through apitext once (see its docstring):
what the rest of netdrop shows, counts and exports is never raw API text.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from . import apitext
from .apitext import DNS_LABEL, DNS_SUBDOMAIN, KIND, LABEL_KEY, LABEL_VALUE, TOKEN, UID, WORD


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
    # The controller owning the pod (metadata.ownerReferences with controller:
    # true), as (kind, name): e.g. ("ReplicaSet", "web-7d4b9c"). None: no controller.
    owner: tuple[str, str] | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def api_field(obj: Any, key: str) -> Any:
    """obj[key] of an API object, a client model (V1Pod, V1Node) or the same
    object as a dict; None when it is absent, null or obj is neither. API
    objects may lack any optional field: readers never raise on one."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    # Client models name attributes after the JSON keys in attribute_map (podIPs -> pod_ips).
    amap = getattr(type(obj), "attribute_map", None)
    if not isinstance(amap, dict):
        return None
    attr = next((a for a, k in amap.items() if k == key), key)
    return getattr(obj, attr, None)


def list_field(obj: Any, key: str) -> list[Any]:
    """A list field, [] when absent or not a list."""
    value = api_field(obj, key)
    return list(value) if isinstance(value, (list, tuple)) else []


def _labels(value: Any) -> tuple[tuple[str, str], ...]:
    """A label map; anything but text in it makes it none (a selector of it would select more)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return ()
    return tuple(sorted((apitext.safe(k, LABEL_KEY), apitext.safe(v, LABEL_VALUE)) for k, v in value.items()))


def pod_info(obj: Any) -> PodInfo:
    """From a V1Pod (the client's model) or the same object as a dict. Never
    raises: a pod without a field has none of what it would have said."""
    meta, spec, status = api_field(obj, "metadata"), api_field(obj, "spec"), api_field(obj, "status")
    ips = [apitext.ip(api_field(p, "ip")) for p in list_field(status, "podIPs")] or \
        [apitext.ip(api_field(status, "podIP"))]
    ports: set[int] = set()
    for c in list_field(spec, "containers"):
        for p in list_field(c, "ports"):
            for k in ("containerPort", "hostPort"):
                port = api_field(p, k)
                if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
                    ports.add(port)
    namespace = apitext.field(api_field(meta, "namespace"), DNS_LABEL) or ""
    name = apitext.field(api_field(meta, "name"), DNS_SUBDOMAIN) or ""
    return PodInfo(
        namespace=namespace, name=name,
        # Ids key pods for the whole run: a pod without a uid is keyed by its name.
        uid=apitext.field(api_field(meta, "uid"), UID) or f"{namespace}/{name}",
        node=apitext.field(api_field(spec, "nodeName"), DNS_SUBDOMAIN), ips=tuple(ip for ip in ips if ip),
        host_network=api_field(spec, "hostNetwork") is True, ports=tuple(sorted(ports)),
        labels=_labels(api_field(meta, "labels")),
        phase=apitext.field(api_field(status, "phase"), WORD),
        owner=_controller(meta),
    )


# Service.spec.ipFamilyPolicy values that give a Service both families (the API's
# IPFamilyPolicy; SingleStack is the default and the third value).
DUAL_STACK_POLICIES = ("PreferDualStack", "RequireDualStack")


@dataclass(frozen=True)
class ServiceInfo:
    """A Service: which pods it selects and whether it sends them IPv6."""

    namespace: str
    name: str
    selector: tuple[tuple[str, str], ...]     # spec.selector; () selects no pod by labels
    ip_family_policy: str | None
    ip_families: tuple[str, ...]              # spec.ipFamilies, primary first
    cluster_ips: tuple[str, ...]              # spec.clusterIPs (else clusterIP); "None" when headless

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ipv6(self) -> str | None:
        """Why it sends its pods IPv6 (kube-proxy DNATs its IPv6 clusterIP to the
        pods' IPv6 endpoints), in a few words; None for an IPv4-only Service."""
        if self.ip_family_policy in DUAL_STACK_POLICIES:
            return self.ip_family_policy
        if "IPv6" in self.ip_families:
            return f"ipFamilies {','.join(self.ip_families)}"
        v6 = next((ip for ip in self.cluster_ips if _is_ipv6(ip)), None)
        return f"clusterIP {v6}" if v6 else None

    @property
    def primary_family(self) -> str | None:
        """The family a SingleStack version of it keeps: ipFamilies[0], else its first clusterIP's."""
        if self.ip_families:
            return self.ip_families[0]
        ips = [ip for ip in self.cluster_ips if ip != "None"]
        return ("IPv6" if _is_ipv6(ips[0]) else "IPv4") if ips else None

    def selects(self, pod: PodInfo) -> bool:
        """The Service's endpoints include the pod (as the endpoint controller
        decides): same namespace, every key=value of its selector among the pod's
        labels. A Service without selector has endpoints someone else writes."""
        if not self.selector or pod.namespace != self.namespace:
            return False
        labels = dict(pod.labels)
        return all(labels.get(k) == v for k, v in self.selector)


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def service_info(obj: Any) -> ServiceInfo:
    """From a V1Service or the same object as a dict. Never raises: what a
    field does not say is absent. A selector with a value that is not text is
    read as none (selecting nothing): dropping the odd term would select more."""
    meta, spec = api_field(obj, "metadata"), api_field(obj, "spec")
    ips = [ip for ip in map(_cluster_ip, list_field(spec, "clusterIPs")) if ip] or \
        [ip for ip in [_cluster_ip(api_field(spec, "clusterIP"))] if ip]
    return ServiceInfo(
        namespace=apitext.field(api_field(meta, "namespace"), DNS_LABEL) or "",
        name=apitext.field(api_field(meta, "name"), DNS_LABEL) or "",
        selector=_labels(api_field(spec, "selector")),
        ip_family_policy=apitext.field(api_field(spec, "ipFamilyPolicy"), WORD),
        ip_families=tuple(f for f in (apitext.field(f, WORD) for f in list_field(spec, "ipFamilies")) if f),
        cluster_ips=tuple(ips))


def _cluster_ip(value: Any) -> str | None:
    """A Service's cluster IP, or "None" (headless)."""
    return "None" if value == "None" else apitext.ip(value)


def _controller(meta: Any) -> tuple[str, str] | None:
    """The ownerReference marked controller (at most one per object, by the API's rules).
    Its name is whatever the pod's creator wrote: the API server checks only that it is not empty."""
    for ref in list_field(meta, "ownerReferences"):
        kind, name = apitext.field(api_field(ref, "kind"), KIND), apitext.field(api_field(ref, "name"), DNS_SUBDOMAIN)
        if api_field(ref, "controller") is True and kind and name:
            return kind, name
    return None


def opaque(value: Any) -> str | None:
    """A resourceVersion or continue token (opaque: handed back to the server as
    it came); None if it is not one."""
    return value if isinstance(value, str) and TOKEN.accepts(value) else None
