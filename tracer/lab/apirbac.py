"""apirbac: the lab API server's authorizer, RBAC as the real one evaluates it.

Rules are (verbs, apiGroups, resources, resourceNames) as in a ClusterRole; a binding gives a
user a role's rules cluster-wide (ClusterRoleBinding) or in one namespace (RoleBinding). The
roles come from deploy/rbac.yaml itself (bind_cluster_role), so that the lab refuses exactly what
the shipped manifests refuse. Matching follows plugin/pkg/auth/authorizer/rbac/rbac.go
(RuleAllows): a resource with a subresource matches "resource/subresource" or "*/subresource"
or "*"; resourceNames, when set, match only requests that name an object (so never list,
watch or create).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RBAC_YAML = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"
ALL = "*"

# Kubernetes' own roles the deploy/ manifests bind (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go).
BUILTIN_ROLES: dict[str, list[dict[str, Any]]] = {
    "system:auth-delegator": [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ],
}


@dataclass(frozen=True)
class Rule:
    verbs: frozenset[str]
    api_groups: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, rule: dict[str, Any]) -> Rule:
        def strings(key: str) -> frozenset[str]:
            value = rule.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"rule {key}: a list of strings")
            return frozenset(value)
        return cls(strings("verbs"), strings("apiGroups"), strings("resources"), strings("resourceNames"))

    def allows(self, verb: str, group: str, resource: str, subresource: str, name: str) -> bool:
        combined = f"{resource}/{subresource}" if subresource else resource
        if not (ALL in self.verbs or verb in self.verbs):
            return False
        if not (ALL in self.api_groups or group in self.api_groups):
            return False
        if not (ALL in self.resources or combined in self.resources
                or (subresource and f"*/{subresource}" in self.resources)):
            return False
        return not self.resource_names or name in self.resource_names


@dataclass(frozen=True)
class Binding:
    user: str
    rule: Rule
    namespace: str | None          # None: cluster-wide (a ClusterRoleBinding)


def cluster_roles(path: Path = RBAC_YAML) -> dict[str, list[Rule]]:
    """The ClusterRoles of a manifest (and Kubernetes' built-in ones it binds), by name."""
    roles = {name: [Rule.parse(r) for r in rules] for name, rules in BUILTIN_ROLES.items()}
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "ClusterRole":
            roles[str(doc["metadata"]["name"])] = [Rule.parse(r) for r in doc.get("rules") or []]
    return roles


def forbidden_message(user: str, verb: str, group: str, resource: str, subresource: str,
                      namespace: str, name: str) -> str:
    """The 403's message: NewForbidden (apimachinery/pkg/api/errors/errors.go) around the
    authorizer's reason (apiserver/pkg/endpoints/handlers/responsewriters/errors.go, forbiddenMessage)."""
    combined = f"{resource}/{subresource}" if subresource else resource
    where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    reason = f'User "{user}" cannot {verb} resource "{combined}" in API group "{group}" {where}'
    qualified = f"{resource}.{group}" if group else resource
    return f'{qualified} "{name}" is forbidden: {reason}' if name else f"{qualified} is forbidden: {reason}"


class Authorizer:
    """Who may do what; thread-safe."""

    def __init__(self, rbac_yaml: Path = RBAC_YAML) -> None:
        self.rbac_yaml = rbac_yaml
        self._bindings: set[Binding] = set()
        self._lock = threading.Lock()

    def bind_cluster_role(self, user: str, role: str, namespace: str | None = None) -> None:
        """Bind a ClusterRole of deploy/rbac.yaml (or system:auth-delegator) to user: cluster-wide,
        or with a namespace as a RoleBinding there does. KeyError if there is no such role."""
        rules = cluster_roles(self.rbac_yaml)[role]
        with self._lock:
            self._bindings.update(Binding(user, r, namespace) for r in rules)

    def unbind_cluster_role(self, user: str, role: str, namespace: str | None = None) -> None:
        rules = cluster_roles(self.rbac_yaml)[role]
        with self._lock:
            self._bindings.difference_update(Binding(user, r, namespace) for r in rules)

    def grant(self, user: str, verb: str, resource: str, subresource: str = "", name: str = ALL, *,
              group: str = "", namespace: str | None = None) -> None:
        """One rule (name "*": any object), cluster-wide or in one namespace."""
        with self._lock:
            self._bindings.add(Binding(user, self._rule(verb, resource, subresource, name, group), namespace))

    def revoke(self, user: str, verb: str, resource: str, subresource: str = "", name: str = ALL, *,
               group: str = "", namespace: str | None = None) -> None:
        with self._lock:
            self._bindings.discard(Binding(user, self._rule(verb, resource, subresource, name, group), namespace))

    @staticmethod
    def _rule(verb: str, resource: str, subresource: str, name: str, group: str) -> Rule:
        combined = f"{resource}/{subresource}" if subresource else resource
        return Rule(frozenset([verb]), frozenset([group]), frozenset([combined]),
                    frozenset() if name == ALL else frozenset([name]))

    def allowed(self, user: str, verb: str, resource: str, subresource: str = "", name: str = "", *,
                group: str = "", namespace: str = "") -> bool:
        with self._lock:
            return any(b.user == user and (b.namespace is None or b.namespace == namespace)
                       and b.rule.allows(verb, group, resource, subresource, name) for b in self._bindings)
