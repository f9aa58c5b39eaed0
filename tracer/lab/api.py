"""api: a Kubernetes API server for the simulated node, on 127.0.0.1 only.

No API server can be installed on our machines, so the simulated node comes
with this small HTTP server that speaks the Kubernetes REST API for the calls
netdrop makes through the official client: list and watch pods (field and
label selectors, resourceVersion, timeoutSeconds, allowWatchBookmarks), read
and list pods of a namespace, read and list nodes, list and read Services;
the custom resources of deploy/crds and core/v1 Events, read and written
(apistore: create, update, patch, delete with garbage collection, the status
subresource, validation against the CRD, etcd's size limit). Every request is
authorized by RBAC built from deploy/rbac.yaml's roles (apirbac); the HTTP side
is apiserve. Watches behave as the real
API server's: from resourceVersion "" or "0" they begin with every matching
pod as ADDED; from one older than the event log keeps (MAX_LOG) they get an
ERROR event with code 410 (Gone) and the client lists again; with bookmarks
allowed, a BOOKMARK carries the current resourceVersion every
BOOKMARK_SECONDS and as the watch ends, so that a client whose pods did not
change resumes from a recent version. Objects are realistic Pod and Node objects.
It writes a kubeconfig pointing at itself with a bearer token it checks, or
(with TLS) the service-account directory the kubelet gives a pod. It answers
TokenReviews and SubjectAccessReviews from its own users and grants (the
agent's authentication of its scrapers).

It listens on 127.0.0.1 only: the token is the only thing between its pod list
and anyone who can reach the port, and the node's other users can read
nothing of it but through root's kubeconfig, which is created mode 0600.
"""

from __future__ import annotations

import base64
import bisect
import copy
import json
import os
import secrets
import ssl
import threading
import uuid
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..trust import create_new
from .apirbac import Authorizer
from .apiserve import make_handler
from .apistore import Store

Obj = dict[str, Any]     # a Kubernetes object as JSON


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_object(name: str, namespace: str, node: str, ips: list[str], host_ip: str, *,
               labels: dict[str, str] | None = None, host_network: bool = False,
               ports: list[int] | None = None, owner: str | None = None, phase: str = "Running") -> Obj:
    """A Pod as the API returns it: the fields netdrop reads, and the usual others."""
    uid = str(uuid.uuid4())
    meta: Obj = {"name": name, "namespace": namespace, "uid": uid, "labels": labels or {},
            "creationTimestamp": _now(), "resourceVersion": "0"}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
                                    "uid": str(uuid.uuid4()), "controller": True, "blockOwnerDeletion": True}]
    container = {"name": name.split("-")[0], "image": f"registry.example/{name.split('-')[0]}:1.0",
                 "ports": [{"containerPort": p, "protocol": "TCP", **({"hostPort": p} if host_network else {})}
                           for p in (ports or [])]}
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"nodeName": node, "hostNetwork": host_network, "containers": [container],
                 "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "serviceAccountName": "default"},
        "status": {"phase": phase, "hostIP": host_ip, "podIP": ips[0] if ips else None,
                   "podIPs": [{"ip": ip} for ip in ips], "startTime": _now(),
                   "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": _now()}]},
    }


def node_object(name: str, addresses: list[str], pod_cidr: str = "10.244.0.0/24",
                annotations: dict[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": "1",
                     "labels": {"kubernetes.io/hostname": name}, "creationTimestamp": _now(),
                     "annotations": dict(annotations or {})},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": a} for a in addresses]
                   + [{"type": "Hostname", "address": name}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


def service_object(name: str, namespace: str, selector: dict[str, str] | None, *,
                   ip_family_policy: str = "SingleStack", ip_families: list[str] | None = None,
                   cluster_ips: list[str] | None = None, ports: list[int] | None = None) -> Obj:
    """A ClusterIP Service as the API returns it (selector None: a Service without
    one, whose endpoints someone else writes)."""
    ips = cluster_ips or ["10.96.0.99"]
    families = ip_families or ["IPv6" if ":" in ip else "IPv4" for ip in ips]
    spec: Obj = {"type": "ClusterIP", "clusterIP": ips[0], "clusterIPs": ips, "ipFamilyPolicy": ip_family_policy,
                 "ipFamilies": families, "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                 "ports": [{"name": f"p{p}", "protocol": "TCP", "port": p, "targetPort": p} for p in (ports or [80])]}
    if selector is not None:
        spec["selector"] = dict(selector)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "resourceVersion": "1",
                         "creationTimestamp": _now(), "labels": {}},
            "spec": spec, "status": {"loadBalancer": {}}}


def _labels_match(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _fields_match(obj: Obj, selector: str) -> bool:
    """A field selector: path=value, path==value, path!=value, terms joined by commas
    (apimachinery/pkg/fields/selector.go); a missing field is the empty string."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        k, _, v = term.replace("!=", "=").replace("==", "=").partition("=")
        cur: Any = obj
        for part in k.strip().split("."):
            cur = cur.get(part, {}) if isinstance(cur, dict) else {}
        if ((cur if isinstance(cur, str) else "") == v.strip()) == negate:
            return False
    return True


LISTEN_ADDRESS = "127.0.0.1"
AGENT_USER = "system:serviceaccount:netdrop:netdrop"   # the DaemonSet's service account
MAX_LOG = 10_000          # watch events kept: a watch from before them gets 410 Gone
BOOKMARK_SECONDS = 10.0
POLL_INTERVAL = 0.05     # how often serve_forever() looks for shutdown(): stop() waits up to this long


def write_kubeconfig(path: Path, server: str, token: str, *, context: str = "sim",
                     ca_pem: bytes | None = None) -> Path:
    """A new kubeconfig at path for `server` with a bearer token (and the CA that signed the
    server's certificate), mode 0600 from its first byte (it holds the token); OSError if
    anything, a link included, is already there."""
    cluster: Obj = {"server": server}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    text = json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": context, "cluster": cluster}],
        "users": [{"name": "netdrop", "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": "netdrop"}}],
    })
    with os.fdopen(create_new(path), "w") as f:
        f.write(text)
    return path


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True   # a stopped server comes back on its port (an API outage in tests)
    daemon_threads = True
    request_queue_size = 1024    # the listen backlog: a thousand agents connecting at once (the default 5 resets them)


class KubeAPI:
    """The server's state: pods and nodes, with a resourceVersion and an event log for watches."""

    def __init__(self, *, responder: bool = True) -> None:
        self.pods: dict[tuple[str, str], Obj] = {}
        self.nodes: dict[str, Obj] = {}
        self.services: dict[tuple[str, str], Obj] = {}
        self.rv = 1
        self.log: list[tuple[int, str, Obj, str]] = []   # (resourceVersion, type, object, resource)
        self.cond = threading.Condition()
        self.token = secrets.token_hex(16)
        # Who the tokens are (as TokenReview names them) and what RBAC lets them do
        # (as SubjectAccessReview answers): the agent's own token is its service
        # account, bound to system:auth-delegator (it may create both reviews).
        self.agent: Obj = {"username": AGENT_USER, "uid": str(uuid.uuid4()),
                           "groups": ["system:serviceaccounts", "system:authenticated"]}
        self.users: dict[str, Obj] = {}     # other tokens (add_user); the agent's is self.token
        # RBAC as deploy/rbac.yaml ships it: the agent's ClusterRole and system:auth-delegator.
        # With responder=True (the default) the agent's user also holds netdrop-responder: the
        # lab's one kubeconfig serves both `netdrop serve` and the commands a responder runs on
        # the node (watch --pod, doctor); KubeAPI(responder=False) is the agent alone.
        # Without deploy/ (an installed package: the demo) the agent may do everything.
        self.rbac = Authorizer()
        if self.rbac.rbac_yaml.exists():
            self.rbac.bind_cluster_role(AGENT_USER, "netdrop")
            self.rbac.bind_cluster_role(AGENT_USER, "system:auth-delegator")
            if responder:
                self.rbac.bind_cluster_role(AGENT_USER, "netdrop-responder")
        else:
            self.rbac.grant(AGENT_USER, "*", "*", group="*")
        self.store = Store(self)     # custom resources (deploy/crds) and Events
        self.reviews = {"TokenReview": 0, "SubjectAccessReview": 0}
        self.requests: list[str] = []
        self.ca_pem: bytes | None = None
        self._server: ThreadingHTTPServer | None = None
        self._tls: tuple[bytes, bytes] | None = None

    # -- users and RBAC (what the real API server's authenticators and RBAC decide) --
    def add_user(self, username: str, groups: tuple[str, ...] = ()) -> str:
        """A new bearer token for `username` (a Prometheus's service account, a tenant)."""
        token = secrets.token_urlsafe(24)
        with self.cond:
            self.users[token] = {"username": username, "uid": str(uuid.uuid4()),
                                 "groups": [*groups, "system:authenticated"]}
        return token

    def user_of(self, token: str) -> Obj | None:
        """Whom a token names (the agent's is whatever self.token is now: a test changes it)."""
        return self.agent if token == self.token else self.users.get(token)

    def grant(self, username: str, verb: str, resource: str, subresource: str = "", name: str = "*", *,
              group: str = "", namespace: str | None = None) -> None:
        """One RBAC rule for username (name "*": every object; namespace None: cluster-wide)."""
        self.rbac.grant(username, verb, resource, subresource, name, group=group, namespace=namespace)

    def revoke(self, username: str, verb: str, resource: str, subresource: str = "", name: str = "*", *,
               group: str = "", namespace: str | None = None) -> None:
        self.rbac.revoke(username, verb, resource, subresource, name, group=group, namespace=namespace)

    def bind_cluster_role(self, username: str, role: str, namespace: str | None = None) -> None:
        """Bind a ClusterRole of deploy/rbac.yaml to username: cluster-wide (a ClusterRoleBinding)
        or in one namespace (a RoleBinding to the ClusterRole). KeyError for an unknown role."""
        self.rbac.bind_cluster_role(username, role, namespace)

    def allowed(self, username: str, verb: str, resource: str, subresource: str = "", name: str = "", *,
                group: str = "", namespace: str = "") -> bool:
        return self.rbac.allowed(username, verb, resource, subresource, name, group=group, namespace=namespace)

    # -- what the benchmarks report --
    def writes(self) -> dict[tuple[str, str], int]:
        """Successful writes through the API by (user, verb) (the garbage collector's deletes
        under its own service account)."""
        with self.cond:
            return dict(self.store.writes)

    def largest_object(self) -> dict[str, int]:
        """The largest object stored per resource ("netdrop.io/netdropcapturereports", "events"),
        in bytes of its compact JSON."""
        with self.cond:
            return dict(self.store.largest)

    # -- state changes (as the control plane would make them) --
    def _bump(self, kind: str, obj: Obj, resource: str = "pods") -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.log.append((self.rv, kind, copy.deepcopy(obj), resource))
        if len(self.log) > MAX_LOG:
            del self.log[:len(self.log) - MAX_LOG]
        self.cond.notify_all()

    def events_since(self, since: int) -> list[tuple[int, str, Obj, str]] | None:
        """Log entries after resourceVersion `since`; None if some of them are no
        longer kept (the client must list again). Called with cond held."""
        if self.log and since < self.log[0][0] - 1:
            return None
        return self.log[bisect.bisect_right(self.log, since, key=lambda e: e[0]):]

    def add_node(self, node: Obj) -> None:
        with self.cond:
            self.nodes[node["metadata"]["name"]] = node

    def put_service(self, service: Obj) -> None:
        """Add or replace a Service (listed, not watched: netdrop only lists them)."""
        with self.cond:
            self.rv += 1
            service["metadata"]["resourceVersion"] = str(self.rv)
            self.services[(service["metadata"]["namespace"], service["metadata"]["name"])] = service

    def delete_service(self, namespace: str, name: str) -> None:
        with self.cond:
            self.services.pop((namespace, name), None)

    def put_pod(self, pod: Obj) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        with self.cond:
            kind = "MODIFIED" if key in self.pods else "ADDED"
            self.pods[key] = pod
            self._bump(kind, pod)

    def delete_pod(self, namespace: str, name: str) -> None:
        with self.cond:
            pod = self.pods.pop((namespace, name), None)
            if pod is not None:
                self._bump("DELETED", pod)

    # -- serving --
    def start(self, port: int = 0, tls: bool = False) -> str:
        """Serve on 127.0.0.1:port (0: any free port; a stopped server can come back on its old one);
        with tls, HTTPS with a certificate from a CA of its own (ca_pem), as a real API server."""
        self._server = _Server((LISTEN_ADDRESS, port), make_handler(self))
        if tls:
            self._wrap_tls(self._server)
        threading.Thread(target=self._server.serve_forever, args=(POLL_INTERVAL,), daemon=True).start()
        return self.url

    def _wrap_tls(self, server: ThreadingHTTPServer) -> None:
        from ..tlsconf import load_pem, make_certificate

        if self._tls is None:       # one CA for the server's life: a restart keeps clients' trust
            ca = make_certificate("netdrop-lab-ca", [], ca=True)
            self.ca_pem = ca[0]
            self._tls = make_certificate("kube-apiserver", [LISTEN_ADDRESS, "kubernetes.default.svc"],
                                         issuer_pem=ca)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        load_pem(ctx, *self._tls)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{LISTEN_ADDRESS}:{self._server.server_address[1]}"

    def write_service_account(self, directory: Path) -> dict[str, str]:
        """What the kubelet gives a pod of a service account: `directory` (new, root's,
        0700) with token, ca.crt and namespace, to be mounted at
        /var/run/secrets/kubernetes.io/serviceaccount; returns the environment the
        kubelet sets (KUBERNETES_SERVICE_HOST/PORT) for the client's in-cluster config."""
        assert self._server is not None and self.ca_pem is not None, "start(tls=True) first"
        directory.mkdir(mode=0o700)
        for name, data in (("token", self.token.encode()), ("ca.crt", self.ca_pem), ("namespace", b"netdrop")):
            with os.fdopen(create_new(directory / name, 0o644), "wb") as f:
                f.write(data)
        port = str(self._server.server_address[1])
        return {"KUBERNETES_SERVICE_HOST": LISTEN_ADDRESS, "KUBERNETES_SERVICE_PORT": port}

    def write_kubeconfig(self, path: Path, context: str = "sim") -> Path:
        """A new kubeconfig at path for this server and the agent's token (see write_kubeconfig)."""
        return write_kubeconfig(path, self.url, self.token, context=context, ca_pem=self.ca_pem)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
