"""kubeapi: the plugin's calls to the API server, as the user, within apicall's limits.

The kubeconfig is found as kubectl finds it (--kubeconfig, else every file of
$KUBECONFIG merged with the first file's entries winning, else
~/.kube/config, else the pod's service account), the context chosen with
--context, and the namespace is the context's unless -n says otherwise
(k8s.io/client-go/tools/clientcmd/loader.go, client_config.go). Each call goes
through pods.apicall.Api: a deadline and a byte cap, one line when it fails.
A refusal says which verb on which resource was refused (a 403 from RBAC),
and which ClusterRole grants it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..captures.report import CAPTURE_LABEL, REPORT_PLURAL, label_value
from ..captures.spec import AGENTS_NAMESPACE, GROUP, PLURAL, VERSION
from ..errors import UserError
from ..pods import apitext
from ..pods.apicall import Api, Call, KubeUnavailable
from ..pods.kube import check_kubeconfig_trust
from ..pods.objects import api_field, list_field

CAPTURER_ROLE = "netdrop-capturer"          # deploy/rbac.yaml: what responders are bound to
AGENT_LABEL = "app.kubernetes.io/name=netdrop"  # deploy/daemonset.yaml's pod label
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ApiRefused(KubeUnavailable):
    """The API server answered with an error status (403, 409, 422, ...)."""

    def __init__(self, line: str, status: int, message: str) -> None:
        super().__init__(line)
        self.status = status
        self.message = message          # the Status object's message, made safe, one line


@dataclass(frozen=True)
class Target:
    """Where the plugin talks: the kubeconfig file, its context, the namespace it implies."""

    kubeconfig: str | None = None       # --kubeconfig
    context: str | None = None          # --context


def _status_message(body: object) -> str:
    """The message of a Status object in an error answer's body (any text)."""
    if not isinstance(body, str | bytes) or len(body) > 64 << 10:
        return ""
    try:
        status = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    return apitext.message(api_field(status, "message") or "", 300)


class PluginApi(Api):
    """The calls `kubectl netdrop` makes, through the official client."""

    def __init__(self, api_client: Any, namespace: str, source: str) -> None:
        from kubernetes import client

        super().__init__(api_client)
        self.namespace = namespace              # the context's (or default): -n's default
        self.source = source                    # which kubeconfig, for messages
        self.configuration = api_client.configuration
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def _failed(self, exc: BaseException, call: Call) -> KubeUnavailable:
        out = super()._failed(exc, call)
        status = getattr(exc, "status", None)
        if isinstance(exc, self._api_exception) and isinstance(status, int) and not call.why:
            return ApiRefused(str(out), status, _status_message(getattr(exc, "body", None)))
        return out

    def token(self) -> str:
        """The bearer token the client sends (the agents' file endpoint takes tokens); "" if none."""
        # The kubeconfig loader keeps it as "BearerToken", the in-cluster one as "authorization"
        # (kubernetes/config/kube_config.py, incluster_config.py); both read after any refresh.
        value = self.configuration.get_api_key_with_prefix("BearerToken", alias="authorization") or ""
        scheme, _, token = str(value).partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    # -- one call, its refusal said as the user's right that is missing --
    def _json(self, verb: str, resource: str, where: str | None, fn: Any, *args: Any, **kw: Any) -> Any:
        """One call of fn; `where`: the namespace it is about (None: the cluster), for a refusal's line."""
        try:
            return self.call_json(fn, *args, **kw)
        except ApiRefused as exc:
            raise refusal(exc, verb, resource, where) from None

    def _pages(self, verb: str, resource: str, where: str | None, fn: Any, **kw: Any) -> Iterator[Any]:
        try:
            yield from self.pages(fn, **kw)
        except ApiRefused as exc:
            raise refusal(exc, verb, resource, where) from None

    # -- captures --
    def create_capture(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = self._json("create", PLURAL, namespace, self.custom.create_namespaced_custom_object,
                         GROUP, VERSION, namespace, PLURAL, body)
        if not isinstance(obj, dict):
            raise not_served(self.server)
        return obj

    def get_capture(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self._json("get", PLURAL, namespace, self.custom.get_namespaced_custom_object,
                         GROUP, VERSION, namespace, PLURAL, name)
        return obj if isinstance(obj, dict) else None

    def delete_capture(self, namespace: str, name: str) -> bool:
        """False: there was no such capture. Its reports go with it (their ownerReferences)."""
        obj = self._json("delete", PLURAL, namespace, self.custom.delete_namespaced_custom_object,
                         GROUP, VERSION, namespace, PLURAL, name)
        return obj is not None

    def list_captures(self, namespace: str | None, selector: str | None = None) -> list[dict[str, Any]]:
        """namespace None: every namespace (-A)."""
        kw = {"label_selector": selector} if selector else {}
        if namespace is None:
            pages = self._pages("list", PLURAL, None, self.custom.list_cluster_custom_object,
                                group=GROUP, version=VERSION, plural=PLURAL, **kw)
        else:
            pages = self._pages("list", PLURAL, namespace, self.custom.list_namespaced_custom_object,
                                group=GROUP, version=VERSION, namespace=namespace, plural=PLURAL, **kw)
        return self._items(pages)

    def list_reports(self, namespace: str | None, capture: str | None = None) -> list[dict[str, Any]]:
        """The reports of one capture (by its label), or of every capture of a namespace (or all)."""
        kw = {"label_selector": f"{CAPTURE_LABEL}={label_value(capture)}"} if capture else {}
        if namespace is None:
            pages = self._pages("list", REPORT_PLURAL, None, self.custom.list_cluster_custom_object,
                                group=GROUP, version=VERSION, plural=REPORT_PLURAL, **kw)
        else:
            pages = self._pages("list", REPORT_PLURAL, namespace, self.custom.list_namespaced_custom_object,
                                group=GROUP, version=VERSION, namespace=namespace, plural=REPORT_PLURAL, **kw)
        return self._items(pages)

    def _items(self, pages: Iterator[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        found = False
        for page in pages:
            found = True
            out += (o for o in list_field(page, "items") if isinstance(o, dict))
        if not found:       # 404 for the whole resource: the CRDs are not installed
            raise not_served(self.server)
        return out

    # -- pods and nodes: which nodes are expected to report --
    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A pod by name, listed (netdrop-capturer may list pods, not get them)."""
        found = self.list_pods(namespace, field_selector=f"metadata.name={name}")
        return next((p for p in found if object_name(p) == name), None)

    def list_pods(self, namespace: str, selector: str | None = None,
                  field_selector: str | None = None) -> list[dict[str, Any]]:
        kw = {**({"label_selector": selector} if selector else {}),
              **({"field_selector": field_selector} if field_selector else {})}
        return [p for page in self._pages("list", "pods", namespace, self.core.list_namespaced_pod,
                                          namespace=namespace, **kw)
                for p in list_field(page, "items") if isinstance(p, dict)]

    def node_exists(self, name: str) -> bool:
        """Listed by name, as read_pod (netdrop-capturer may list nodes, not get them)."""
        return any(object_name(node) == name
                   for page in self._pages("list", "nodes", None, self.core.list_node,
                                           field_selector=f"metadata.name={name}")
                   for node in list_field(page, "items"))

    def node_names(self) -> list[str]:
        return [n for page in self._pages("list", "nodes", None, self.core.list_node)
                for node in list_field(page, "items") if (n := object_name(node))]

    def agent_pods(self, node: str) -> list[dict[str, Any]]:
        """The netdrop agent's pods on a node (the DaemonSet's label, its namespace)."""
        return self.list_pods(AGENTS_NAMESPACE, AGENT_LABEL, f"spec.nodeName={node}")


def object_name(obj: object) -> str | None:
    """An object's metadata.name if it is a name Kubernetes accepts (a DNS subdomain)."""
    name = api_field(api_field(obj, "metadata"), "name")
    return name if isinstance(name, str) and apitext.DNS_SUBDOMAIN.accepts(name) else None


def not_served(server: str) -> UserError:
    return UserError(f"the API server at {server} does not serve {PLURAL}.{GROUP}: install the CRDs "
                     f"(kubectl apply -f deploy/crds/)")


def refusal(exc: ApiRefused, verb: str, resource: str, namespace: str | None) -> UserError:
    """One line for an error answer: a 403 names the verb, the resource and the role that grants it."""
    full = f"{resource}.{GROUP}" if resource in (PLURAL, REPORT_PLURAL) else resource
    where = f"in namespace {namespace}" if namespace else "at the cluster scope"
    said = f" ({exc.message})" if exc.message else ""
    if exc.status == 403:
        return UserError(f"forbidden: you may not {verb} {full} {where}{said}; ask for the {CAPTURER_ROLE} "
                         f"ClusterRole (deploy/rbac.yaml), bound in that namespace")
    if exc.status == 401:
        return UserError(f"the API server did not accept your credentials{said}: log in again")
    return UserError(f"cannot {verb} {full} {where}: {exc}{said}")


# -- the kubeconfig, as kubectl reads it --

def _merged(paths: list[Path]) -> tuple[dict[str, Any], Path]:
    """The kubeconfigs of $KUBECONFIG merged: for each named entry the first file's wins,
    as does the first current-context (clientcmd's merge rules). Relative file names are
    resolved against the first file's directory."""
    doc: dict[str, Any] = {"clusters": [], "users": [], "contexts": []}
    seen: dict[str, set[str]] = {key: set() for key in doc}
    for path in paths:
        part = check_kubeconfig_trust(path)
        if not isinstance(part, dict):
            continue
        if not doc.get("current-context") and isinstance(part.get("current-context"), str):
            doc["current-context"] = part["current-context"]
        for key in ("clusters", "users", "contexts"):
            for entry in list_field(part, key):
                name = api_field(entry, "name")
                if isinstance(name, str) and name not in seen[key]:
                    seen[key].add(name)
                    doc[key].append(entry)
    return doc, paths[0].parent


def kubeconfig_paths(explicit: str | None, env: dict[str, str]) -> list[Path]:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise UserError(f"kubeconfig {explicit} does not exist")
        return [path]
    listed = [Path(p) for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    found = [p for p in listed if p.is_file()]
    if listed:
        return found
    home = Path(env.get("HOME") or Path.home()) / ".kube" / "config"
    return [home] if home.is_file() else []


def connect(target: Target, env: dict[str, str] | None = None) -> PluginApi:
    """A client for the user's kubeconfig and context; UserError with one line if there is none."""
    from kubernetes import client
    from kubernetes import config as kube_config

    config: Any = kube_config      # untyped
    env = dict(os.environ) if env is None else env
    paths = kubeconfig_paths(target.kubeconfig, env)
    configuration = client.Configuration()
    if not paths:
        if env.get("KUBERNETES_SERVICE_HOST") and not target.context:
            try:
                config.load_incluster_config(client_configuration=configuration)
                namespace = IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
            # ConfigException, OSError on the token files: no credentials to use
            except Exception as exc:  # noqa: BLE001
                raise UserError(f"cannot use the pod's service account: {_one_line(exc)}") from None
            return _api(configuration, namespace, "in-cluster service account")
        raise UserError("no kubeconfig: pass --kubeconfig, set $KUBECONFIG, or write ~/.kube/config")
    doc, base = _merged(paths)
    shown = os.pathsep.join(map(str, paths))
    contexts = {api_field(c, "name"): api_field(c, "context") for c in list_field(doc, "contexts")}
    context = target.context or doc.get("current-context")
    if not context:
        raise UserError(f"kubeconfig {shown} has no current context: pass --context "
                        f"(one of {', '.join(sorted(map(str, contexts))) or 'none'})")
    if context not in contexts:
        raise UserError(f"context {str(context)[:100]!r} is not in kubeconfig {shown} "
                        f"(contexts: {', '.join(sorted(map(str, contexts)))[:200] or 'none'})")
    try:
        loader = config.kube_config.KubeConfigLoader(config_dict=doc, active_context=context,
                                                     config_base_path=str(base))
        loader.load_and_set(configuration)
    # ConfigException, odd shapes (AttributeError, TypeError, ...): the file is the user's
    # to fix, and any of it ends in one line
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot use context {context} of kubeconfig {shown}: {_one_line(exc)}") from None
    namespace = api_field(contexts[context], "namespace")
    return _api(configuration, namespace if isinstance(namespace, str) and namespace else "default", shown)


def _api(configuration: Any, namespace: str, source: str) -> PluginApi:
    from kubernetes import client

    configuration.retries = 0       # each call is one request within its limits (apicall)
    return PluginApi(client.ApiClient(configuration), namespace, source)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
