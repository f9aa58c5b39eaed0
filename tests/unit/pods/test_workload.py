"""pods.workload: the controller of a pod from the pod object alone (as the API returns it)."""

from hypothesis import given
from hypothesis import strategies as st

from tracer.pods.objects import pod_info
from tracer.pods.workload import Workload, workload_of


def pod(name, owner=None, kind="ReplicaSet", labels=None):
    meta = {"name": name, "namespace": "shop", "uid": f"uid-{name}", "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": "Node", "name": "node-a", "controller": False},
                                   {"apiVersion": "apps/v1", "kind": kind, "name": owner, "controller": True}]
    return pod_info({"metadata": meta, "spec": {"nodeName": "node-a"}, "status": {"podIP": "10.244.1.9"}})


def test_deployment_through_its_replicaset_and_the_template_hash():
    p = pod("web-7d9f8c6b5-x2k4q", "web-7d9f8c6b5", labels={"app": "web", "pod-template-hash": "7d9f8c6b5"})
    assert workload_of(p) == Workload("Deployment", "web")


def test_a_deployment_whose_name_has_dashes():
    p = pod("check-out-api-5c6d7b9f4-m8n2p", "check-out-api-5c6d7b9f4", labels={"pod-template-hash": "5c6d7b9f4"})
    assert workload_of(p) == Workload("Deployment", "check-out-api")


def test_replicaset_without_the_hash_label_or_with_another_hash_stays_a_replicaset():
    assert workload_of(pod("api-5c6d7b9f4-m8n2p", "api-5c6d7b9f4")) == Workload("ReplicaSet", "api-5c6d7b9f4")
    p = pod("api-5c6d7b9f4-m8n2p", "api-5c6d7b9f4", labels={"pod-template-hash": "aaaa"})
    assert workload_of(p) == Workload("ReplicaSet", "api-5c6d7b9f4")
    # A hash equal to the whole name leaves no Deployment name: not cut to nothing.
    assert workload_of(pod("x-1", "abc", labels={"pod-template-hash": "abc"})).name == "abc"


def test_statefulset_daemonset_job_and_cronjob():
    assert workload_of(pod("db-0", "db", "StatefulSet")) == Workload("StatefulSet", "db")
    assert workload_of(pod("fluent-bit-x7k2p", "fluent-bit", "DaemonSet")) == Workload("DaemonSet", "fluent-bit")
    assert workload_of(pod("migrate-q8w9e", "migrate", "Job")) == Workload("Job", "migrate")
    # A CronJob's Job is named after its scheduled minute: every run is one workload.
    assert workload_of(pod("backup-29412345-abcde", "backup-29412345", "Job")) == Workload("CronJob", "backup")
    assert workload_of(pod("backup-29412346-fghij", "backup-29412346", "Job")) == Workload("CronJob", "backup")


def test_no_controller_or_a_static_pod_is_its_own_workload():
    assert workload_of(pod("debug-shell")) == Workload("Pod", "debug-shell")
    assert workload_of(pod("kube-apiserver-node-a", "node-a", "Node")) == Workload("Pod", "kube-apiserver-node-a")


@given(st.text(max_size=40), st.text(max_size=40), st.text(max_size=20), st.text(max_size=20))
def test_any_pod_object_gives_a_workload_with_a_name(name, owner, kind, tmpl):
    p = pod(name or "p", owner or None, kind or "ReplicaSet", labels={"pod-template-hash": tmpl})
    w = workload_of(p)
    assert w.name and isinstance(w.kind, str)
