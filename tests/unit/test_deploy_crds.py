"""deploy/'s CRDs, RBAC and krew manifest: valid Kubernetes objects (kubernetes-validate, strict),
structural schemas that take docs/captures.md's examples and refuse what breaks its bounds, and
RBAC that gives agents and responders exactly the rights docs/captures.md says."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tracer.explain.categories import BY_NAME
from tracer.lab.apirbac import Authorizer, cluster_roles
from tracer.lab.apischema import load_crds, prune_and_default, validate

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = kubernetes_validate.utils.latest_version()
AGENT = "system:serviceaccount:netdrop:netdrop"


def docs_examples() -> dict[str, dict]:
    """The YAML examples of docs/captures.md, by kind, with its abbreviations ({...}, [...],
    "ab12...") made into real values."""
    text = (ROOT / "docs" / "captures.md").read_text()
    out = {}
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        block = block.replace("labels: {...}", "labels: {netdrop.io/capture: web-drops, netdrop.io/node: node-1}")
        block = block.replace("ownerReferences: [...]", "ownerReferences: []")
        block = block.replace('"ab12..."', '"' + "ab" * 32 + '"')
        doc = yaml.safe_load(block)
        out[doc["kind"]] = doc
    return out


def check(kind: str, obj: dict) -> list[str]:
    [crd] = [c for c in load_crds().values() if c.kind == kind]
    return [f"{c.field}: {c.message}" for c in validate(crd, prune_and_default(crd.schema, copy.deepcopy(obj)))]


@pytest.mark.parametrize("path", [*sorted((DEPLOY / "crds").glob("*.yaml")), DEPLOY / "rbac.yaml",
                                  DEPLOY / "daemonset.yaml"], ids=lambda p: p.name)
def test_deploy_objects_are_valid_kubernetes_objects(path):
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, K8S, strict=True)


def test_kustomization_applies_every_crd():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    crds = {f"crds/{p.name}" for p in (DEPLOY / "crds").glob("*.yaml")}
    assert crds and crds <= set(kustomization["resources"])


def structural(schema: dict, where: str = "") -> list[str]:
    """Nodes without a type (apiextensions' structural schema rule), but where
    x-kubernetes-int-or-string or x-kubernetes-preserve-unknown-fields stands instead."""
    bad = [] if "type" in schema or schema.get("x-kubernetes-int-or-string") else [where or "<root>"]
    for key, sub in schema.get("properties", {}).items():
        bad += structural(sub, f"{where}.{key}")
    if isinstance(schema.get("items"), dict):
        bad += structural(schema["items"], f"{where}[]")
    return bad


def test_the_crds_are_structural_and_named_as_the_contract_says():
    crds = {c.plural: c for c in load_crds().values()}
    assert set(crds) == {"netdropcaptures", "netdropcapturereports"}
    assert crds["netdropcaptures"].short_names == ("ndcap",)
    assert crds["netdropcapturereports"].short_names == ("ndcaprep",)
    assert crds["netdropcaptures"].status and not crds["netdropcapturereports"].status
    assert all(c.group == "netdrop.io" and c.version == "v1alpha1" and c.namespaced for c in crds.values())
    for crd in crds.values():
        assert structural(crd.schema) == [], crd.plural


def test_the_category_enum_is_the_registrys():
    spec = load_crds()[("netdrop.io", "v1alpha1", "netdropcaptures")].schema["properties"]["spec"]
    assert spec["properties"]["filters"]["properties"]["categories"]["items"]["enum"] == list(BY_NAME)


def test_the_docs_examples_are_valid_once_one_of_pods_and_nodes_is_chosen():
    examples = docs_examples()
    cap = examples["NetdropCapture"]
    # The page shows pods and nodes side by side ("instead of pods"): as written it is refused.
    assert any("exactly one of pods and nodes" in e for e in check("NetdropCapture", cap))
    pods = copy.deepcopy(cap)
    del pods["spec"]["nodes"]
    assert check("NetdropCapture", pods) == []
    nodes = copy.deepcopy(cap)
    del nodes["spec"]["pods"]
    assert check("NetdropCapture", nodes) == []
    assert check("NetdropCaptureReport", examples["NetdropCaptureReport"]) == []


@pytest.mark.parametrize(("change", "field"), [
    ({"duration": "2h"}, "spec"), ({"duration": "0s"}, "spec"), ({"duration": "2 min"}, "spec.duration"),
    ({"since": "61m"}, "spec"), ({"filters": {"ports": [0]}}, "spec.filters.ports[0]"),
    ({"filters": {"ports": list(range(1, 18))}}, "spec.filters.ports"),
    ({"filters": {"categories": ["dns"]}}, "spec.filters.categories[0]"),
    ({"filters": {"ips": ["x" * 46]}}, "spec.filters.ips[0]"),
    ({"pods": {}}, "spec.pods"), ({"pods": {"names": ["a"] * 65}}, "spec.pods.names"),
])
def test_captures_outside_the_bounds_are_refused(change, field):
    cap = {"apiVersion": "netdrop.io/v1alpha1", "kind": "NetdropCapture",
           "metadata": {"name": "c", "namespace": "shop"},
           "spec": {"pods": {"selector": "app=web"}, "duration": "2m", **change}}
    errors = check("NetdropCapture", cap)
    assert errors and all(e.startswith(field + ":") for e in errors), errors


def test_a_report_at_every_bound_stays_far_below_etcds_limit():
    """Every list at its cap and every string at its limit at once: about 46 KiB, which is over
    docs/captures.md's "under 32 KiB" (20 groups of 1.3 KiB of text each make 27 KiB alone) but
    far below etcd's 1.5 MiB; hints and verdicts are the registry's own short texts, so real
    reports are much smaller."""
    import json
    s = lambda n: "x" * n  # noqa: E731
    big = 2**63 - 1         # int64, the CRD's integers
    report = {"capture": {"name": s(253), "uid": s(36)}, "node": s(253), "state": "Recording", "message": s(1024),
              "from": "2026-12-07T11:02:35Z", "to": None, "updated": "2026-12-07T11:04:35Z", "endpoint": s(512),
              "certSHA256": "0" * 64, "files": [{"name": s(64), "bytes": 2**40}] * 8,
              "total": {"packets": big, "bytes": big}, "events": {"seen": big, "lost": big},
              "pods": [{"namespace": s(63), "name": s(253), "packets": big}] * 20, "podsOmitted": 10**6,
              "groups": [{"pod": s(317), "category": "socket-buffer", "reason": s(128), "location": s(128),
                          "packets": big, "verdict": s(256), "hint": s(512)}] * 20, "groupsOmitted": 10**6,
              "flows": [{"proto": "icmpv6", "src": s(45), "sport": 65535, "dst": s(45), "dport": 65535, "pod": s(317),
                         "category": "socket-buffer", "events": big}] * 10}
    obj = {"apiVersion": "netdrop.io/v1alpha1", "kind": "NetdropCaptureReport",
           "metadata": {"name": s(253), "namespace": s(63)}, "report": report}
    assert check("NetdropCaptureReport", obj) == []
    assert len(json.dumps(obj, separators=(",", ":"))) < 48 * 1024
    over = copy.deepcopy(obj)
    over["report"]["groups"].append(report["groups"][0])
    assert check("NetdropCaptureReport", over) == ["report.groups: Too many: 21: must have at most 20 items"]


def rules_of(role: str) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in cluster_roles()[role] for g in rule.api_groups for r in rule.resources
            for v in rule.verbs}


def test_rbac_grants_what_the_contract_says():
    agent = rules_of("netdrop")
    assert {("netdrop.io", "netdropcaptures", v) for v in ("get", "list", "watch")} <= agent
    assert {("netdrop.io", "netdropcapturereports", v) for v in ("get", "create", "update", "patch")} <= agent
    assert {("", "events", "create"), ("", "events", "patch")} <= agent
    assert not any(r == "netdropcaptures" and v not in ("get", "list", "watch") for _, r, v in agent)
    capturer = rules_of("netdrop-capturer")
    assert capturer == {*(("netdrop.io", "netdropcaptures", v) for v in ("get", "list", "watch", "create", "delete")),
                        ("netdrop.io", "netdropcaptures/files", "get"),
                        *(("netdrop.io", "netdropcapturereports", v) for v in ("get", "list", "watch")),
                        ("", "pods", "list"), ("", "nodes", "list")}


def test_an_agent_cannot_create_captures_and_a_capturer_cannot_write_reports():
    rbac = Authorizer()
    rbac.bind_cluster_role(AGENT, "netdrop")
    rbac.bind_cluster_role(AGENT, "system:auth-delegator")
    rbac.bind_cluster_role("alice", "netdrop-capturer", "shop")
    g = "netdrop.io"
    assert rbac.allowed(AGENT, "watch", "netdropcaptures", group=g)
    assert rbac.allowed(AGENT, "create", "subjectaccessreviews", group="authorization.k8s.io")
    for verb in ("create", "update", "patch", "delete"):
        assert not rbac.allowed(AGENT, verb, "netdropcaptures", group=g, namespace="shop")
    assert not rbac.allowed(AGENT, "get", "netdropcaptures", "files", group=g, namespace="shop")
    assert rbac.allowed("alice", "create", "netdropcaptures", group=g, namespace="shop")
    assert rbac.allowed("alice", "get", "netdropcaptures", "files", "web", group=g, namespace="shop")
    assert not rbac.allowed("alice", "create", "netdropcaptures", group=g, namespace="netdrop")
    for verb in ("create", "update", "patch", "delete"):
        assert not rbac.allowed("alice", verb, "netdropcapturereports", group=g, namespace="shop")
    assert not rbac.allowed("alice", "update", "netdropcaptures", "status", group=g, namespace="shop")


def test_the_krew_manifest_names_the_plugin_and_marks_its_placeholders():
    text = (DEPLOY / "krew" / "netdrop.yaml").read_text()
    plugin = yaml.safe_load(text)
    assert plugin["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2" and plugin["kind"] == "Plugin"
    assert plugin["metadata"]["name"] == "netdrop"
    [platform] = plugin["spec"]["platforms"]
    assert platform["bin"] == "kubectl-netdrop" and re.fullmatch(r"[0-9a-f]{64}", platform["sha256"])
    assert platform["uri"].startswith("https://") and "PLACEHOLDERS" in text
