"""The real kubernetes client against the lab's API server on 127.0.0.1."""

import json
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer.errors import UserError
from tracer.lab import api as labapi
from tracer.pods import apicall, kube, objects

from ...timing import allowed
from ..helpers import wait_for


@pytest.fixture
def api(tmp_path):
    server = labapi.KubeAPI()
    server.start()
    server.add_node(labapi.node_object("node-a", ["192.168.1.5"]))
    server.add_node(labapi.node_object("node-b", ["192.168.1.6"]))
    server.put_pod(labapi.pod_object("web-7d9f8c6b5-x2k4q", "default", "node-a", ["10.244.1.10", "fd00::a"],
                                     "192.168.1.5", labels={"app": "web"}, ports=[8080], owner="web-7d9f8c6b5"))
    server.put_pod(labapi.pod_object("db-0", "default", "node-b", ["10.244.2.10"], "192.168.1.6"))
    server.put_pod(labapi.pod_object("exporter", "monitoring", "node-a", ["192.168.1.5"], "192.168.1.5",
                                     host_network=True, ports=[9100]))
    server.kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    yield server
    server.stop()


def test_lists_this_nodes_pods(api):
    k = kube.KubeClient(str(api.kubeconfig))
    pods, rv = k.list_pods("node-a")
    by_name = {p.name: p for p in pods}
    assert set(by_name) == {"web-7d9f8c6b5-x2k4q", "exporter"} and int(rv) > 0
    web = by_name["web-7d9f8c6b5-x2k4q"]
    assert web.ips == ("10.244.1.10", "fd00::a") and web.ports == (8080,) and dict(web.labels) == {"app": "web"}
    assert by_name["exporter"].host_network
    assert any("fieldSelector=spec.nodeName" in r for r in api.requests)


def test_node_name_from_addresses(api):
    k = kube.KubeClient(str(api.kubeconfig))
    assert k.node_name(None, {"192.168.1.6", "10.0.0.1"}) == "node-b"
    assert k.node_name("node-a", set()) == "node-a"
    with pytest.raises(UserError, match="node node-x is not known"):
        k.node_name("node-x", set())
    with pytest.raises(UserError, match="pass --node"):
        k.node_name(None, {"10.9.9.9"})


def test_selection_errors_say_what_is_wrong(api):
    k = kube.KubeClient(str(api.kubeconfig))
    pods, _ = k.list_pods("node-a")
    with pytest.raises(UserError, match="pod default/db-0 runs on node node-b"):
        kube.check_selection(k, "node-a", kube.Selection(name="db-0"), pods)
    with pytest.raises(UserError, match="no pod web in namespace default; did you mean web-7d9f8c6b5-x2k4q"):
        kube.check_selection(k, "node-a", kube.Selection(name="web"), pods)
    with pytest.raises(UserError, match="no pod wbe-7d9f8c6b5-x2k4q .*did you mean web-7d9f8c6b5-x2k4q"):
        kube.check_selection(k, "node-a", kube.Selection(name="wbe-7d9f8c6b5-x2k4q"), pods)
    assert [p.name for p in kube.check_selection(k, "node-a", kube.Selection(selector="app=web"), pods)] \
        == ["web-7d9f8c6b5-x2k4q"]


def test_watch_follows_changes_without_relisting(api):
    k = kube.KubeClient(str(api.kubeconfig))
    seen, errors, stop = [], [], threading.Event()
    t = threading.Thread(target=k.watch_pods, args=("node-a", None, lambda ps: seen.append(sorted(p.name for p in ps)),
                                                    stop, lambda msg: msg and errors.append(msg)), daemon=True)
    t.start()
    try:
        assert wait_for(lambda: bool(seen))
        api.put_pod(labapi.pod_object("new-1", "default", "node-a", ["10.244.1.20"], "192.168.1.5"))
        assert wait_for(lambda: "new-1" in seen[-1])
        api.delete_pod("default", "web-7d9f8c6b5-x2k4q")
        assert wait_for(lambda: seen[-1] == ["exporter", "new-1"])
        # Another node's pod, then one of ours: events come in order, so once new-2 is
        # seen the other node's pod has been passed over.
        api.put_pod(labapi.pod_object("elsewhere", "default", "node-b", ["10.244.2.20"], "192.168.1.6"))
        api.put_pod(labapi.pod_object("new-2", "default", "node-a", ["10.244.1.21"], "192.168.1.5"))
        assert wait_for(lambda: "new-2" in seen[-1])
        assert "elsewhere" not in seen[-1]
        assert errors == []     # every change came through the watch: no interruption, no relist
    finally:
        stop.set()


def run_watch(k, seen, errors, stop):
    t = threading.Thread(target=k.watch_pods, args=("node-a", None, lambda ps: seen.append(sorted(p.name for p in ps)),
                                                    stop, lambda msg: msg and errors.append(msg)), daemon=True)
    t.start()
    return t


def pod_lists(api):
    return sum(1 for r in api.requests if r.startswith("/api/v1/pods?") and "watch=" not in r)


def test_an_ended_watch_resumes_from_its_resource_version_without_listing_again(api, monkeypatch):
    """As client-go's reflector: the server ends each watch (timeoutSeconds); the next one
    starts from the last version seen, bookmarks included, and nothing is listed again."""
    monkeypatch.setattr(kube, "WATCH_SECONDS", 1)
    monkeypatch.setattr(labapi, "BOOKMARK_SECONDS", 0.2)
    k = kube.KubeClient(str(api.kubeconfig))
    seen, errors, stop = [], [], threading.Event()
    t = run_watch(k, seen, errors, stop)
    try:
        assert wait_for(lambda: bool(seen))
        # other nodes' changes move the version on without an event for us: bookmarks carry it
        api.put_pod(labapi.pod_object("elsewhere", "default", "node-b", ["10.244.2.20"], "192.168.1.6"))
        assert wait_for(lambda: sum("watch=" in r for r in api.requests) >= 3)    # two watches ended
        watches = [r for r in api.requests if "watch=" in r]
        assert "allowWatchBookmarks=true" in watches[-1]
        assert f"resourceVersion={api.rv}" in watches[-1]       # the bookmark's version, not the list's
        api.put_pod(labapi.pod_object("new-1", "default", "node-a", ["10.244.1.20"], "192.168.1.5"))
        assert wait_for(lambda: "new-1" in seen[-1])
        assert pod_lists(api) == 1 and errors == []
    finally:
        stop.set()
        k.stop_watch()
        t.join(5)
    assert not t.is_alive()


def test_a_version_too_old_lists_again(api, monkeypatch):
    """410 Gone (the server no longer keeps events that old): list, then watch from there."""
    monkeypatch.setattr(labapi, "MAX_LOG", 2)
    for i in range(3):
        api.put_pod(labapi.pod_object(f"late-{i}", "default", "node-a", [f"10.244.1.3{i}"], "192.168.1.5"))
    k = kube.KubeClient(str(api.kubeconfig))
    assert k._watch_once("node-a", None, "1", {}, lambda ps: None, threading.Event()) is None
    real_list, lists = k.list_pods, []

    def list_pods(node, selector=None):      # the first list answers with a version since trimmed
        pods, rv = real_list(node, selector)
        lists.append(rv)
        return pods, "1" if len(lists) == 1 else rv
    monkeypatch.setattr(k, "list_pods", list_pods)
    seen, errors, stop = [], [], threading.Event()
    t = run_watch(k, seen, errors, stop)
    try:
        assert wait_for(lambda: len(lists) == 2)
        api.put_pod(labapi.pod_object("after", "default", "node-a", ["10.244.1.40"], "192.168.1.5"))
        assert wait_for(lambda: "after" in seen[-1] and "late-2" in seen[-1])
        assert errors == [] and len(lists) == 2
    finally:
        stop.set()
        k.stop_watch()
        t.join(5)


def test_the_lab_api_answers_a_watch_from_version_0_with_every_pod_then_changes(api):
    k = kube.KubeClient(str(api.kubeconfig))
    resp = k.v1.list_pod_for_all_namespaces(watch=True, resource_version="0", timeout_seconds=1,
                                            field_selector="spec.nodeName=node-a", _preload_content=False)
    names = [json.loads(line)["object"]["metadata"]["name"] for line in resp.data.decode().splitlines() if line]
    assert sorted(names) == ["exporter", "web-7d9f8c6b5-x2k4q"]


def test_stop_ends_a_quiet_watch_at_once(api):
    k = kube.KubeClient(str(api.kubeconfig))
    seen, errors, stop = [], [], threading.Event()
    t = run_watch(k, seen, errors, stop)
    assert wait_for(lambda: bool(seen) and k._stream is not None)
    started = time.monotonic()
    stop.set()
    k.stop_watch()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - started < allowed(2.0) and errors == []    # tests/timing.py


def test_unreachable_api_is_unavailable_not_a_crash(api, tmp_path):
    url = api.url
    api.stop()
    k = kube.KubeClient(str(api.kubeconfig))
    with pytest.raises(apicall.KubeUnavailable, match=f"cannot reach the API server at {url}"):
        k.list_pods("node-a")


def test_no_kubeconfig_anywhere(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube, "NODE_KUBECONFIGS", ())
    with pytest.raises(apicall.KubeUnavailable, match="no kubeconfig found"):
        kube.KubeClient()
    with pytest.raises(UserError, match="kubeconfig /nope does not exist"):
        kube.KubeClient("/nope")


@pytest.mark.parametrize("selector,ok", [("app=web", True), ("app!=web", False), ("app", True),
                                         ("!app", False), ("app=web,tier=x", False), ("tier!=x", True)])
def test_label_selectors(selector, ok):
    p = objects.PodInfo("default", "w", "u", "n", (), False, (), (("app", "web"),), "Running")
    assert kube.Selection(selector=selector).matches(p) is ok


def test_bad_selector():
    with pytest.raises(UserError, match="not a label selector"):
        kube.parse_selector(",=x")


def test_a_node_without_spec_or_status_has_no_cidrs_and_no_addresses(api):
    """doctor failed with AttributeError on such a Node (the real client's models, from the lab's API)."""
    api.add_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bare"}})
    k = kube.KubeClient(str(api.kubeconfig))
    cidrs = k.pod_cidrs()
    assert cidrs["bare"] == [] and cidrs["node-a"] == ["10.244.0.0/24"]
    assert k.node_name(None, {"192.168.1.6"}) == "node-b"
    with pytest.raises(UserError, match="cannot tell which Kubernetes node"):   # the bare one looked at too
        k.node_name(None, {"10.9.9.9"})


def test_a_pod_missing_optional_fields_is_read():
    p = objects.pod_info({"metadata": {"name": "p", "namespace": "ns"}})
    assert (p.key, p.ips, p.ports, p.labels, p.node, p.host_network) == ("ns/p", (), (), (), None, False)
    odd = {"metadata": {"name": "q", "namespace": "ns", "labels": ["x"]}, "spec": {"containers": [
        {"ports": [{"containerPort": "80"}, {"containerPort": 70000}, {"hostPort": 9100}]}, None]},
        "status": {"podIPs": None, "podIP": "10.0.0.1"}}
    q = objects.pod_info(odd)
    assert q.ports == (9100,) and q.ips == ("10.0.0.1",) and q.labels == ()


_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=6),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                           st.sampled_from(["metadata", "spec", "status", "name", "namespace", "uid", "labels",
                                            "containers", "ports", "containerPort", "hostPort", "podIPs",
                                            "podIP", "ip", "nodeName", "hostNetwork", "phase"]),
                           inner, max_size=6),
                       max_leaves=40)


@given(_values)
def test_any_pod_object_is_read_without_raising(obj):
    p = objects.pod_info(obj)
    assert isinstance(p.key, str) and all(isinstance(port, int) for port in p.ports)
