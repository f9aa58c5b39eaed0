"""spec: a NetdropCapture object, read into a typed Capture, and written back.

The object comes from the API server, written by whoever may create
NetdropCaptures in its namespace: it is untrusted. parse_capture() reads any
JSON value and either returns a Capture within docs/captures.md's bounds or
raises SpecError with one line saying what is wrong (the agent reports it as
the node's Failed message). The CRD's schema says the same bounds, but an
agent does not rely on the API server having checked them: a CRD may be older
than the agent, or replaced.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import UserError
from ..explain.categories import CATEGORIES
from ..pods.kube import labels_match, parse_selector
from ..pods.objects import PodInfo

GROUP = "netdrop.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "NetdropCapture"
PLURAL = "netdropcaptures"
AGENTS_NAMESPACE = "netdrop"     # the DaemonSet's namespace: node captures only there

MAX_DURATION = 3600.0           # spec.duration: 1 s .. 1 h
MAX_SINCE = 3600.0              # spec.since: 0 .. 1 h (the recorder keeps what its budget allows)
MAX_ITEMS = 16                  # names, ports, ips, categories
MAX_NAMES = 64                  # pods.names, nodes.names
MAX_NAME = 253                  # a DNS subdomain (pod and node names)
MAX_SELECTOR = 1024

_DURATION = re.compile(r"^(?:(\d{1,4})h)?(?:(\d{1,5})m)?(?:(\d{1,7})s)?$")


class SpecError(ValueError):
    """A capture object that cannot be carried out; str() is one line for a report's message."""


def parse_duration(text: object, what: str) -> float:
    """'30s', '2m', '1h30m' (Go's time.Duration form, whole units) -> seconds."""
    if not isinstance(text, str) or not text or len(text) > 16:
        raise SpecError(f"{what}: expected a duration such as 30s, 2m or 1h30m")
    m = _DURATION.match(text)
    if m is None or not any(m.groups()):
        raise SpecError(f"{what}: {text[:16]!r} is not a duration such as 30s, 2m or 1h30m")
    h, mins, s = (int(g or 0) for g in m.groups())
    return float(h * 3600 + mins * 60 + s)


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration for whole seconds: 90 -> '1m30s', 0 -> '0s'."""
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec else "")
    return text or "0s"


@dataclass(frozen=True)
class PodSelection:
    """Pods of the capture's namespace: by name, by label selector, or both (either matches)."""

    names: tuple[str, ...] = ()
    selector: str | None = None

    def matches(self, pod: PodInfo, namespace: str) -> bool:
        if pod.namespace != namespace:
            return False
        if pod.name in self.names:
            return True
        return self.selector is not None and labels_match(dict(pod.labels), self.selector)

    def describe(self) -> str:
        parts = ([", ".join(self.names)] if self.names else []) + ([f"-l {self.selector}"] if self.selector else [])
        return "pods " + " or ".join(parts)


@dataclass(frozen=True)
class NodeSelection:
    names: tuple[str, ...] = ()
    all: bool = False

    def matches(self, node: str) -> bool:
        return self.all or node in self.names

    def describe(self) -> str:
        return "all nodes" if self.all else "nodes " + ", ".join(self.names)


@dataclass(frozen=True)
class CaptureFilters:
    """As `netdrop watch`'s: ports and ips narrow the sampled events only (docs/captures.md)."""

    ports: tuple[int, ...] = ()
    ips: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def narrows_events_only(self) -> bool:
        return bool(self.ports or self.ips)


@dataclass(frozen=True)
class CaptureSpec:
    pods: PodSelection | None
    nodes: NodeSelection | None
    duration: float
    since: float = 0.0
    filters: CaptureFilters = field(default_factory=CaptureFilters)
    packets: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.pods is not None:
            out["pods"] = {**({"names": list(self.pods.names)} if self.pods.names else {}),
                           **({"selector": self.pods.selector} if self.pods.selector else {})}
        if self.nodes is not None:
            out["nodes"] = {**({"names": list(self.nodes.names)} if self.nodes.names else {}),
                            **({"all": True} if self.nodes.all else {})}
        out["duration"] = format_duration(self.duration)
        if self.since:
            out["since"] = format_duration(self.since)
        f = self.filters
        filters = {**({"ports": list(f.ports)} if f.ports else {}), **({"ips": list(f.ips)} if f.ips else {}),
                   **({"categories": list(f.categories)} if f.categories else {})}
        if filters:
            out["filters"] = filters
        if self.packets:
            out["packets"] = True
        return out

    def describe(self) -> str:
        what = self.pods.describe() if self.pods is not None else self.nodes.describe() if self.nodes else "?"
        since = f", from {format_duration(self.since)} before" if self.since else ""
        return f"{what} for {format_duration(self.duration)}{since}"


@dataclass(frozen=True)
class Capture:
    """A NetdropCapture as an agent carries it out."""

    namespace: str
    name: str
    uid: str
    created: datetime
    spec: CaptureSpec

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def node_scope(self) -> bool:
        """Whether it sees every drop of a node (a node capture) rather than its namespace's pods'."""
        return self.spec.nodes is not None

    def ends_at(self) -> float:
        """Unix time at which recording stops: creation + duration."""
        return self.created.timestamp() + self.spec.duration

    def starts_at(self) -> float:
        """Unix time the window begins: creation - since."""
        return self.created.timestamp() - self.spec.since


def capture_object(namespace: str, spec: CaptureSpec, *, name: str | None = None,
                   generate_name: str = "netdrop-") -> dict[str, Any]:
    """A new NetdropCapture to create (name or generateName)."""
    meta: dict[str, Any] = {"namespace": namespace, **({"name": name} if name else {"generateName": generate_name})}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spec.to_json()}


# -- reading an object from the API (untrusted) --

def _dict(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{what}: expected an object")
    return value


def _names(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_NAMES:
        raise SpecError(f"{what}: expected a list of at most {MAX_NAMES} names")
    out = []
    for v in value:
        if not isinstance(v, str) or not v or len(v) > MAX_NAME or not re.fullmatch(r"[a-z0-9.-]+", v):
            raise SpecError(f"{what}: {str(v)[:64]!r} is not a name")
        out.append(v)
    return tuple(dict.fromkeys(out))


def _selector(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_SELECTOR:
        raise SpecError("pods.selector: expected a label selector such as app=web")
    try:
        parse_selector(value)
    except UserError:
        raise SpecError(f"pods.selector: {value[:64]!r} is not a label selector (example: app=web)") from None
    return value


def _filters(value: object) -> CaptureFilters:
    f = _dict(value, "filters")
    ports, ips, cats = f.get("ports") or [], f.get("ips") or [], f.get("categories") or []
    for what, items in (("filters.ports", ports), ("filters.ips", ips), ("filters.categories", cats)):
        if not isinstance(items, list) or len(items) > MAX_ITEMS:
            raise SpecError(f"{what}: expected a list of at most {MAX_ITEMS}")
    if not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in ports):
        raise SpecError("filters.ports: each port is 1-65535")
    good_ips = []
    for ip in ips:
        try:
            good_ips.append(str(ipaddress.ip_address(ip if isinstance(ip, str) else "")))
        except ValueError:
            raise SpecError(f"filters.ips: {str(ip)[:64]!r} is not an IP address") from None
    for c in cats:
        if not isinstance(c, str) or c not in CATEGORIES:
            raise SpecError(f"filters.categories: {str(c)[:64]!r} is not one of {', '.join(sorted(CATEGORIES))}")
    return CaptureFilters(tuple(dict.fromkeys(ports)), tuple(dict.fromkeys(good_ips)), tuple(dict.fromkeys(cats)))


def parse_spec(value: object, namespace: str) -> CaptureSpec:
    spec = _dict(value, "spec")
    pods_raw, nodes_raw = spec.get("pods"), spec.get("nodes")
    if (pods_raw is None) == (nodes_raw is None):
        raise SpecError("spec: exactly one of pods and nodes")
    pods = nodes = None
    if pods_raw is not None:
        p = _dict(pods_raw, "pods")
        pods = PodSelection(_names(p.get("names"), "pods.names"), _selector(p.get("selector")))
        if not pods.names and pods.selector is None:
            raise SpecError("pods: names, a selector, or both")
    else:
        n = _dict(nodes_raw, "nodes")
        every = n.get("all", False)
        if not isinstance(every, bool):
            raise SpecError("nodes.all: expected true or false")
        nodes = NodeSelection(_names(n.get("names"), "nodes.names"), every)
        if not nodes.names and not nodes.all:
            raise SpecError("nodes: names, or all: true")
        if namespace != AGENTS_NAMESPACE:
            raise SpecError(f"nodes: a node capture sees every pod of its nodes; it may only be created "
                            f"in the agents' namespace {AGENTS_NAMESPACE!r}, not {namespace[:63]!r}")
    duration = parse_duration(spec.get("duration"), "duration")
    if not 1 <= duration <= MAX_DURATION:
        raise SpecError("duration: 1s to 1h")
    since = parse_duration(spec.get("since", "0s"), "since")
    if since > MAX_SINCE:
        raise SpecError("since: at most 1h")
    packets = spec.get("packets", False)
    if not isinstance(packets, bool):
        raise SpecError("packets: expected true or false")
    return CaptureSpec(pods, nodes, duration, since, _filters(spec.get("filters")), packets)


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 time as the API server writes it (2026-12-07T11:02:35Z); None if it is not one."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def parse_capture(obj: object) -> Capture:
    """A NetdropCapture from the API (any JSON value) -> Capture, or SpecError."""
    o = _dict(obj, "object")
    meta = _dict(o.get("metadata"), "metadata")
    namespace, name, uid = meta.get("namespace"), meta.get("name"), meta.get("uid")
    if not all(isinstance(v, str) and 0 < len(v) <= MAX_NAME for v in (namespace, name, uid)):
        raise SpecError("metadata: a namespace, name and uid")
    assert isinstance(namespace, str) and isinstance(name, str) and isinstance(uid, str)
    created = parse_time(meta.get("creationTimestamp"))
    if created is None:
        raise SpecError("metadata.creationTimestamp: not a time")
    return Capture(namespace, name, uid, created, parse_spec(o.get("spec"), namespace))
