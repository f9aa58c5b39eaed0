"""kube: the pods of this node, from the Kubernetes API through the official client.

Nothing here touches the kernel. KubeUnavailable means "no API to ask"
(nothing configured, or unreachable): callers fall back to what the node
itself knows and show pods as unknown. UserError means the user asked for
something the API says is wrong (an unknown pod, a pod on another node).
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..trust import check_tree

# Where a node keeps credentials, after --kubeconfig, $KUBECONFIG and ~/.kube/config.
NODE_KUBECONFIGS = (Path("/etc/kubernetes/kubelet.conf"), Path("/etc/kubernetes/admin.conf"))
REQUEST_TIMEOUT = (2.0, 5.0)    # connect, read: an API that accepts and never answers must not hang us
START_SECONDS = 3.0             # all start-up calls together: tracing starts whatever the API does
WATCH_SECONDS = 30              # server-side watch length; the client reconnects after it
WATCH_BACKOFF = (1.0, 30.0)     # after a failed watch: first and longest wait before the next try
HTTP_GONE = 410                 # a watch's resourceVersion is too old: list again
MAX_KUBECONFIG_BYTES = 1 << 20


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


def _items(obj: Any, key: str) -> list[Any]:
    """A list field, [] when absent or not a list."""
    value = api_field(obj, key)
    return list(value) if isinstance(value, (list, tuple)) else []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def pod_info(obj: Any) -> PodInfo:
    """From a V1Pod (the client's model) or the same object as a dict. Never
    raises: a pod without a field has none of what it would have said."""
    meta, spec, status = api_field(obj, "metadata"), api_field(obj, "spec"), api_field(obj, "status")
    ips = [api_field(p, "ip") for p in _items(status, "podIPs")] or [api_field(status, "podIP")]
    ports: set[int] = set()
    for c in _items(spec, "containers"):
        for p in _items(c, "ports"):
            for k in ("containerPort", "hostPort"):
                port = api_field(p, k)
                if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
                    ports.add(port)
    labels = api_field(meta, "labels")
    namespace, name = _text(api_field(meta, "namespace")) or "", _text(api_field(meta, "name")) or ""
    return PodInfo(
        namespace=namespace, name=name,
        # Ids key pods for the whole run: a pod without a uid is keyed by its name.
        uid=_text(api_field(meta, "uid")) or f"{namespace}/{name}",
        node=_text(api_field(spec, "nodeName")), ips=tuple(ip for ip in ips if _text(ip)),
        host_network=api_field(spec, "hostNetwork") is True, ports=tuple(sorted(ports)),
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())) if isinstance(labels, dict) else (),
        phase=_text(api_field(status, "phase")),
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
    raw = api_field(spec, "selector")
    selector: tuple[tuple[str, str], ...] = ()
    if isinstance(raw, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        selector = tuple(sorted(raw.items()))
    ips = [ip for ip in _items(spec, "clusterIPs") if _text(ip)] or \
        [ip for ip in [api_field(spec, "clusterIP")] if _text(ip)]
    return ServiceInfo(
        namespace=_text(api_field(meta, "namespace")) or "", name=_text(api_field(meta, "name")) or "",
        selector=selector, ip_family_policy=_text(api_field(spec, "ipFamilyPolicy")),
        ip_families=tuple(f for f in _items(spec, "ipFamilies") if _text(f)), cluster_ips=tuple(ips))


def _controller(meta: Any) -> tuple[str, str] | None:
    """The ownerReference marked controller (at most one per object, by the API's rules)."""
    for ref in _items(meta, "ownerReferences"):
        kind, name = _text(api_field(ref, "kind")), _text(api_field(ref, "name"))
        if api_field(ref, "controller") is True and kind and name:
            return kind, name
    return None


def parse_selector(text: str) -> list[tuple[str, str, str | None]]:
    """-l 'app=web,tier!=db,canary' -> [(key, op, value)], op in =, !=, exists, !exists."""
    terms: list[tuple[str, str, str | None]] = []
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


# Kubeconfig entries that make the client do more than read: root refuses
# them in a kubeconfig that someone else can change. `exec` runs a command and
# `auth-provider` runs one (gcp's cmd-path) or refreshes tokens with what the
# file says; `tokenFile` is read by root and sent to the server the same file
# names, so it would hand any file root can read to whoever wrote it. Token and
# client-certificate kubeconfigs of another user remain usable: reading a
# certificate or key root is pointed at is not running code, and the worst
# such a file does is name the wrong pods (what netdrop reads is not trusted
# to be right, only to be read safely).
UNTRUSTED_USER_KEYS = {"exec": "runs a command (exec)",
                       "auth-provider": "runs a command or refreshes tokens (auth-provider)",
                       "tokenFile": "sends a file to the API server as its token (tokenFile)"}


def _doc_entries(doc: dict[str, Any], key: str, name: str) -> list[Any]:
    """What the `key` entries (e.g. contexts) named `name` hold."""
    return [api_field(e, key[:-1]) for e in _items(doc, key) if api_field(e, "name") == name]


def privileged_entries(doc: Any) -> list[tuple[str, str]]:
    """(user name, what it does) for each entry of the kubeconfig's chosen user
    (its current context's) that runs code or sends files; where the chosen user
    cannot be told (odd shapes), every user's. Any input: never raises."""
    if not isinstance(doc, dict):
        return []          # not a kubeconfig at all: the client refuses to load it
    current = _text(doc.get("current-context"))
    contexts = _doc_entries(doc, "contexts", current) if current else []
    chosen = {_text(api_field(c, "user")) for c in contexts} if contexts else {None}
    found = []
    for entry in _items(doc, "users"):
        name = api_field(entry, "name")
        if None not in chosen and name not in chosen:
            continue
        user = api_field(entry, "user")
        for key, does in UNTRUSTED_USER_KEYS.items():
            if api_field(user, key) not in (None, "", {}):
                found.append((str(name), does))
    return found


def check_kubeconfig_trust(path: Path) -> Any:
    """The kubeconfig's document, read once: what is checked is what the client
    loads, so nobody can swap the file between the two. As root, a kubeconfig
    that someone else can change must not make root run its commands or send its
    files (UNTRUSTED_USER_KEYS): UserError says why."""
    import yaml  # the kubernetes client's own dependency

    untrusted = None
    if os.geteuid() == 0:
        try:
            check_tree(path, "kubeconfig")
        except UserError as exc:
            untrusted = str(exc)
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_KUBECONFIG_BYTES + 1)
        if len(text) > MAX_KUBECONFIG_BYTES:
            raise UserError(f"kubeconfig {path} is larger than {MAX_KUBECONFIG_BYTES >> 20} MiB: not a kubeconfig")
        doc = yaml.safe_load(text)
    except OSError as exc:
        raise UserError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"kubeconfig {path} is not valid YAML ({first})") from None
    found = privileged_entries(doc) if untrusted else []
    if found:
        user, does = found[0]
        raise UserError(f"{untrusted}: its user {user!r} {does}, which root will not do for others; use a "
                        f"kubeconfig owned by root and not writable by others, or one with a token or "
                        f"client certificate")
    return doc


def _load_kubeconfig(config: Any, path: Path, into: Any) -> None:
    """Load the document check_kubeconfig_trust read, resolving relative file
    names against the file's directory as the client does for a file; nothing
    is ever written back into it (the client's persist_config would)."""
    doc = check_kubeconfig_trust(path)
    config.kube_config.KubeConfigLoader(config_dict=doc, config_base_path=str(path.parent)).load_and_set(into)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


class KubeClient:
    def __init__(self, kubeconfig: str | None = None):
        try:
            from kubernetes import client, config
        except ImportError:
            raise KubeUnavailable("the kubernetes Python client is not installed") from None
        self._client_mod = client
        self.config = client.Configuration()
        self.source = self._load(config, kubeconfig, self.config)
        # No urllib3 retries: each call is one request with REQUEST_TIMEOUT;
        # callers decide when to ask again (the default retries 3 times, and an
        # API that accepts but never answers held the start for 40 s).
        self.config.retries = 0
        self.v1 = client.CoreV1Api(client.ApiClient(self.config))
        self._deadline: float | None = None
        self._stream: Any = None     # the watch's open response, shut down by stop_watch()

    @staticmethod
    def _load(config: Any, explicit: str | None, into: Any) -> str:
        if explicit:
            if not Path(explicit).is_file():
                raise UserError(f"kubeconfig {explicit} does not exist")
            try:
                _load_kubeconfig(config, Path(explicit), into)
            except UserError:
                raise
            # ConfigException, YAML errors, odd shapes (AttributeError, TypeError, ...): a
            # kubeconfig is node text, and any of it must end in one line, not a traceback
            except Exception as exc:  # noqa: BLE001
                raise UserError(f"cannot use kubeconfig {explicit}: {_one_line(exc)}") from None
            return explicit
        candidates = [Path(p) for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        candidates += [Path.home() / ".kube" / "config", *NODE_KUBECONFIGS]
        for path in candidates:
            if path.is_file():
                try:
                    _load_kubeconfig(config, path, into)
                except UserError:
                    raise
                # the client raises ConfigException, YAML errors, and on odd shapes anything
                except Exception as exc:  # noqa: BLE001
                    raise KubeUnavailable(f"cannot use kubeconfig {path}: {_one_line(exc)}") from None
                return str(path)
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                config.load_incluster_config(client_configuration=into)
            # ConfigException, OSError on the token files, ... : the API is then unavailable
            except Exception as exc:  # noqa: BLE001
                raise KubeUnavailable(f"cannot use the in-cluster service account: {_one_line(exc)}") from None
            return "in-cluster service account"
        raise KubeUnavailable("no kubeconfig found (--kubeconfig, $KUBECONFIG, ~/.kube/config, "
                              "/etc/kubernetes/kubelet.conf) and not running in a cluster")

    @contextmanager
    def within(self, seconds: float, since: float | None = None, at_least: float = 1.0) -> Iterator[None]:
        """The calls made inside end `seconds` after `since` (monotonic; default
        now), yet get `at_least` from now: start-up must not wait for the API,
        and a busy node's slow scan must not leave an answering API no time.
        Used from one thread, before the background starts."""
        now = time.monotonic()
        self._deadline = max((now if since is None else since) + seconds, now + at_least)
        try:
            yield
        finally:
            self._deadline = None

    def _timeout(self) -> tuple[float, float]:
        if self._deadline is None:
            return REQUEST_TIMEOUT
        left = self._deadline - time.monotonic()
        if left <= 0.05:
            raise KubeUnavailable(f"the API server at {self.server} did not answer in time")
        return (min(REQUEST_TIMEOUT[0], left), min(REQUEST_TIMEOUT[1], left))

    def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """One API call with a timeout; unreachable -> KubeUnavailable; 404 -> None."""
        ApiException = self._client_mod.exceptions.ApiException
        timeout = kw.pop("_request_timeout", None) or self._timeout()
        try:
            return fn(*args, _request_timeout=timeout, **kw)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeUnavailable(f"the API server at {self.server} answered {exc.status} {exc.reason}") from None
        # urllib3 connection errors, timeouts (MaxRetryError wraps the cause), the client's own
        # errors on a strange answer: an API that misbehaves makes pods unknown, never a crash
        except Exception as exc:  # noqa: BLE001
            reason = getattr(exc, "reason", None)
            cause = reason if isinstance(reason, BaseException) else exc
            if isinstance(cause, TimeoutError) or "Timeout" in type(cause).__name__:
                raise KubeUnavailable(f"the API server at {self.server} did not answer in time") from None
            raise KubeUnavailable(f"cannot reach the API server at {self.server}: {type(cause).__name__}") from None

    @property
    def server(self) -> str:
        return str(self.config.host)

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
        for node in _items(nodes, "items"):
            addrs = {api_field(a, "address") for a in _items(api_field(node, "status"), "addresses")}
            name = _text(api_field(api_field(node, "metadata"), "name"))
            if name and addrs & local_ips:
                return name
        raise UserError(f"cannot tell which Kubernetes node this is (hostname {host} is not a node name and "
                        "no node has this machine's addresses): pass --node NAME")

    def node_objects(self) -> list[Any]:
        """The cluster's Node objects as plain JSON (doctor compares what each
        node's CNI announces in its annotations, e.g. flannel's VXLAN VNI)."""
        return _items(self._json(self.v1.list_node), "items")

    def pod_cidrs(self) -> dict[str, list[str]]:
        """Node name -> its pod CIDRs (spec.podCIDRs), for routes between nodes.
        A Node without spec (or without CIDRs) has none."""
        nodes = self._call(self.v1.list_node)
        out: dict[str, list[str]] = {}
        for n in _items(nodes, "items"):
            name = _text(api_field(api_field(n, "metadata"), "name"))
            if name is None:
                continue
            spec = api_field(n, "spec")
            cidrs = [c for c in _items(spec, "podCIDRs") if _text(c)] or \
                [c for c in [api_field(spec, "podCIDR")] if _text(c)]
            out[name] = cidrs
        return out

    def _json(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """One call whose answer is read as plain JSON (dicts) rather than the
        client's models: pod_info reads both, and a V1Pod model costs about a
        millisecond to build (250 pods: a quarter of a second at start-up)."""
        resp = self._call(fn, *args, _preload_content=False, **kw)
        if resp is None:
            return None
        try:
            return json.loads(resp.data)
        except (ValueError, TypeError):     # UnicodeDecodeError is a ValueError
            raise KubeUnavailable(f"the API server at {self.server} answered something that is not JSON") from None

    def list_services(self) -> list[ServiceInfo]:
        """Every Service of the cluster (all namespaces), read as plain JSON."""
        return [service_info(s) for s in _items(self._json(self.v1.list_service_for_all_namespaces), "items")]

    def list_pods(self, node: str, label_selector: str | None = None) -> tuple[list[PodInfo], str]:
        kw = {"field_selector": f"spec.nodeName={node}"}
        if label_selector:
            kw["label_selector"] = label_selector
        res = self._json(self.v1.list_pod_for_all_namespaces, **kw)
        rv = _text(api_field(api_field(res, "metadata"), "resourceVersion")) or ""
        return [pod_info(p) for p in _items(res, "items")], rv

    def find_pod(self, namespace: str, name: str) -> PodInfo | None:
        pod = self._call(self.v1.read_namespaced_pod, name, namespace)
        return pod_info(pod) if pod is not None else None

    def pod_names(self, namespace: str) -> list[str]:
        res = self._call(self.v1.list_namespaced_pod, namespace)
        return [n for p in _items(res, "items") if (n := _text(api_field(api_field(p, "metadata"), "name")))]

    def watch_pods(self, node: str, label_selector: str | None, on_change: Callable[[list[PodInfo]], None],
                   stop: threading.Event, on_error: Callable[[str | None], None] = lambda msg: None) -> None:
        """List, then follow changes until stop; calls on_change with the whole
        current list after every change. A watch that ends (WATCH_SECONDS) is
        resumed from the last resourceVersion seen, bookmarks included, as
        client-go's reflector does: the list is asked again only when the API
        says that version is gone (410) or after an error. Reconnects wait longer
        after each failure in a row (WATCH_BACKOFF): an API in trouble gets a
        request now and then, not a storm."""
        backoff = WATCH_BACKOFF[0]
        rv: str | None = None
        current: dict[str, PodInfo] = {}
        while not stop.is_set():
            try:
                if rv is None:
                    pods, rv = self.list_pods(node, label_selector)
                    current = {p.uid: p for p in pods}
                    on_change(list(current.values()))
                    on_error(None)
                rv = self._watch_once(node, label_selector, rv, current, on_change, stop)
                backoff = WATCH_BACKOFF[0]
                continue
            except KubeUnavailable as exc:
                if stop.is_set():       # stop_watch() shut the stream down
                    return
                on_error(str(exc))
            # a broken stream, a strange answer: relist; this thread must not die
            except Exception as exc:  # noqa: BLE001
                if stop.is_set():
                    return
                on_error(f"pod watch interrupted ({type(exc).__name__}); relisting")
            rv = None
            stop.wait(backoff)
            backoff = min(backoff * 2, WATCH_BACKOFF[1])

    def _watch_once(self, node: str, label_selector: str | None, rv: str, current: dict[str, PodInfo],
                    on_change: Callable[[list[PodInfo]], None], stop: threading.Event) -> str | None:
        """One watch request from rv until the server ends it or stop; the last
        resourceVersion seen, or None when the API says rv is too old (list again)."""
        from kubernetes.watch.watch import iter_resp_lines

        kw: dict[str, Any] = {"field_selector": f"spec.nodeName={node}", "resource_version": rv, "watch": True,
                              "allow_watch_bookmarks": True, "timeout_seconds": WATCH_SECONDS,
                              "_request_timeout": (REQUEST_TIMEOUT[0], WATCH_SECONDS + 10)}
        if label_selector:
            kw["label_selector"] = label_selector
        resp = self._call(self.v1.list_pod_for_all_namespaces, _preload_content=False, **kw)
        if resp is None:
            raise KubeUnavailable(f"the API server at {self.server} does not serve pods")
        self._stream = resp
        try:
            if stop.is_set():
                return rv
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                if stop.is_set():
                    break
                ev = json.loads(line) if line.strip() else None
                if not isinstance(ev, dict):
                    continue
                kind, obj = ev.get("type"), ev.get("object")
                if kind == "ERROR":
                    if api_field(obj, "code") == HTTP_GONE:
                        return None
                    raise KubeUnavailable(f"the API server at {self.server} ended the pod watch: "
                                          f"{_one_line(Exception(api_field(obj, 'message') or 'error'))}")
                seen = _text(api_field(api_field(obj, "metadata"), "resourceVersion"))
                if seen:
                    rv = seen
                if kind not in ("ADDED", "MODIFIED", "DELETED"):     # BOOKMARK: only its resourceVersion
                    continue
                pod = pod_info(obj)
                if pod.node is not None and pod.node != node:
                    continue
                if kind == "DELETED":
                    current.pop(pod.uid, None)
                else:
                    current[pod.uid] = pod
                on_change(list(current.values()))
        finally:
            self._stream = None
            with contextlib.suppress(Exception):
                resp.release_conn()
        return rv

    def stop_watch(self) -> None:
        """End a watch that waits for its next event now (from another thread):
        the stream's socket is shut down, its read returns."""
        resp = self._stream
        if resp is not None:
            with contextlib.suppress(Exception):   # already closed, or never opened
                resp.shutdown()


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

