"""kube: the pods of this node, from the Kubernetes API through the official client.

Nothing here touches the kernel. KubeUnavailable means "no API to ask"
(nothing configured, or unreachable): callers fall back to what the node
itself knows and show pods as unknown. UserError means the user asked for
something the API says is wrong (an unknown pod, a pod on another node).
"""

from __future__ import annotations

import difflib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from ..errors import UserError
from ..trust import check_tree
from . import apicall, apitext
from .apicall import KubeUnavailable
from .apitext import DNS_SUBDOMAIN
from .objects import PodInfo, ServiceInfo, api_field, list_field, opaque, pod_info, service_info

# Where a node keeps credentials, after --kubeconfig, $KUBECONFIG and ~/.kube/config.
NODE_KUBECONFIGS = (Path("/etc/kubernetes/kubelet.conf"), Path("/etc/kubernetes/admin.conf"))
START_SECONDS = 3.0             # all start-up calls together: tracing starts whatever the API does
WATCH_SECONDS = 30              # server-side watch length; the client reconnects after it
WATCH_GRACE = 10.0              # past WATCH_SECONDS, the client ends a watch the server did not
MAX_WATCH_LINE = 4 << 20        # one watch event: one object (as MAX_RESPONSE_BYTES)
MAX_WATCH_BYTES = 64 << 20      # one watch (WATCH_SECONDS): a busy node's events are a few MiB
WATCH_BACKOFF = (1.0, 30.0)     # after a failed watch: first and longest wait before the next try
HTTP_GONE = 410                 # a watch's resourceVersion is too old: list again
MAX_KUBECONFIG_BYTES = 1 << 20


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


def labels_match(labels: dict[str, str], selector: str) -> bool:
    """Whether labels satisfy every term of a label selector (parse_selector's form)."""
    for k, op, v in parse_selector(selector):
        if (op == "=" and labels.get(k) != v) or (op == "!=" and labels.get(k) == v) \
                or (op == "exists" and k not in labels) or (op == "!exists" and k in labels):
            return False
    return True


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
        return not self.selector or labels_match(dict(pod.labels), self.selector)

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


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _node_name(node: Any) -> str | None:
    return apitext.field(api_field(api_field(node, "metadata"), "name"), DNS_SUBDOMAIN)


def _doc_entries(doc: dict[str, Any], key: str, name: str) -> list[Any]:
    """What the `key` entries (e.g. contexts) named `name` hold."""
    return [api_field(e, key[:-1]) for e in list_field(doc, key) if api_field(e, "name") == name]


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
    for entry in list_field(doc, "users"):
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


class KubeClient(apicall.Api):
    """The calls netdrop makes to the API, each within hard limits (apicall.Api);
    a watch reads one bounded line at a time."""

    def __init__(self, kubeconfig: str | None = None, calls: apicall.Calls | None = None,
                 warn: Callable[[str], None] = lambda msg: None):
        try:
            from kubernetes import client, config
        except ImportError:
            raise KubeUnavailable("the kubernetes Python client is not installed") from None
        self.config = client.Configuration()
        self.source = self._load(config, kubeconfig, self.config)
        # No urllib3 retries: each call is one request within its limits;
        # callers decide when to ask again (the default retries 3 times, and an
        # API that accepts but never answers held the start for 40 s).
        self.config.retries = 0
        self.api_client = client.ApiClient(self.config)     # its connections are apicall's
        super().__init__(self.api_client, calls, warn)
        self.v1 = client.CoreV1Api(self.api_client)
        self._stream: Any = None            # the watch's open response, shut down by stop_watch()

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

    def node_name(self, explicit: str | None, local_ips: set[str]) -> str:
        """--node, else the kubelet's default name (the hostname), else the Node
        whose addresses are this node's."""
        if explicit:
            if self.call_json(self.v1.read_node, explicit) is None:
                raise UserError(f"node {explicit} is not known to the API server")
            return explicit
        host = socket.gethostname().lower()
        if self.call_json(self.v1.read_node, host) is not None:
            return host
        for page in self.pages(self.v1.list_node):
            for node in list_field(page, "items"):
                addresses = list_field(api_field(node, "status"), "addresses")
                addrs = {apitext.ip(api_field(a, "address")) for a in addresses}
                name = _node_name(node)
                if name and addrs & local_ips:
                    return name
        raise UserError(f"cannot tell which Kubernetes node this is (hostname {host} is not a node name and "
                        "no node has this machine's addresses): pass --node NAME")

    # What doctor reads of a Node besides its name: the annotations in which a CNI
    # announces what other nodes must match (flannel's VXLAN VNI).
    NODE_ANNOTATIONS = ("flannel.alpha.coreos.com/backend-data",)

    def node_objects(self) -> list[Any]:
        """The cluster's Nodes as plain JSON, with only their names and
        NODE_ANNOTATIONS: a large cluster's Nodes whole would be megabytes."""
        out = []
        for page in self.pages(self.v1.list_node):
            for node in list_field(page, "items"):
                annotations = api_field(api_field(node, "metadata"), "annotations")
                kept = {k: v for k in self.NODE_ANNOTATIONS if isinstance(annotations, dict)
                        and isinstance(v := annotations.get(k), str)}
                out.append({"metadata": {"name": _node_name(node), "annotations": kept}})
        return out

    def pod_cidrs(self) -> dict[str, list[str]]:
        """Node name -> its pod CIDRs (spec.podCIDRs), for routes between nodes.
        A Node without spec (or without CIDRs) has none."""
        out: dict[str, list[str]] = {}
        for page in self.pages(self.v1.list_node):
            for n in list_field(page, "items"):
                name = _node_name(n)
                if name is None:
                    continue
                spec = api_field(n, "spec")
                cidrs = [c for c in map(apitext.cidr, list_field(spec, "podCIDRs")) if c] or \
                    [c for c in [apitext.cidr(api_field(spec, "podCIDR"))] if c]
                out[name] = cidrs
        return out

    def list_services(self) -> list[ServiceInfo]:
        """Every Service of the cluster (all namespaces)."""
        return [service_info(s) for page in self.pages(self.v1.list_service_for_all_namespaces)
                for s in list_field(page, "items")]

    def list_pods(self, node: str, label_selector: str | None = None) -> tuple[list[PodInfo], str]:
        kw = {"field_selector": f"spec.nodeName={node}"}
        if label_selector:
            kw["label_selector"] = label_selector
        pods: list[PodInfo] = []
        rv = ""
        for page in self.pages(self.v1.list_pod_for_all_namespaces, **kw):
            pods += (pod_info(p) for p in list_field(page, "items"))
            rv = opaque(api_field(api_field(page, "metadata"), "resourceVersion")) or rv
        return pods, rv

    def find_pod(self, namespace: str, name: str) -> PodInfo | None:
        pod = self.call_json(self.v1.read_namespaced_pod, name, namespace)
        return pod_info(pod) if pod is not None else None

    def pod_names(self, namespace: str) -> list[str]:
        return [n for page in self.pages(self.v1.list_namespaced_pod, namespace=namespace)
                for p in list_field(page, "items")
                if (n := apitext.field(api_field(api_field(p, "metadata"), "name"), DNS_SUBDOMAIN))]

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
                rv = self._watch_once(node, label_selector, rv, current, on_change, stop)
                if stop.is_set():       # cut short by stop: it did not run its course
                    return
                # Only a watch that ran its course clears a problem: one that fails the
                # same way after each relist is warned about once.
                on_error(None)
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
        resourceVersion seen, or None when the API says rv is too old (list again).
        A line over MAX_WATCH_LINE ends it (KubeUnavailable: the caller relists)."""
        kw: dict[str, Any] = {"field_selector": f"spec.nodeName={node}", "resource_version": rv, "watch": True,
                              "allow_watch_bookmarks": True, "timeout_seconds": WATCH_SECONDS}
        if label_selector:
            kw["label_selector"] = label_selector
        with self.open(self.v1.list_pod_for_all_namespaces, seconds=WATCH_SECONDS + WATCH_GRACE,
                        max_bytes=MAX_WATCH_BYTES, what="pod watch", **kw) as resp:
            if resp is None:
                raise KubeUnavailable(f"the API server at {self.server} does not serve pods")
            self._stream = resp
            try:
                for kind, obj, seen_rv in watch_events(resp, stop, self.server, "pod watch"):
                    rv = seen_rv or rv
                    if kind == "BOOKMARK":      # only its resourceVersion
                        continue
                    pod = pod_info(obj)
                    if pod.node is not None and pod.node != node:
                        continue
                    if kind == "DELETED":
                        current.pop(pod.uid, None)
                    else:
                        current[pod.uid] = pod
                    on_change(list(current.values()))
            except WatchExpired:
                return None
            finally:
                self._stream = None
        return rv

    def stop_watch(self) -> None:
        """End a watch that waits for its next event now (from another thread):
        the stream's socket is shut down, its read returns."""
        resp = self._stream
        if resp is not None:
            with suppress(Exception):   # already closed, or never opened
                resp.shutdown()


class WatchExpired(Exception):
    """The API server said the watch's resourceVersion is too old (410 Gone): list again."""


def watch_events(resp: Any, stop: threading.Event, server: str, what: str) -> Iterator[tuple[str, Any, str | None]]:
    """The events of one watch stream, until it ends or stop: (type, object, the
    resourceVersion it carries or None) for ADDED, MODIFIED, DELETED and BOOKMARK
    (a bookmark carries only its resourceVersion). WatchExpired on 410 Gone; an
    ERROR event, or a line over MAX_WATCH_LINE, is KubeUnavailable (the caller
    relists); a line that is not a JSON object is ValueError (the same)."""
    if stop.is_set():
        return
    try:
        for line in apicall.lines(resp, MAX_WATCH_LINE):
            if stop.is_set():
                return
            ev = _event(line)
            if ev is None:
                continue
            kind, obj = ev.get("type"), ev.get("object")
            if kind == "ERROR":
                if api_field(obj, "code") == HTTP_GONE:
                    raise WatchExpired()
                raise KubeUnavailable(f"the API server at {server} ended the {what}: "
                                      f"{apitext.message(api_field(obj, 'message') or 'error', 200)}")
            if kind in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
                yield str(kind), obj, opaque(api_field(api_field(obj, "metadata"), "resourceVersion"))
    except apicall.LineTooLong as exc:
        raise KubeUnavailable(f"the API server at {server} sent {exc} in the {what}; relisting") from None


def _event(line: bytes) -> dict[str, Any] | None:
    """One watch event (a JSON object on one line); None for a blank line.
    Anything else is not what the API server sends: ValueError, the watch relists."""
    if not line.strip():
        return None
    ev = json.loads(line.decode("utf-8", "replace"))
    if not isinstance(ev, dict):
        raise ValueError("a watch event that is not a JSON object")
    return ev


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

