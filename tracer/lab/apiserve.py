"""apiserve: the lab API server's HTTP side: routes, authentication, RBAC, and the verbs.

Every request is authenticated (a bearer token: 401 otherwise) and authorized as the real
API server's RBAC would (apirbac; 403 with the real message) before anything is read. Paths:
/api/v1 pods, services, nodes and events; /apis/<group>/<version> of the CRDs in deploy/crds;
the two reviews. Bodies over the API server's limit (3 MiB,
apiserver/pkg/server/config.go: MaxRequestBodyBytes) get 413 before they are read.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

from .apirbac import forbidden_message
from .apistore import EVENTS, APIError

if TYPE_CHECKING:
    from .api import KubeAPI

Obj = dict[str, Any]
MAX_BODY = 3 * 1024 * 1024
DRAIN_LIMIT = 64 * 1024 * 1024
REVIEWS = {("authentication.k8s.io", "tokenreviews"): "TokenReview",
           ("authorization.k8s.io", "subjectaccessreviews"): "SubjectAccessReview"}
CORE_READ_ONLY = {"pods": "Pod", "services": "Service", "nodes": "Node"}


@dataclass(frozen=True)
class Request:
    """What RBAC sees of a request (apiserver/pkg/endpoints/request/requestinfo.go)."""

    verb: str
    group: str
    version: str
    resource: str
    subresource: str
    namespace: str
    name: str


def parse_path(method: str, path: str, query: dict[str, str]) -> Request | None:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = ""
    if len(rest) >= 2 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else ""
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "get")
    if method == "GET" and not name:
        verb = "watch" if query.get("watch") in ("true", "True", "1") else "list"
    return Request(verb, group, version, resource, sub, namespace, name)


def make_handler(api: KubeAPI) -> type[BaseHTTPRequestHandler]:
    from .api import _fields_match, _labels_match

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            api.requests.append(self.path)
            self._serve("GET")

        def do_POST(self) -> None:
            api.requests.append("POST " + self.path)
            self._serve("POST")

        def do_PUT(self) -> None:
            api.requests.append("PUT " + self.path)
            self._serve("PUT")

        def do_PATCH(self) -> None:
            api.requests.append("PATCH " + self.path)
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            api.requests.append("DELETE " + self.path)
            self._serve("DELETE")

        # -- the pipeline: authenticate, read the body, authorize, serve --
        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            user = self._user()
            if user is None:
                self._drain()
                return self._status(401, "Unauthorized", "Unauthorized")
            req = parse_path(method, url.path, q)
            if req is None:
                self._drain()
                return self._status(404, "NotFound", "the server could not find the requested resource")
            body: Any = None
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._drain()
                    return self._status(413, "RequestEntityTooLarge",
                                        f"Request entity too large: limit is {MAX_BODY}")
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return self._status(400, "BadRequest", "the request body is not JSON")
            username = str(user["username"])
            if not api.allowed(username, req.verb, req.resource, req.subresource, req.name,
                               group=req.group, namespace=req.namespace):
                return self._status(403, "Forbidden", forbidden_message(
                    username, req.verb, req.group, req.resource, req.subresource, req.namespace, req.name),
                    {k: v for k, v in (("name", req.name), ("group", req.group), ("kind", req.resource)) if v})
            try:
                self._route(req, q, body, username)
            except APIError as err:
                self._json(err.code, err.status())

        def _drain(self) -> None:
            """Read and drop a body we answer without, so that the client reads the answer
            rather than a reset; past DRAIN_LIMIT the connection is closed instead."""
            length = int(self.headers.get("Content-Length") or 0)
            if length > DRAIN_LIMIT:
                self.close_connection = True
                return
            while length > 0:
                chunk = self.rfile.read(min(length, 1 << 16))
                if not chunk:
                    break
                length -= len(chunk)

        def _user(self) -> Obj | None:
            # The scheme in any case, as the API server takes it (RFC 7235 2.1): the client's
            # in-cluster configuration sends "bearer".
            scheme, _, token = (self.headers.get("Authorization") or "").strip().partition(" ")
            return api.user_of(token.strip()) if scheme.lower() == "bearer" else None

        def _route(self, req: Request, q: dict[str, str], body: Any, user: str) -> None:
            if (req.group, req.resource) in REVIEWS and req.verb == "create" and not req.name:
                return self._review(REVIEWS[(req.group, req.resource)], body)
            if req.group == "" and req.resource in CORE_READ_ONLY and req.verb in ("get", "list", "watch"):
                return self._core(req, q)
            if req.group == "" and req.resource == "events":
                return self._objects(EVENTS, "Event", "v1", req, q, body, user)
            crd = api.store.crd(req.group, req.version, req.resource)
            if crd is not None and req.subresource in ("", *(("status",) if crd.status else ())):
                if not req.namespace and req.verb not in ("list", "watch"):
                    raise APIError(404, "NotFound", "the server could not find the requested resource")
                return self._objects(crd.resource, crd.kind, f"{crd.group}/{crd.version}", req, q, body, user)
            raise APIError(404, "NotFound", "the server could not find the requested resource")

        # -- writable objects: custom resources and events --
        def _objects(self, resource: str, kind: str, api_version: str, req: Request, q: dict[str, str],
                     body: Any, user: str) -> None:
            store, status = api.store, req.subresource == "status"
            if req.verb == "get":
                return self._json(200, store.get(resource, req.namespace, req.name))
            if req.verb in ("list", "watch"):
                def matching(ns: str | None = req.namespace or None) -> list[Obj]:
                    return [o for (n, _), o in sorted(store.objects[resource].items()) if ns is None or n == ns]
                if req.verb == "watch":
                    return self._watch(q, resource, req.namespace or None, matching, kind, api_version)
                return self._list(q, matching, kind + "List", api_version)
            if req.verb == "create":
                return self._json(201, store.create(resource, req.namespace, body, user))
            if req.verb == "update":
                return self._json(200, store.update(resource, req.namespace, req.name, body, user, status=status))
            if req.verb == "patch":
                content_type = self.headers.get("Content-Type") or ""
                return self._json(200, store.patch(resource, req.namespace, req.name, content_type, body, user,
                                                   status=status))
            if req.verb == "delete" and not status:
                options = body if isinstance(body, dict) else {}
                propagation = str(options.get("propagationPolicy") or q.get("propagationPolicy") or "Background")
                return self._json(200, store.delete(resource, req.namespace, req.name, user, propagation))
            raise APIError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

        # -- the read-only core resources --
        def _core(self, req: Request, q: dict[str, str]) -> None:
            if req.subresource:
                raise APIError(404, "NotFound", "the server could not find the requested resource")
            tables: dict[str, dict[Any, Obj]] = {"pods": api.pods, "services": api.services, "nodes": api.nodes}
            table = tables[req.resource]
            kind = CORE_READ_ONLY[req.resource]
            if req.verb == "get":
                key: Any = req.name if req.resource == "nodes" else (req.namespace, req.name)
                with api.cond:
                    obj = copy.deepcopy(table.get(key))
                if obj is None:
                    raise APIError(404, "NotFound", f'{req.resource} "{req.name}" not found',
                                   {"name": req.name, "kind": req.resource})
                return self._json(200, obj)

            def matching(ns: str | None = req.namespace or None) -> list[Obj]:
                items = sorted(table.items()) if req.resource != "nodes" else [((None, k), v) for k, v in
                                                                               table.items()]
                return [o for (n, _), o in items if ns is None or n == ns]
            if req.verb == "watch":
                if req.resource != "pods":
                    raise APIError(405, "MethodNotAllowed", "the lab watches pods and custom resources only")
                return self._watch(q, "pods", req.namespace or None, matching, kind, "v1")
            return self._list(q, matching, kind + "List", "v1")

        def _selected(self, q: dict[str, str], objs: list[Obj]) -> list[Obj]:
            fs, ls = q.get("fieldSelector", ""), q.get("labelSelector", "")
            return [o for o in objs if _fields_match(o, fs) and _labels_match(o["metadata"].get("labels") or {}, ls)]

        def _list(self, q: dict[str, str], matching: Any, list_kind: str, api_version: str) -> None:
            # limit and continue as the real server pages a list (an offset here, opaque to clients)
            limit, start = q.get("limit", ""), q.get("continue", "0")
            first = int(start) if start.isdigit() else 0
            with api.cond:
                selected = self._selected(q, matching())
                end = first + int(limit) if limit.isdigit() and int(limit) > 0 else len(selected)
                items = copy.deepcopy(selected[first:end])
                rv = api.rv
            meta = {"resourceVersion": str(rv), **({"continue": str(end)} if end < len(selected) else {})}
            self._json(200, {"kind": list_kind, "apiVersion": api_version, "metadata": meta, "items": items})

        def _watch(self, q: dict[str, str], resource: str, namespace: str | None, matching: Any,
                   kind: str, api_version: str) -> None:
            from .api import BOOKMARK_SECONDS

            fs, ls = q.get("fieldSelector", ""), q.get("labelSelector", "")
            rv_text = q.get("resourceVersion") or "0"
            if not rv_text.isdigit():
                raise APIError(400, "BadRequest", f"invalid resourceVersion {rv_text!r}")
            since = int(rv_text)
            bookmarks = q.get("allowWatchBookmarks") in ("true", "True", "1")
            try:
                timeout = float(q.get("timeoutSeconds", 60))
            except ValueError:
                raise APIError(400, "BadRequest", "invalid timeoutSeconds") from None
            deadline = time.monotonic() + min(max(timeout, 0.0), 300)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                if since == 0:      # the real server's "any version": the current state first
                    with api.cond:
                        items = copy.deepcopy(self._selected(q, matching()))
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
                            # Everything up to now was sent: a bookmark may say so. Read after the
                            # wait, it would skip what was written meanwhile.
                            current = api.rv
                            api.cond.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                        else:
                            current = new[-1][0]
                    for rv, event, obj, res in new:
                        since = rv
                        if (res == resource and (namespace is None or obj["metadata"].get("namespace") == namespace)
                                and _fields_match(obj, fs) and _labels_match(obj["metadata"].get("labels") or {}, ls)):
                            self._event(event, obj)
                    if bookmarks and (time.monotonic() >= next_mark or time.monotonic() >= deadline):
                        since = max(since, current) if not new else since
                        self._event("BOOKMARK", {"kind": kind, "apiVersion": api_version,
                                                 "metadata": {"resourceVersion": str(since)}})
                        next_mark = time.monotonic() + BOOKMARK_SECONDS
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass

        # -- the reviews --
        def _review(self, kind: str, review: Any) -> None:
            if not isinstance(review, dict) or not isinstance(review.get("spec"), dict):
                raise APIError(400, "BadRequest", f"not a {kind}")
            spec = review["spec"]
            with api.cond:
                api.reviews[kind] += 1
            if kind == "TokenReview":
                who = api.user_of(str(spec.get("token")))
                status: Obj = {"authenticated": True, "user": who} if who else {"authenticated": False}
            else:
                attrs = spec.get("resourceAttributes") if isinstance(spec.get("resourceAttributes"), dict) else {}
                ok = api.allowed(str(spec.get("user")), str(attrs.get("verb")), str(attrs.get("resource")),
                                 str(attrs.get("subresource") or ""), str(attrs.get("name") or ""),
                                 group=str(attrs.get("group") or ""), namespace=str(attrs.get("namespace") or ""))
                status = {"allowed": ok, **({} if ok else {"reason": "no RBAC policy matched"})}
            review["status"] = status
            self._json(201, review)

        # -- the wire --
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

        def _status(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
            self._json(code, APIError(code, reason, message, details).status())

    return Handler
