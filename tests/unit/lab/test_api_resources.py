"""The lab API server's custom resources, Events and RBAC, through the real kubernetes client."""

from __future__ import annotations

import json
import threading
import time

import kubernetes
import pytest
from kubernetes.client import ApiException

from tracer.lab import api as labapi

GROUP, VERSION = "netdrop.io", "v1alpha1"
CAPS, REPS = "netdropcaptures", "netdropcapturereports"
AGENT = labapi.AGENT_USER


@pytest.fixture
def api():
    server = labapi.KubeAPI(responder=False)
    server.start()
    yield server
    server.stop()


def client(api, tmp_path, user: str | None = None) -> kubernetes.client.ApiClient:
    token = api.token if user is None else api.add_user(user)
    path = tmp_path / f"kc-{user or 'agent'}-{time.monotonic_ns()}"
    labapi.write_kubeconfig(path, api.url, token)
    return kubernetes.config.new_client_from_config(str(path))


def capture(name: str = "web-drops", ns: str = "shop", **spec) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NetdropCapture", "metadata": {"name": name, "namespace": ns},
            "spec": {"pods": {"selector": "app=web"}, "duration": "2m", **spec}}


def report(cap: dict, node: str) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NetdropCaptureReport",
            "metadata": {"name": f"{cap['metadata']['name']}.{node}", "namespace": cap["metadata"]["namespace"],
                         "labels": {"netdrop.io/capture": cap["metadata"]["name"], "netdrop.io/node": node},
                         "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "NetdropCapture",
                                              "name": cap["metadata"]["name"], "uid": cap["metadata"]["uid"]}]},
            "report": {"capture": {"name": cap["metadata"]["name"], "uid": cap["metadata"]["uid"]}, "node": node,
                       "state": "Recording", "total": {"packets": 0, "bytes": 0}}}


@pytest.fixture
def alice(api, tmp_path):
    """A responder bound to netdrop-capturer in namespace shop (a RoleBinding), as deploy/ says."""
    api.bind_cluster_role("alice", "netdrop-capturer", "shop")
    return kubernetes.client.CustomObjectsApi(client(api, tmp_path, "alice"))


@pytest.fixture
def agent(api, tmp_path):
    c = client(api, tmp_path)
    return kubernetes.client.CustomObjectsApi(c), kubernetes.client.CoreV1Api(c)


def status_of(exc: pytest.ExceptionInfo) -> dict:
    return json.loads(exc.value.body)


def test_a_capture_is_created_read_listed_and_watched_by_the_agent(api, alice, agent):
    objs, _ = agent
    made = alice.create_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, capture())
    meta = made["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1 and int(meta["resourceVersion"]) > 1
    assert made["spec"]["since"] == "0s" and made["spec"]["packets"] is False       # the CRD's defaults
    read = objs.get_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, "web-drops")
    assert read["metadata"]["uid"] == meta["uid"]
    listed = objs.list_cluster_custom_object(GROUP, VERSION, CAPS)
    assert [o["metadata"]["name"] for o in listed["items"]] == ["web-drops"]
    assert objs.list_namespaced_custom_object(GROUP, VERSION, "other", CAPS)["items"] == []

    # A watch from the list's version sees the next capture, and bookmarks carry its version.
    seen: list[tuple[str, str]] = []
    w = kubernetes.watch.Watch()

    def follow():
        for ev in w.stream(objs.list_cluster_custom_object, GROUP, VERSION, CAPS,
                           resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=5):
            seen.append((ev["type"], ev["object"]["metadata"]["name"]))
            if len(seen) == 2:
                w.stop()
    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.3)
    alice.create_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, capture("db-drops"))
    alice.delete_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, "db-drops")
    t.join(10)
    assert seen == [("ADDED", "db-drops"), ("DELETED", "db-drops")]


def test_a_watch_from_a_forgotten_version_gets_410(api, agent, monkeypatch):
    objs, _ = agent
    monkeypatch.setattr(labapi, "MAX_LOG", 5)
    for i in range(10):
        api.store.create(f"{GROUP}/{CAPS}", "shop", capture(f"c{i}"), "test")
    with pytest.raises(ApiException) as exc:
        for _ in kubernetes.watch.Watch().stream(objs.list_cluster_custom_object, GROUP, VERSION, CAPS,
                                                 resource_version="2", timeout_seconds=2):
            pass
    assert exc.value.status == 410


def test_create_twice_and_generate_name(alice):
    alice.create_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, capture())
    with pytest.raises(ApiException) as exc:
        alice.create_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, capture())
    assert exc.value.status == 409 and status_of(exc)["reason"] == "AlreadyExists"
    assert status_of(exc)["message"] == 'netdropcaptures.netdrop.io "web-drops" already exists'
    body = capture()
    body["metadata"] = {"generateName": "web-"}
    made = alice.create_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, body)
    assert made["metadata"]["name"].startswith("web-") and len(made["metadata"]["name"]) == 9


def test_updates_conflict_on_a_stale_version_and_patches_move_the_generation(api, agent, alice, tmp_path):
    objs, _ = agent
    made = alice.create_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, capture())
    api.bind_cluster_role("bob", "netdrop")        # update is nobody's right in deploy/: a test user
    api.grant("bob", "update", CAPS, group=GROUP)
    api.grant("bob", "patch", CAPS, group=GROUP)
    api.grant("bob", "patch", CAPS, "status", group=GROUP)
    api.grant("bob", "update", CAPS, "status", group=GROUP)
    bob = kubernetes.client.CustomObjectsApi(client(api, tmp_path, "bob"))
    changed = dict(made, spec={**made["spec"], "duration": "5m"})
    updated = bob.replace_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, "web-drops", changed)
    assert updated["metadata"]["generation"] == 2 and updated["spec"]["duration"] == "5m"
    with pytest.raises(ApiException) as exc:
        bob.replace_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, "web-drops", changed)   # made's version
    assert exc.value.status == 409 and status_of(exc)["reason"] == "Conflict"
    assert status_of(exc)["message"] == (
        'Operation cannot be fulfilled on netdropcaptures.netdrop.io "web-drops": the object has been modified; '
        "please apply your changes to the latest version and try again")

    # The status subresource: /status changes status only; the object's writes keep it.
    st = bob.patch_namespaced_custom_object_status(GROUP, VERSION, "shop", CAPS, "web-drops",
                                                   {"status": {"phase": "Running"}, "spec": {"duration": "9m"}})
    assert st["status"] == {"phase": "Running"} and st["spec"]["duration"] == "5m"
    assert st["metadata"]["generation"] == 2                       # status is not a change of generation
    main = bob.patch_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, "web-drops",
                                              {"status": {"phase": "Failed"}, "spec": {"duration": "3m"}})
    assert main["status"] == {"phase": "Running"} and main["spec"]["duration"] == "3m"
    assert main["metadata"]["generation"] == 3
    # A JSON patch, when the caller asks for one.
    jp = bob.patch_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, "web-drops",
                                            [{"op": "replace", "path": "/spec/duration", "value": "4m"}],
                                            _content_type="application/json-patch+json")
    assert jp["spec"]["duration"] == "4m"
    assert api.writes()[("bob", "patch")] == 3 and api.writes()[("bob", "update")] == 1


def test_deleting_a_capture_deletes_its_reports_in_the_background(api, agent, alice):
    objs, _ = agent
    cap = alice.create_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, capture())
    other = alice.create_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, capture("other"))
    for node in ("node-1", "node-2"):
        objs.create_namespaced_custom_object(GROUP, VERSION, "shop", REPS, report(cap, node))
    objs.create_namespaced_custom_object(GROUP, VERSION, "shop", REPS, report(other, "node-1"))
    mine = alice.list_namespaced_custom_object(GROUP, VERSION, "shop", REPS,
                                               label_selector="netdrop.io/capture=web-drops")
    assert sorted(o["metadata"]["name"] for o in mine["items"]) == ["web-drops.node-1", "web-drops.node-2"]
    alice.delete_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, "web-drops")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        items = alice.list_namespaced_custom_object(GROUP, VERSION, "shop", REPS)["items"]
        left = [o["metadata"]["name"] for o in items]
        if left == ["other.node-1"]:
            break
        time.sleep(0.05)
    assert left == ["other.node-1"]


def test_events_are_written_patched_and_found_as_kubectl_describe_asks(api, agent, tmp_path):
    _, core = agent
    api.grant("describer", "list", "events")
    api.grant("describer", "get", "events")
    reader = kubernetes.client.CoreV1Api(client(api, tmp_path, "describer"))
    pod = labapi.pod_object("web-0", "shop", "node-1", ["10.244.1.5"], "192.168.1.1")
    api.put_pod(pod)
    uid = pod["metadata"]["uid"]
    body = {"metadata": {"name": "web-0.netdrop.1", "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web-0", "uid": uid, "apiVersion": "v1"},
            "reason": "PacketsDropped", "type": "Warning", "message": "42 packets dropped", "count": 1,
            "source": {"component": "netdrop", "host": "node-1"}}
    core.create_namespaced_event("shop", body)
    core.create_namespaced_event("shop", {**body, "metadata": {"name": "other", "namespace": "shop"},
                                          "involvedObject": {**body["involvedObject"], "name": "web-1", "uid": "x"}})
    patched = core.patch_namespaced_event("web-0.netdrop.1", "shop", {"count": 5, "message": "50 packets dropped"})
    assert patched.count == 5 and patched.reason == "PacketsDropped"
    # kubectl describe pod (kubectl/pkg/describe: searchEvents) selects by the object's name,
    # namespace, kind and uid.
    selector = ("involvedObject.name=web-0,involvedObject.namespace=shop,involvedObject.kind=Pod,"
                f"involvedObject.uid={uid}")
    found = reader.list_namespaced_event("shop", field_selector=selector).items
    assert [(e.metadata.name, e.count) for e in found] == [("web-0.netdrop.1", 5)]
    everywhere = reader.list_event_for_all_namespaces(field_selector="reason=PacketsDropped").items
    assert sorted(e.metadata.name for e in everywhere) == ["other", "web-0.netdrop.1"]
    assert reader.read_namespaced_event("other", "shop").involved_object.name == "web-1"
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_event("shop")          # the agent may create and patch, not list
    assert exc.value.status == 403


def test_rbac_is_what_deploy_ships(api, agent, alice, tmp_path):
    objs, _ = agent
    with pytest.raises(ApiException) as exc:
        objs.create_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, capture())
    assert exc.value.status == 403
    assert status_of(exc)["message"] == (
        'netdropcaptures.netdrop.io is forbidden: User "system:serviceaccount:netdrop:netdrop" cannot create '
        'resource "netdropcaptures" in API group "netdrop.io" in the namespace "shop"')
    cap = alice.create_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, capture())
    with pytest.raises(ApiException) as exc:
        alice.create_namespaced_custom_object(GROUP, VERSION, "shop", REPS, report(cap, "node-1"))
    assert exc.value.status == 403                 # a capturer cannot forge a report
    with pytest.raises(ApiException) as exc:
        alice.create_namespaced_custom_object(GROUP, VERSION, "kube-system", CAPS, capture(ns="kube-system"))
    assert exc.value.status == 403                 # the RoleBinding is in shop only
    assert api.allowed("alice", "get", CAPS, "files", "web-drops", group=GROUP, namespace="shop")
    assert not api.allowed("alice", "get", CAPS, "files", "web-drops", group=GROUP, namespace="netdrop")
    nobody = kubernetes.client.CoreV1Api(client(api, tmp_path, "nobody"))
    with pytest.raises(ApiException) as exc:
        nobody.list_pod_for_all_namespaces()
    assert exc.value.status == 403 and status_of(exc)["message"] == (
        'pods is forbidden: User "nobody" cannot list resource "pods" in API group "" at the cluster scope')


def test_invalid_objects_get_422_with_causes(alice):
    bad = capture(duration="2x", filters={"ports": [70000], "categories": ["bogus"]})
    with pytest.raises(ApiException) as exc:
        alice.create_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, bad)
    st = status_of(exc)
    assert exc.value.status == 422 and st["reason"] == "Invalid"
    assert st["message"].startswith('NetdropCapture.netdrop.io "web-drops" is invalid: [')
    assert {c["field"] for c in st["details"]["causes"]} == {
        "spec.duration", "spec.filters.ports[0]", "spec.filters.categories[0]"}
    both = capture(nodes={"all": True})
    with pytest.raises(ApiException) as exc:
        alice.create_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, both)
    assert exc.value.status == 422 and "exactly one of pods and nodes" in status_of(exc)["message"]
    with pytest.raises(ApiException) as exc:
        alice.create_namespaced_custom_object(GROUP, VERSION, "shop", CAPS, capture(duration="2h"))
    assert "duration must be between 1s and 1h" in status_of(exc)["message"]


def test_objects_over_the_limits_are_refused_as_the_api_server_does(api, agent):
    objs, _ = agent
    cap = api.store.create(f"{GROUP}/{CAPS}", "shop", capture(), "test")
    big = report(cap, "node-1")
    big["metadata"]["annotations"] = {"padding": "x" * 2_000_000}         # past etcd's 1.5 MiB
    with pytest.raises(ApiException) as exc:
        objs.create_namespaced_custom_object(GROUP, VERSION, "shop", REPS, big)
    assert exc.value.status == 500 and status_of(exc)["message"] == "etcdserver: request is too large"
    big["metadata"]["annotations"] = {"padding": "x" * 3_200_000}         # past the API server's 3 MiB
    with pytest.raises(ApiException) as exc:
        objs.create_namespaced_custom_object(GROUP, VERSION, "shop", REPS, big)
    assert exc.value.status == 413 and status_of(exc)["message"] == "Request entity too large: limit is 3145728"
    small = objs.create_namespaced_custom_object(GROUP, VERSION, "shop", REPS, report(cap, "node-1"))
    assert api.largest_object()[f"{GROUP}/{REPS}"] == len(json.dumps(small, separators=(",", ":")))
