"""apistore: the lab API server's writable objects: custom resources (deploy/crds) and core/v1 Events.

What the real registry does on each write (apiserver/pkg/registry/generic/registry/store.go and
apiextensions-apiserver/pkg/registry/customresource/strategy.go): create sets uid,
creationTimestamp, resourceVersion and generation (metadata.generateName names it) and refuses
an existing name (409 AlreadyExists); update needs the object's resourceVersion (custom
resources allow no unconditional update) and refuses a stale one (409 Conflict); generation
grows when anything but metadata and status changes; with the status subresource, writes to the
object keep the stored status and writes to /status change nothing else. Objects are pruned,
defaulted and validated against the CRD (422 Invalid), and one that etcd would refuse (over its
1.5 MiB request limit) gets etcd's error. Deleting an object lets the garbage collector delete,
in the background, every object all of whose ownerReferences name objects that no longer exist
(pkg/controller/garbagecollector: a dependent with a live owner stays).

Called with the KubeAPI's condition held where it says so; the counters (writes per user and
verb, largest object per resource in JSON bytes) are what the benchmarks report.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

from .apischema import CRD, Cause, load_crds, prune_and_default, validate

if TYPE_CHECKING:
    from .api import KubeAPI

Obj = dict[str, Any]

EVENTS = "events"                      # the resource key of core/v1 events
ETCD_MAX_REQUEST = 1536 * 1024         # etcd's --max-request-bytes default (server/embed/config.go)
GC_DELAY = 0.05                        # the garbage collector's lag after a delete, seconds
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"   # apiserver/pkg/storage/names/generate.go


def _now() -> str:
    from datetime import UTC, datetime
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class APIError(Exception):
    """A Status the server answers with."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        out: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            out["details"] = self.details
        if not self.reason:
            del out["reason"]
        return out


def _invalid(kind: str, group: str, name: str, causes: list[Cause]) -> APIError:
    """422 as apimachinery/pkg/api/errors.NewInvalid writes it."""
    texts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    qualified = f"{kind}.{group}" if group else kind
    return APIError(422, "Invalid", f'{qualified} "{name}" is invalid: {joined}',
                    {"name": name, "group": group, "kind": kind,
                     "causes": [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes]})


# ---- patches ----

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch as far as Events need one: no field of an Event has a patch
    strategy other than replace (k8s.io/api/core/v1 types.go), so it is a merge patch; the
    directives ($patch, $retainKeys, $setElementOrder/...) are refused rather than misread."""
    if isinstance(patch, dict):
        for key, value in patch.items():
            if key.startswith("$"):
                raise APIError(400, "BadRequest", f"the lab does not apply strategic merge directive {key}")
            strategic_merge_patch(None, value)
    return merge_patch(target, patch) if target is not None else patch


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise APIError(422, "Invalid", f"invalid JSON pointer {path[:100]!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise APIError(422, "Invalid", f"jsonpatch: path /{'/'.join(parts)} does not exist")
    return cur, parts[-1]


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise APIError(400, "BadRequest", "a json patch is a list of operations")
    doc = copy.deepcopy(doc)

    def get(parts: list[str]) -> Any:
        if not parts:
            return doc
        parent, key = _parent(doc, parts)
        if isinstance(parent, dict) and key in parent:
            return parent[key]
        if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
            return parent[int(key)]
        raise APIError(422, "Invalid", f"jsonpatch: path /{'/'.join(parts)} does not exist")

    def put(parts: list[str], value: Any, replace: bool) -> None:
        nonlocal doc
        if not parts:
            doc = value
            return
        parent, key = _parent(doc, parts)
        if isinstance(parent, dict):
            if replace and key not in parent:
                raise APIError(422, "Invalid", f"jsonpatch replace: missing key /{'/'.join(parts)}")
            parent[key] = value
        elif isinstance(parent, list):
            i = len(parent) if key == "-" else int(key) if key.isdigit() else -1
            if not 0 <= i <= len(parent) - (1 if replace else 0):
                raise APIError(422, "Invalid", f"jsonpatch: index out of range /{'/'.join(parts)}")
            if replace:
                parent[i] = value
            else:
                parent.insert(i, value)
        else:
            raise APIError(422, "Invalid", f"jsonpatch: path /{'/'.join(parts)} is not in a container")

    def remove(parts: list[str]) -> Any:
        value = get(parts)
        parent, key = _parent(doc, parts)
        if isinstance(parent, dict):
            del parent[key]
        else:
            del parent[int(key)]
        return value

    for op in ops:
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise APIError(400, "BadRequest", "a json patch operation needs op and path")
        name, parts = op.get("op"), _pointer(op["path"])
        if name in ("add", "replace"):
            put(parts, copy.deepcopy(op.get("value")), name == "replace")
        elif name == "remove":
            remove(parts)
        elif name in ("move", "copy"):
            src = _pointer(str(op.get("from", "")))
            value = remove(src) if name == "move" else copy.deepcopy(get(src))
            put(parts, value, False)
        elif name == "test":
            if get(parts) != op.get("value"):
                raise APIError(422, "Invalid", f"jsonpatch test operation does not apply: {op['path'][:100]}")
        else:
            raise APIError(400, "BadRequest", f"unexpected json patch operation {str(name)[:40]!r}")
    return doc


MERGE, JSON_PATCH, STRATEGIC = ("application/merge-patch+json", "application/json-patch+json",
                                "application/strategic-merge-patch+json")


def apply_patch(content_type: str, doc: Obj, patch: Any, strategic_ok: bool) -> Any:
    kinds = [JSON_PATCH, MERGE] + ([STRATEGIC] if strategic_ok else [])
    kind = content_type.split(";")[0].strip().lower()
    if kind not in kinds:
        raise APIError(415, "UnsupportedMediaType",
                       f"the body of the request was in an unknown format - accepted media types include: "
                       f"{', '.join(kinds)}, application/apply-patch+yaml")
    if kind == JSON_PATCH:
        return json_patch(doc, patch)
    if not isinstance(patch, dict):
        raise APIError(400, "BadRequest", "a merge patch is a JSON object")
    return merge_patch(doc, patch) if kind == MERGE else strategic_merge_patch(doc, patch)


# ---- the store ----

class Store:
    """Custom objects and Events of one KubeAPI; its rv, log and condition are shared with pods."""

    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self.crds = {crd.resource: crd for crd in load_crds().values()}
        self.objects: dict[str, dict[tuple[str, str], Obj]] = {key: {} for key in [*self.crds, EVENTS]}
        self.writes: Counter[tuple[str, str]] = Counter()       # (user, verb) -> writes that succeeded
        self.largest: dict[str, int] = {}                      # resource -> bytes of its largest object

    def crd(self, group: str, version: str, plural: str) -> CRD | None:
        crd = self.crds.get(f"{group}/{plural}")
        return crd if crd is not None and crd.version == version else None

    # -- helpers, called with cond held --
    def _names(self, resource: str) -> tuple[str, str, str]:
        """(group, kind for messages, qualified resource)."""
        crd = self.crds.get(resource)
        if crd is None:
            return "", "Event", "events"
        return crd.group, crd.kind, f"{crd.plural}.{crd.group}"

    def _not_found(self, resource: str, name: str) -> APIError:
        group, _, qualified = self._names(resource)
        return APIError(404, "NotFound", f'{qualified} "{name}" not found',
                        {"name": name, "group": group, "kind": resource.rpartition("/")[2]})

    def _store(self, resource: str, obj: Obj, user: str, verb: str, event: str) -> Obj:
        obj["metadata"]["resourceVersion"] = str(self.api.rv + 1)     # what _bump gives it
        size = len(json.dumps(obj, separators=(",", ":")))
        if size > ETCD_MAX_REQUEST:
            # What the API server passes on from etcd (a 500 without a reason:
            # kubernetes/kubernetes#112152); its own 3 MiB body limit is checked before.
            raise APIError(500, "", "etcdserver: request is too large")
        meta = obj["metadata"]
        self.objects[resource][(meta["namespace"], meta["name"])] = obj
        self.largest[resource] = max(self.largest.get(resource, 0), size)
        self.writes[(user, verb)] += 1
        self.api._bump(event, obj, resource)
        return copy.deepcopy(obj)

    def _prepare(self, resource: str, obj: Obj) -> Obj:
        crd = self.crds.get(resource)
        if crd is None:
            return obj
        obj = prune_and_default(crd.schema, obj)
        causes = validate(crd, obj)
        if causes:
            raise _invalid(crd.kind, crd.group, str(obj.get("metadata", {}).get("name", "")), causes)
        return obj

    # -- verbs, each takes cond itself --
    def get(self, resource: str, namespace: str, name: str) -> Obj:
        with self.api.cond:
            obj = self.objects[resource].get((namespace, name))
            if obj is None:
                raise self._not_found(resource, name)
            return copy.deepcopy(obj)

    def create(self, resource: str, namespace: str, body: Any, user: str) -> Obj:
        if not isinstance(body, dict):
            raise APIError(400, "BadRequest", "the request body is not an object")
        obj = copy.deepcopy(body)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if meta.get("namespace", namespace) != namespace:
            raise APIError(400, "BadRequest",
                           "the namespace of the provided object does not match the namespace sent on the request")
        crd = self.crds.get(resource)
        if crd is not None and crd.status:
            obj.pop("status", None)
        if not meta.get("name") and isinstance(meta.get("generateName"), str):
            meta["name"] = meta["generateName"] + "".join(secrets.choice(_NAME_CHARS) for _ in range(5))
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "managedFields"):
            meta.pop(key, None)
        meta.update({"namespace": namespace, "uid": str(uuid.uuid4()), "creationTimestamp": _now(), "generation": 1})
        if crd is not None:
            obj["apiVersion"], obj["kind"] = f"{crd.group}/{crd.version}", crd.kind
        obj = self._prepare(resource, obj)
        if resource == EVENTS and not meta.get("name"):
            raise _invalid("Event", "", "", [Cause("FieldValueRequired", "metadata.name",
                                                   "Required value: name or generateName is required")])
        with self.api.cond:
            if (namespace, meta["name"]) in self.objects[resource]:
                group, _, qualified = self._names(resource)
                raise APIError(409, "AlreadyExists", f'{qualified} "{meta["name"]}" already exists',
                               {"name": meta["name"], "group": group, "kind": resource.rpartition("/")[2]})
            return self._store(resource, obj, user, "create", "ADDED")

    def update(self, resource: str, namespace: str, name: str, body: Any, user: str, *,
               status: bool = False, verb: str = "update") -> Obj:
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise APIError(400, "BadRequest", "the request body is not an object with metadata")
        crd = self.crds.get(resource)
        group, kind, qualified = self._names(resource)
        if body["metadata"].get("name", name) != name:
            raise APIError(400, "BadRequest", "the name of the object does not match the name on the URL")
        with self.api.cond:
            old = self.objects[resource].get((namespace, name))
            if old is None:
                raise self._not_found(resource, name)
            rv = body["metadata"].get("resourceVersion")
            if not rv and crd is not None:
                raise _invalid(kind, group, name, [Cause("FieldValueInvalid", "metadata.resourceVersion",
                                                         "Invalid value: 0x0: must be specified for an update")])
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise APIError(409, "Conflict",
                               f'Operation cannot be fulfilled on {qualified} "{name}": the object has been '
                               "modified; please apply your changes to the latest version and try again",
                               {"name": name, "group": group, "kind": resource.rpartition("/")[2]})
            new = copy.deepcopy(body)
            if status:           # /status: only status changes
                new = {**copy.deepcopy(old), "status": new.get("status")}
                if new["status"] is None:
                    del new["status"]
            elif crd is not None and crd.status:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
            meta = new["metadata"]
            for key in ("uid", "creationTimestamp", "namespace", "name", "generation"):
                meta[key] = old["metadata"].get(key)
            if "generateName" in old["metadata"]:
                meta["generateName"] = old["metadata"]["generateName"]
            if crd is not None:
                new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
            new = self._prepare(resource, new)
            ignored = ("metadata", "status") if crd is not None and crd.status else ("metadata",)
            if {k: v for k, v in new.items() if k not in ignored} != {k: v for k, v in old.items() if k not in ignored}:
                new["metadata"]["generation"] = int(old["metadata"].get("generation") or 1) + 1
            return self._store(resource, new, user, verb, "MODIFIED")

    def patch(self, resource: str, namespace: str, name: str, content_type: str, patch: Any, user: str, *,
              status: bool = False) -> Obj:
        with self.api.cond:
            old = self.objects[resource].get((namespace, name))
            if old is None:
                raise self._not_found(resource, name)
            current = old["metadata"]["resourceVersion"]
            new = apply_patch(content_type, copy.deepcopy(old), patch, strategic_ok=resource == EVENTS)
            if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
                raise APIError(422, "Invalid", "the patched object has no metadata")
            # A resourceVersion the patch sets is a precondition, as in an update; none: the current one.
            if not new["metadata"].get("resourceVersion"):
                new["metadata"]["resourceVersion"] = current
            return self.update(resource, namespace, name, new, user, status=status, verb="patch")

    def delete(self, resource: str, namespace: str, name: str, user: str, propagation: str = "Background") -> Obj:
        with self.api.cond:
            obj = self.objects[resource].pop((namespace, name), None)
            if obj is None:
                raise self._not_found(resource, name)
            self.writes[(user, "delete")] += 1
            if propagation == "Orphan":
                self._orphan(obj["metadata"]["uid"])
            self.api._bump("DELETED", obj, resource)
        if propagation != "Orphan":
            threading.Thread(target=self._collect, daemon=True, name="lab-gc").start()
        return copy.deepcopy(obj)

    def _orphan(self, uid: str) -> None:
        for resource, objects in self.objects.items():
            for obj in objects.values():
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs if isinstance(r, dict)):
                    obj["metadata"]["ownerReferences"] = [r for r in refs if not (isinstance(r, dict)
                                                                                   and r.get("uid") == uid)]
                    self.api._bump("MODIFIED", obj, resource)

    def live_uids(self) -> set[str]:
        api = self.api
        everything = [*api.pods.values(), *api.nodes.values(), *api.services.values(),
                      *(o for objects in self.objects.values() for o in objects.values())]
        return {str(o["metadata"].get("uid")) for o in everything}

    def _collect(self) -> None:
        """The garbage collector: dependents whose owners are all gone, until none is left."""
        time.sleep(GC_DELAY)
        while True:
            with self.api.cond:
                live = self.live_uids()
                doomed = [(resource, key) for resource, objects in self.objects.items()
                          for key, obj in objects.items()
                          if (refs := [r for r in obj["metadata"].get("ownerReferences") or [] if isinstance(r, dict)])
                          and not any(str(r.get("uid")) in live for r in refs)]
                for resource, key in doomed:
                    obj = self.objects[resource].pop(key)
                    self.writes[("system:serviceaccount:kube-system:generic-garbage-collector", "delete")] += 1
                    self.api._bump("DELETED", obj, resource)
            if not doomed:
                return
