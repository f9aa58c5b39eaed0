"""deploy/: the manifests against the Kubernetes API schema (kubernetes-validate),
`kubectl kustomize deploy/`, `promtool check rules` and the alert unit tests,
and the dashboard's queries naming only metrics the agent exports."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
CI = os.environ.get("CI") == "true"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if CI:
            pytest.fail(f"{tool} is not installed (scripts/setup installs it)")
        pytest.skip(f"{tool} is not installed (scripts/setup installs it)")
    return path


def documents():
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for name in kust["resources"]:
        yield from (d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d)


def test_manifests_follow_the_kubernetes_api_schema():
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.latest_version()
    checked = set()
    for doc in documents():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue        # the Prometheus operator's CRDs: not in the API's schema (checked below)
        kv.validate(doc, version, strict=True)
        checked.add(doc["kind"])
    assert checked == {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet", "Service",
                       "CustomResourceDefinition"}


def roles() -> dict[str, list[dict]]:
    return {d["metadata"]["name"]: d["rules"] for d in documents() if d["kind"] == "ClusterRole"}


def bindings() -> dict[str, tuple[str, list[str]]]:
    return {d["metadata"]["name"]: (d["roleRef"]["name"], [f"{s['namespace']}/{s['name']}" for s in d["subjects"]])
            for d in documents() if d["kind"] == "ClusterRoleBinding"}


def allows(rules: list[dict], verb: str, resource: str) -> bool:
    return any(verb in r["verbs"] and resource in r["resources"] for r in rules)


def test_the_agent_asks_for_the_least_it_needs():
    docs = {d["kind"]: d for d in documents()}
    # What serve calls (the lab API server enforces this role on every call the agent makes):
    # this node's pods listed and watched, the node read, captures read, its own reports
    # written, Events on pods written (docs/captures.md); scrapers' tokens reviewed.
    assert roles()["netdrop"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
        {"apiGroups": ["netdrop.io"], "resources": ["netdropcaptures"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["netdrop.io"], "resources": ["netdropcapturereports"],
         "verbs": ["get", "create", "update", "patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}]
    # No delete anywhere, no Secret, nothing of the captures' files (those are on the node).
    assert not any("delete" in r["verbs"] or "secrets" in r["resources"] for r in roles()["netdrop"])
    assert bindings() == {"netdrop": ("netdrop", ["netdrop/netdrop"]),
                          "netdrop-auth-delegator": ("system:auth-delegator", ["netdrop/netdrop"])}
    # Scrapers and responders get roles of their own, bound by the operator to whom they choose.
    assert roles()["netdrop-metrics-reader"] == [{"apiGroups": [""], "resources": ["nodes/metrics"],
                                                  "verbs": ["get"]}]
    assert allows(roles()["netdrop-responder"], "list", "services")
    assert not any(allows(r, v, "secrets") for r in roles().values() for v in ("get", "list", "watch"))
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["readOnlyRootFilesystem"] is True
    # Measured in the container (scripts/image caps): SYS_ADMIN loads the program (bpf_capable)
    # and enters pods' namespaces; the rest each lose one thing without them.
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == {"SYS_ADMIN", "SYSLOG", "SYS_PTRACE", "SYS_RESOURCE"}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"} and sc["allowPrivilegeEscalation"] is False
    assert pod["hostNetwork"] and pod["hostPID"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for ro in ("/sys/kernel/btf", "/sys/kernel/tracing", "/run/netns", "/var/lib/cni"):
        assert mounts[ro]["readOnly"] is True
    assert "readOnly" not in mounts["/var/cache/netdrop"]
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    # Every capability added is explained by a comment in the manifest.
    text = (DEPLOY / "daemonset.yaml").read_text()
    for cap in sc["capabilities"]["add"]:
        before = text.split(f"- {cap}\n")[0].rstrip().splitlines()[-1].strip()
        assert before.startswith("#"), f"capability {cap} has no comment saying why"


def test_kustomize_renders_every_resource():
    kubectl = need("kubectl")
    res = subprocess.run([kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(res.stdout) if d]
    assert sorted(kinds) == sorted(["Namespace", "ServiceAccount", *["ClusterRole"] * 4, *["ClusterRoleBinding"] * 2,
                                    "DaemonSet", "Service", "ServiceMonitor", "PrometheusRule", "ConfigMap",
                                    *["CustomResourceDefinition"] * 2])


@pytest.fixture
def rules_dir(tmp_path):
    rule = yaml.safe_load((DEPLOY / "prometheusrule.yaml").read_text())
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(DEPLOY / "tests" / "alerts.test.yml", tmp_path)
    return tmp_path


def test_promtool_checks_the_rules_and_runs_the_alert_unit_tests(rules_dir):
    promtool = need("promtool")
    check = subprocess.run([promtool, "check", "rules", str(rules_dir / "rules.yml")], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 5 rules found" in check.stdout, check.stdout + check.stderr
    test = subprocess.run([promtool, "test", "rules", str(rules_dir / "alerts.test.yml")], capture_output=True,
                          text=True, timeout=60)
    assert test.returncode == 0, test.stdout + test.stderr


def test_every_alert_has_a_unit_test():
    rules = yaml.safe_load((DEPLOY / "prometheusrule.yaml").read_text())["spec"]["groups"][0]["rules"]
    tested = yaml.safe_load((DEPLOY / "tests" / "alerts.test.yml").read_text())["tests"][0]["alert_rule_test"]
    fired = {t["alertname"] for t in tested if t["exp_alerts"]}
    assert {r["alert"] for r in rules} == fired


EXPORTED = {"netdrop_drops_total", "netdrop_drop_bytes_total", "netdrop_events_lost_total",
            "netdrop_drops_ungrouped_total", "netdrop_series_folded_total", "netdrop_conntrack_insert_races_total",
            "netdrop_conntrack_table_full_drops_total", "netdrop_hook_attached", "netdrop_series",
            "netdrop_build_info"}


def test_dashboard_and_alerts_name_only_metrics_the_agent_exports():
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [r["expr"] for r in yaml.safe_load((DEPLOY / "prometheusrule.yaml").read_text())["spec"]["groups"][0]
              ["rules"]]
    named = {m for e in exprs for m in re.findall(r"\bnetdrop_[a-z_]+", e)}
    assert named and named <= EXPORTED, named - EXPORTED
    # Drops by node, by workload and pod, by category and reason, benign set aside, events lost.
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for want in ("node", "workload", "pod", "category", "benign", "events lost"):
        assert want in titles
