"""The lab's kubelet (tracer/lab/kubelet.py): deploy/daemonset.yaml turned into podman's options
as the kubelet would run it, $(VAR) expansion, quantities, and a loud refusal of anything the
runner does not understand, so that the manifest cannot drift from what the image test ran."""

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tracer.lab import kubelet
from tracer.lab.kubelet import DaemonSet, ManifestError, ServiceAccount, Variation, expand, quantity

MANIFEST = Path(__file__).resolve().parents[3] / "deploy" / "daemonset.yaml"


@pytest.fixture
def doc():
    (ds,) = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d and d["kind"] == "DaemonSet"]
    return ds


def pairs(opts) -> set[tuple[str, str]]:
    """Each option with the word after it."""
    return set(zip(opts, opts[1:], strict=False))


def test_the_manifest_becomes_the_run_the_kubelet_would_make(doc, tmp_path):
    run = DaemonSet(doc).run("node-7", tmp_path)
    opts = run.podman
    sc = doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    for cap in sc["capabilities"]["add"]:
        assert ("--cap-add", cap) in pairs(opts)
    assert ("--cap-drop", "ALL") in pairs(opts)
    assert "--read-only" in opts and "--read-only-tmpfs=false" in opts
    assert ("--security-opt", "no-new-privileges") in pairs(opts)
    assert "seccomp=unconfined" not in opts          # RuntimeDefault: podman's own profile
    assert ("--network", "host") in pairs(opts) and ("--pid", "host") in pairs(opts)
    assert ("--memory", str(448 * 2**20)) in pairs(opts)
    assert ("--env", "NODE_NAME=node-7") in pairs(opts)
    assert "--node=node-7" in run.args and run.args[0] == "serve"
    assert run.grace_seconds == doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # Each emptyDir a host directory the runner makes 0777, as the kubelet does.
    empty = [d for d in run.host_dirs if d.path.is_relative_to(tmp_path)]
    assert {d.path.name for d in empty} == {"cache", "tmp"} and {d.mode for d in empty} == {0o777}
    assert any(o.endswith(":/var/cache/netdrop:rw,rbind,rprivate") for o in opts)
    assert "-v" in opts and "/run/netns:/run/netns:ro,rbind,rslave" in opts
    assert {p.kind for p in run.probes} == {"readinessProbe", "livenessProbe"}


def test_a_service_account_is_its_mount_and_the_apis_address(doc, tmp_path):
    sa = ServiceAccount(tmp_path / "sa", "10.96.0.1", 6443)
    opts = DaemonSet(doc).run("n", tmp_path, sa=sa).podman
    assert f"{tmp_path / 'sa'}:{kubelet.SA_MOUNT}:ro,rbind,rprivate" in opts
    assert "KUBERNETES_SERVICE_HOST=10.96.0.1" in opts and "KUBERNETES_SERVICE_PORT=6443" in opts


def test_a_variation_withholds_or_adds_capabilities_and_changes_the_profile(doc, tmp_path):
    opts = DaemonSet(doc).run("n", tmp_path, variation=Variation(withhold=frozenset({"SYSLOG"}),
                                                                   add=frozenset({"BPF"}), seccomp="Unconfined")).podman
    assert ("--cap-add", "SYSLOG") not in pairs(opts) and ("--cap-add", "BPF") in pairs(opts)
    assert "seccomp=unconfined" in opts
    with pytest.raises(ManifestError, match="does not add"):
        DaemonSet(doc).run("n", tmp_path, variation=Variation(withhold=frozenset({"CHOWN"})))


@pytest.mark.parametrize("where", [
    ["spec", "template", "spec"], ["spec", "template", "spec", "containers", 0],
    ["spec", "template", "spec", "containers", 0, "securityContext"],
    ["spec", "template", "spec", "containers", 0, "livenessProbe"],
    ["spec", "template", "spec", "containers", 0, "volumeMounts", 0],
    ["spec", "template", "spec", "volumes", 0, "hostPath"],
    ["spec", "template", "spec", "containers", 0, "resources", "limits"],
])
def test_anything_the_runner_does_not_understand_fails_loudly(doc, tmp_path, where):
    changed = copy.deepcopy(doc)
    obj = changed
    for key in where:
        obj = obj[key]
    obj["somethingNew"] = True
    with pytest.raises(ManifestError, match="somethingNew: not understood by the runner"):
        DaemonSet(changed).run("n", tmp_path)


def test_values_it_cannot_run_as_the_kubelet_would_fail_loudly(doc, tmp_path):
    c = doc["spec"]["template"]["spec"]["containers"][0]
    cases = [(c["securityContext"], "seccompProfile", {"type": "Localhost", "localhostProfile": "x"}),
             (c["env"][0]["valueFrom"]["fieldRef"], "fieldPath", "status.podIP"),
             (doc["spec"]["template"]["spec"]["volumes"][0]["hostPath"], "type", "Socket"),
             (c["readinessProbe"], "httpGet", {"path": "/", "port": "nosuchport"})]
    for obj, key, value in cases:
        changed = copy.deepcopy(doc)
        original = obj[key]
        obj[key] = value
        with pytest.raises(ManifestError):
            DaemonSet(doc).run("n", tmp_path)
        obj[key] = original
        DaemonSet(changed).run("n", tmp_path)


def test_dollar_expansion_is_the_kubelets():
    env = {"NODE_NAME": "n1", "A": "$(B)"}
    assert expand("--node=$(NODE_NAME)", env) == "--node=n1"
    # a value is not expanded again; a reference runs to the first ")", as in the kubelet
    assert expand("$(MISSING) $$(NODE_NAME) $$ $x $(A)", env) == "$(MISSING) $(NODE_NAME) $ $x $(B)"
    assert expand("$( $(NODE_NAME)", env) == "$( $(NODE_NAME)"
    assert expand("tail$ $(open", env) == "tail$ $(open"


@given(st.text())
def test_expansion_without_references_keeps_the_text(text):
    if "$" not in text:
        assert expand(text, {"X": "y"}) == text


def test_quantities():
    assert quantity("320Mi", "x") == 320 * 2**20 and quantity("20m", "x") * 1000 == 20
    assert quantity("1", "x") == 1 and quantity("1.5G", "x") == 1_500_000_000 and quantity("1e3", "x") == 1000
    for bad in ("", "Mi", "1 Mi", "1MB", "--1"):
        with pytest.raises(ManifestError):
            quantity(bad, "x")
