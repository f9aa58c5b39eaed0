"""api: a Kubernetes API server for the simulated node, on 127.0.0.1 only.

No API server can be installed on our machines, so the simulated node comes
with this small HTTP server that speaks the Kubernetes REST API for the calls
netdrop makes through the official client: list and watch pods (field and
label selectors, resourceVersion, timeoutSeconds, allowWatchBookmarks), read
and list pods of a namespace, read and list nodes, list and read Services. Watches behave as the real
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
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from ..trust import create_new

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
    for term in filter(None, (t.strip() for t in selector.split(","))):
        k, v = term.replace("==", "=").split("=", 1)
        cur: Any = obj
        for part in k.split("."):
            cur = cur.get(part, {}) if isinstance(cur, dict) else {}
        if (cur if isinstance(cur, str) else "") != v:
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


class KubeAPI:
    """The server's state: pods and nodes, with a resourceVersion and an event log for watches."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], Obj] = {}
        self.nodes: dict[str, Obj] = {}
        self.services: dict[tuple[str, str], Obj] = {}
        self.rv = 1
        self.log: list[tuple[int, str, Obj]] = []   # (resourceVersion, type, object)
        self.cond = threading.Condition()
        self.token = secrets.token_hex(16)
        # Who the tokens are (as TokenReview names them) and what RBAC lets them do
        # (as SubjectAccessReview answers): the agent's own token is its service
        # account, bound to system:auth-delegator (it may create both reviews).
        self.agent: Obj = {"username": AGENT_USER, "uid": str(uuid.uuid4()),
                           "groups": ["system:serviceaccounts", "system:authenticated"]}
        self.users: dict[str, Obj] = {}     # other tokens (add_user); the agent's is self.token
        self.grants: set[tuple[str, str, str, str, str]] = {
            (AGENT_USER, "create", "tokenreviews", "", "*"),
            (AGENT_USER, "create", "subjectaccessreviews", "", "*")}
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

    def grant(self, username: str, verb: str, resource: str, subresource: str = "", name: str = "*") -> None:
        with self.cond:
            self.grants.add((username, verb, resource, subresource, name))

    def revoke(self, username: str, verb: str, resource: str, subresource: str = "", name: str = "*") -> None:
        with self.cond:
            self.grants.discard((username, verb, resource, subresource, name))

    def allowed(self, username: str, verb: str, resource: str, subresource: str = "", name: str = "") -> bool:
        with self.cond:
            return any((username, verb, resource, subresource, n) in self.grants for n in (name, "*"))

    # -- state changes (as the control plane would make them) --
    def _bump(self, kind: str, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.log.append((self.rv, kind, copy.deepcopy(obj)))
        if len(self.log) > MAX_LOG:
            del self.log[:len(self.log) - MAX_LOG]
        self.cond.notify_all()

    def events_since(self, since: int) -> list[tuple[int, str, Obj]] | None:
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
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                api.requests.append("POST " + self.path)
                user = self._user()
                if user is None:
                    return self._status(401, "Unauthorized", "Unauthorized")
                kinds = {"/apis/authentication.k8s.io/v1/tokenreviews": ("TokenReview", "tokenreviews"),
                         "/apis/authorization.k8s.io/v1/subjectaccessreviews":
                             ("SubjectAccessReview", "subjectaccessreviews")}
                path = urlparse(self.path).path
                if path not in kinds:
                    return self._status(404, "NotFound", "the server could not find the requested resource")
                kind, resource = kinds[path]
                if not api.allowed(user["username"], "create", resource):
                    return self._status(403, "Forbidden", f'User "{user["username"]}" cannot create resource '
                                                          f'"{resource}" at the cluster scope')
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    review = json.loads(self.rfile.read(min(length, 1 << 20)))
                    spec = review["spec"]
                except (ValueError, KeyError, TypeError):
                    return self._status(400, "BadRequest", f"not a {kind}")
                with api.cond:
                    api.reviews[kind] += 1
                if kind == "TokenReview":
                    who = api.user_of(str(spec.get("token")))
                    status: Obj = {"authenticated": True, "user": who} if who else {"authenticated": False}
                else:
                    attrs = spec.get("resourceAttributes") or {}
                    ok = api.allowed(str(spec.get("user")), str(attrs.get("verb")), str(attrs.get("resource")),
                                     str(attrs.get("subresource") or ""), str(attrs.get("name") or ""))
                    status = {"allowed": ok, **({} if ok else {"reason": "no RBAC policy matched"})}
                review["status"] = status
                return self._json(201, review)

            def _user(self) -> Obj | None:
                # The scheme in any case, as the API server takes it (RFC 7235 2.1): the client's
                # in-cluster configuration sends "bearer".
                scheme, _, token = (self.headers.get("Authorization") or "").strip().partition(" ")
                return api.user_of(token.strip()) if scheme.lower() == "bearer" else None

            def do_GET(self) -> None:
                api.requests.append(self.path)
                user = self._user()
                if user is None or user["username"] != AGENT_USER:
                    return self._status(401, "Unauthorized", "Unauthorized")
                url = urlparse(self.path)
                q = {k: v[-1] for k, v in parse_qs(url.query).items()}
                parts = [p for p in url.path.split("/") if p]
                if parts[:2] != ["api", "v1"]:
                    return self._status(404, "NotFound", "the server could not find the requested resource")
                rest = parts[2:]
                if rest == ["pods"]:
                    return self._watch(q, None) if q.get("watch") in ("true", "True", "1") else self._list(q, None)
                if len(rest) == 3 and rest[0] == "namespaces" and rest[2] == "pods":
                    return self._list(q, rest[1])
                if len(rest) == 4 and rest[0] == "namespaces" and rest[2] == "pods":
                    with api.cond:
                        pod = api.pods.get((rest[1], rest[3]))
                    if pod is None:
                        return self._status(404, "NotFound", f'pods "{rest[3]}" not found')
                    return self._json(200, pod)
                if rest == ["services"] or (len(rest) == 3 and rest[0] == "namespaces" and rest[2] == "services"):
                    ls = q.get("labelSelector", "")
                    with api.cond:
                        items = copy.deepcopy([s for (ns, _), s in sorted(api.services.items())
                                               if (len(rest) == 1 or ns == rest[1])
                                               and _labels_match(s["metadata"].get("labels", {}), ls)])
                        rv = api.rv
                    return self._json(200, {"kind": "ServiceList", "apiVersion": "v1",
                                            "metadata": {"resourceVersion": str(rv)}, "items": items})
                if len(rest) == 4 and rest[0] == "namespaces" and rest[2] == "services":
                    with api.cond:
                        svc = copy.deepcopy(api.services.get((rest[1], rest[3])))
                    if svc is None:
                        return self._status(404, "NotFound", f'services "{rest[3]}" not found')
                    return self._json(200, svc)
                if rest == ["nodes"]:
                    with api.cond:
                        items = list(api.nodes.values())
                    return self._json(200, {"kind": "NodeList", "apiVersion": "v1",
                                            "metadata": {"resourceVersion": str(api.rv)}, "items": items})
                if len(rest) == 2 and rest[0] == "nodes":
                    node = api.nodes.get(rest[1])
                    if node is None:
                        return self._status(404, "NotFound", f'nodes "{rest[1]}" not found')
                    return self._json(200, node)
                return self._status(404, "NotFound", "the server could not find the requested resource")

            def _matching(self, q: dict[str, str], namespace: str | None) -> list[Obj]:
                fs, ls = q.get("fieldSelector", ""), q.get("labelSelector", "")
                return [p for (ns, _), p in sorted(api.pods.items())
                        if (namespace is None or ns == namespace)
                        and _fields_match(p, fs) and _labels_match(p["metadata"].get("labels", {}), ls)]

            def _list(self, q: dict[str, str], namespace: str | None) -> None:
                with api.cond:
                    items = copy.deepcopy(self._matching(q, namespace))
                    rv = api.rv
                self._json(200, {"kind": "PodList", "apiVersion": "v1",
                                 "metadata": {"resourceVersion": str(rv)}, "items": items})

            def _watch(self, q: dict[str, str], namespace: str | None) -> None:
                fs, ls = q.get("fieldSelector", ""), q.get("labelSelector", "")
                rv_text = q.get("resourceVersion") or "0"
                if not rv_text.isdigit():
                    return self._status(400, "BadRequest", f"invalid resourceVersion {rv_text!r}")
                since = int(rv_text)
                bookmarks = q.get("allowWatchBookmarks") in ("true", "True", "1")
                try:
                    timeout = float(q.get("timeoutSeconds", 60))
                except ValueError:
                    return self._status(400, "BadRequest", "invalid timeoutSeconds")
                deadline = time.monotonic() + min(max(timeout, 0.0), 300)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    if since == 0:      # the real server's "any version": the current state first
                        with api.cond:
                            items = copy.deepcopy(self._matching(q, namespace))
                            since = api.rv
                        for obj in items:
                            self._event("ADDED", obj)
                    next_mark = time.monotonic() + BOOKMARK_SECONDS
                    while time.monotonic() < deadline:
                        with api.cond:
                            new = api.events_since(since)
                            if new is None:
                                self._event("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                                      "status": "Failure", "reason": "Expired", "code": 410,
                                                      "message": f"too old resource version: {since} "
                                                                 f"({api.log[0][0] - 1})"})
                                break
                            if not new:
                                api.cond.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                                current = api.rv
                            else:
                                current = new[-1][0]
                        for rv, kind, obj in new:
                            since = rv
                            if _fields_match(obj, fs) and _labels_match(obj["metadata"].get("labels", {}), ls):
                                self._event(kind, obj)
                        if bookmarks and (time.monotonic() >= next_mark or time.monotonic() >= deadline):
                            since = max(since, current) if not new else since
                            self._event("BOOKMARK", {"kind": "Pod", "apiVersion": "v1",
                                                     "metadata": {"resourceVersion": str(since)}})
                            next_mark = time.monotonic() + BOOKMARK_SECONDS
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _event(self, kind: str, obj: Obj) -> None:
                self._chunk(json.dumps({"type": kind, "object": obj}) + "\n")

            def _chunk(self, text: str) -> None:
                data = text.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _json(self, code: int, obj: Obj) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._json(code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "message": message, "reason": reason, "code": code})

        self._server = _Server((LISTEN_ADDRESS, port), Handler)
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
