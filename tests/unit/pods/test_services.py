"""Services from the API (kube.service_info, KubeClient.list_services through the real
client against the lab's API server) and doctor's IPv6 check on plain data."""

import pytest
from hypothesis import given
from rich.console import Console

from tracer.doctor.node import Node
from tracer.doctor.pods import NO_API, ApiFacts, pod_ipv6_findings
from tracer.doctor.view import render
from tracer.lab import api as labapi
from tracer.pods import kube
from tracer.node.table import HostVeth, NetnsInfo

from ..strategies import json_values


@pytest.fixture
def api(tmp_path):
    server = labapi.KubeAPI()
    server.start()
    server.put_service(labapi.service_object("db-svc", "default", {"app": "db"}, ip_family_policy="RequireDualStack",
                                             cluster_ips=["10.96.0.21", "fd00:96::21"]))
    server.put_service(labapi.service_object("web", "shop", {"app": "web"}))
    server.put_service(labapi.service_object("external", "default", None))
    server.kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    yield server
    server.stop()


def test_services_of_every_namespace_are_listed(api):
    services = {s.key: s for s in kube.KubeClient(str(api.kubeconfig)).list_services()}
    assert set(services) == {"default/db-svc", "shop/web", "default/external"}
    db = services["default/db-svc"]
    assert db.selector == (("app", "db"),) and db.ip_family_policy == "RequireDualStack"
    assert db.ip_families == ("IPv4", "IPv6") and db.cluster_ips == ("10.96.0.21", "fd00:96::21")
    assert db.ipv6 == "RequireDualStack" and db.primary_family == "IPv4"
    assert services["shop/web"].ipv6 is None and services["default/external"].selector == ()
    assert [r.partition("?")[0] for r in api.requests] == ["/api/v1/services"]     # one list, every namespace


def test_an_api_that_refuses_services_is_unavailable(api, monkeypatch):
    k = kube.KubeClient(str(api.kubeconfig))
    api.token = "changed"       # every call now answers 401
    with pytest.raises(kube.KubeUnavailable, match="401"):
        k.list_services()


def pod(name, labels, namespace="default"):
    return kube.pod_info({"metadata": {"name": name, "namespace": namespace, "uid": name, "labels": labels}})


def svc(name, selector, namespace="default", **spec):
    return kube.service_info({"metadata": {"name": name, "namespace": namespace},
                              "spec": {"selector": selector, **spec}})


def test_a_service_selects_pods_of_its_namespace_with_all_its_labels():
    s = svc("db-svc", {"app": "db", "tier": "data"})
    assert s.selects(pod("db-0", {"app": "db", "tier": "data", "x": "y"}))
    assert not s.selects(pod("db-1", {"app": "db"}))
    assert not s.selects(pod("db-0", {"app": "db", "tier": "data"}, namespace="other"))
    assert not svc("none", None).selects(pod("db-0", {"app": "db"}))
    assert not svc("empty", {}).selects(pod("db-0", {}))


@pytest.mark.parametrize("spec,ipv6,primary", [
    ({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4"], "clusterIPs": ["10.96.0.1"]}, "PreferDualStack",
     "IPv4"),
    ({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"], "clusterIPs": ["fd00::1"]}, "ipFamilies IPv6", "IPv6"),
    ({"clusterIP": "fd00::1"}, "clusterIP fd00::1", "IPv6"),           # an older API: no ipFamilies
    ({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"], "clusterIPs": ["10.96.0.1"]}, None, "IPv4"),
    ({"clusterIP": "None"}, None, None),                                # headless, no families
])
def test_which_services_send_ipv6(spec, ipv6, primary):
    s = svc("s", {"app": "a"}, **spec)
    assert s.ipv6 == ipv6 and s.primary_family == primary


def test_a_selector_with_a_value_that_is_no_text_selects_nothing():
    # Dropping the odd term would select more pods than the Service does.
    s = svc("s", {"app": "db", "tier": 3})
    assert s.selector == () and not s.selects(pod("db-0", {"app": "db", "tier": "3"}))


_services = json_values(["metadata", "spec", "name", "namespace", "selector", "app", "ipFamilyPolicy",
                         "ipFamilies", "clusterIPs", "clusterIP"])


@given(_services)
def test_any_service_object_is_read_without_raising(obj):
    s = kube.service_info(obj)
    assert isinstance(s.key, str) and all(isinstance(k, str) and isinstance(v, str) for k, v in s.selector)
    assert s.ipv6 is None or isinstance(s.ipv6, str)
    assert s.primary_family in (None, "IPv4", "IPv6") or isinstance(s.primary_family, str)
    s.selects(pod("p", {"app": "x"}))


# -- doctor's check on plain data: the pods with IPv6 off, the Services, the API's pods --

DB, WEB = 101, 102


def node():
    pods = [NetnsInfo(DB, ("cni-aaa",), (), ("10.244.1.11", "fd00:244:1::11"), HostVeth(7, "veth1")),
            NetnsInfo(WEB, ("cni-bbb",), (), ("10.244.1.10", "fd00:244:1::10"), HostVeth(8, "veth2"))]
    return Node("/run/netns/x", "sim", pods, {DB: "default/db-0", WEB: "default/web-1"})


API_PODS = {DB: pod("db-0", {"app": "db"}), WEB: pod("web-1", {"app": "web"})}


def check(services, off=None, pods=API_PODS):
    return pod_ipv6_findings(node(), {DB: ["eth0"]} if off is None else off,
                             ApiFacts(services if services is None else tuple(services), pods))


def test_a_pod_with_ipv6_off_behind_a_dual_stack_service_is_a_warning():
    [f] = check([svc("db-svc", {"app": "db"}, ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"],
                     clusterIPs=["10.96.0.21", "fd00:96::21"]),
                 svc("web", {"app": "web"}, ipFamilyPolicy="PreferDualStack")])
    assert f.severity == "warning" and "IPV6DISABLED" in f.summary and "behind dual-stack Services" in f.summary
    assert f.evidence == ["default/db-0: eth0 disable_ipv6=1; behind dual-stack Service default/db-svc "
                          "(RequireDualStack)"]
    assert "disable_ipv6=0" in f.fix
    assert f.fix.endswith("""kubectl -n default patch service db-svc -p '{"spec":{"ipFamilyPolicy":"SingleStack"}}'""")


def test_several_services_are_named_and_an_ipv6_primary_service_is_not_made_single_stack():
    services = [svc(f"s{i}", {"app": "db"}, ipFamilyPolicy="PreferDualStack") for i in range(4)]
    [f] = check([svc("v6", {"app": "db"}, ipFamilyPolicy="SingleStack", ipFamilies=["IPv6"])] + services)
    assert f.severity == "warning" and "behind IPv6 Services" in f.summary
    assert f.evidence == ["default/db-0: eth0 disable_ipv6=1; behind IPv6 Services default/v6 (ipFamilies IPv6), "
                          "default/s0 (PreferDualStack), default/s1 (PreferDualStack) and 2 more"]
    assert "primary family is IPv6" in f.fix and "SingleStack'" not in f.fix


def test_single_stack_services_or_other_pods_give_no_warning():
    [f] = check([svc("db-svc", {"app": "db"}, ipFamilyPolicy="SingleStack", ipFamilies=["IPv4"]),
                 svc("web", {"app": "web"}, ipFamilyPolicy="RequireDualStack"),
                 svc("other-ns", {"app": "db"}, namespace="shop", ipFamilyPolicy="RequireDualStack"),
                 svc("no-selector", None, ipFamilyPolicy="RequireDualStack")])
    assert f.severity == "info" and "no dual-stack Service selects it" in f.summary and "4 Services read" in f.summary
    assert f.evidence == ["default/db-0: eth0 disable_ipv6=1; no IPv6 Service selects it"]


def test_a_sandbox_the_api_does_not_name_is_said_so():
    [f] = check([svc("db-svc", {"app": "db"}, ipFamilyPolicy="RequireDualStack")], pods={})
    assert f.severity == "info" and f.evidence == ["default/db-0: eth0 disable_ipv6=1; not a pod the API names: "
                                                   "its Services unknown"]


def test_ipv6_everywhere_is_ok():
    [f] = check([svc("db-svc", {"app": "db"}, ipFamilyPolicy="RequireDualStack")], off={})
    assert f.severity == "ok" and "2 pods; 1 Service read, 1 with IPv6" in f.summary


def test_without_services_the_node_level_check_says_they_were_not_read():
    [f] = check(None)
    assert f.severity == "warning" and "of a dual-stack node" in f.summary
    assert "Services not read (no Kubernetes API (--kubeconfig))" in f.summary
    assert f.evidence == ["default/db-0: eth0 disable_ipv6=1"]
    single = Node(None, "sim", [NetnsInfo(DB, ("cni-aaa",), (), ("10.244.1.11",), HostVeth(7, "veth1"))])
    [ok] = pod_ipv6_findings(single, {DB: ["eth0"]}, NO_API)
    assert ok.severity == "ok" and "single-stack node" in ok.summary


def test_service_names_reach_the_terminal_escaped():
    evil = svc("db\x1b]0;pwned\x07", {"app": "db"}, ipFamilyPolicy="RequireDualStack")
    findings = check([evil])
    assert "kubectl" not in findings[0].fix       # not a name the API allows: no command built with it
    console = Console(width=200, record=True, force_terminal=False)
    console.print(render(findings, node(), 200), soft_wrap=True)
    text = console.export_text()
    assert "\x1b" not in text and "db\\x1b]0;pwned\\x07" in text
