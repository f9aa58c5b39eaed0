"""Pod attribution on plain data: the join of API pods and node namespaces,
and what a kernel tag or a hostNetwork port means."""

from datetime import UTC, datetime

from tracer.kernel.decode import Drop
from tracer.kernel.event import ND_DIR_FROM_POD, ND_DIR_IN_POD, ND_DIR_TO_POD
from tracer.pods.attribute import PodIds, PodIndex
from tracer.pods.kube import PodInfo, Selection
from tracer.pods.nodeview import HostVeth, NetnsInfo, NodeSnapshot

NODE = 4026531840


def pod(name, ips, ns="default", host_network=False, ports=(), labels=(), phase="Running"):
    return PodInfo(ns, name, f"uid-{name}", "node-a", tuple(ips), host_network, tuple(ports), tuple(labels), phase)


def snapshot():
    return NodeSnapshot(NODE, ("192.168.1.5", "10.244.1.1"), {
        101: NetnsInfo(101, ("cni-aaa",), (), ("10.244.1.10", "fd00::a"), HostVeth(7, "veth1a")),
        102: NetnsInfo(102, ("cni-bbb",), (), ("10.244.1.11",), HostVeth(8, "cali2b")),
        103: NetnsInfo(103, (), (4242,), ("10.244.1.12",), HostVeth(9, "lxc3c")),   # unnamed, held by a process
        104: NetnsInfo(104, ("cni-ddd",), (), ("10.244.1.13",), HostVeth(10, "veth4d")),
        105: NetnsInfo(105, ("cni-eee",), (), ("10.244.1.13",), HostVeth(11, "veth5e")),  # stale twin
        106: NetnsInfo(106, ("other",), (), ("172.16.0.2",), None),
    })


PODS = [
    pod("web", ["10.244.1.10", "fd00::a"], labels=[("app", "web")]),
    pod("db", ["10.244.1.11"], ns="data", labels=[("app", "db")]),
    pod("cache", ["10.244.1.12"], labels=[("app", "cache")]),
    pod("twin", ["10.244.1.13"]),
    pod("pending", ["10.244.1.99"]),
    pod("exporter", ["192.168.1.5"], ns="monitoring", host_network=True, ports=[9100]),
    pod("done", ["10.244.1.50"], phase="Succeeded"),
]


def drop(**kw) -> Drop:
    base = dict(time=datetime(2026, 1, 1, tzinfo=UTC), reason="NO_SOCKET", reason_raw=3,
                location="__udp4_lib_rcv", location_raw=1, netns=NODE, ifindex=2, ifname="eth0",
                dev_mtu=1500, out_ifindex=None, out_ifname=None, mtu=None, family=4, proto="udp",
                src="172.16.0.2", dst="192.168.1.5", sport=40000, dport=9100, len=100, df=False,
                fragment=False, icmp_sent=None, pod_raw=0)
    base.update(kw)
    return Drop(**base)


def test_join_by_ip_across_named_and_unnamed_namespaces():
    idx = PodIndex(snapshot(), PODS, "node-a", PodIds())
    names = {idx.ids.refs[p].name: inode for inode, p in idx.by_netns.items()}
    assert names == {"web": 101, "db": 102, "cache": 103}
    # Two sandboxes claim twin's address: no guess. pending has no sandbox here yet.
    assert [p.name for p in idx.ambiguous] == ["twin"] and [p.name for p in idx.missing] == ["pending"]
    assert [p.name for p in idx.host_network] == ["exporter"]


def test_kernel_maps_for_a_selection():
    idx = PodIndex(snapshot(), PODS, "node-a", PodIds(), Selection(name="web"))
    k = idx.kernel_pods()
    web = idx.by_netns[101]
    assert k.filter and k.node_netns == NODE
    assert k.netns[101] == (web << 2, True) and k.netns[102][1] is False
    assert k.veth[(NODE, 7)] == (web << 2, True) and k.veth[(NODE, 8)][1] is False
    assert k.ips["fd00::a"] == (web << 2, True) and "192.168.1.5" not in k.ips
    # exporter (hostNetwork) is known by its port on the node's addresses.
    assert k.hostports[9100][1] is False and k.node_ips == {"192.168.1.5", "10.244.1.1"}
    assert not PodIndex(snapshot(), PODS, "node-a", PodIds()).kernel_pods().filter


def test_selection_by_labels_and_namespaces():
    all_ns = PodIndex(snapshot(), PODS, "node-a", PodIds(), Selection(selector="app", all_namespaces=True))
    assert sorted(r.name for r in all_ns.selected_refs()) == ["cache", "db", "web"]
    default = PodIndex(snapshot(), PODS, "node-a", PodIds(), Selection(selector="app!=web"))
    assert [r.name for r in default.selected_refs()] == ["cache"]


def test_tags_name_pod_and_direction_and_ids_outlive_pods():
    ids = PodIds()
    idx = PodIndex(snapshot(), PODS, "node-a", ids)
    web = idx.by_netns[101]
    who = idx.attribute(drop(pod_raw=web << 2 | ND_DIR_IN_POD, netns=101))
    assert (who.pod.name, who.pod.namespace, who.pod.uid, who.direction) == ("web", "default", "uid-web", "in-pod")
    assert idx.attribute(drop(pod_raw=web << 2 | ND_DIR_FROM_POD)).direction == "from-pod"
    assert idx.attribute(drop(pod_raw=web << 2 | ND_DIR_TO_POD)).direction == "to-pod"
    # web is deleted; a late event still names it, and its id is never reused.
    later = PodIndex(snapshot(), [p for p in PODS if p.name != "web"], "node-a", ids)
    assert later.attribute(drop(pod_raw=web << 2 | ND_DIR_IN_POD)).pod.name == "web"
    assert web not in later.by_netns.values()
    assert later.attribute(drop(pod_raw=999 << 2 | 1, dport=53)).pod is None


def test_host_network_pod_only_by_a_port_of_its_own():
    idx = PodIndex(snapshot(), PODS, "node-a", PodIds(), Selection(name="exporter", namespace="monitoring"))
    pid = idx.hostports[9100]
    assert pid in idx.selected and idx.kernel_pods().hostports == {9100: (pid << 2, True)}
    who = idx.attribute(drop(pod_raw=pid << 2 | ND_DIR_TO_POD))
    assert who.pod.name == "exporter" and who.pod.host_network and who.direction == "to-pod"
    assert who.pod.to_json()["hostNetwork"] is True
    # Two hostNetwork pods declaring the same port: neither can be named by it.
    two = PODS + [pod("exporter2", ["192.168.1.5"], ns="monitoring", host_network=True, ports=[9100])]
    both = PodIndex(snapshot(), two, "node-a", PodIds())
    assert both.hostports == {} and [p.name for p in both.untraceable] == ["exporter", "exporter2"]
    assert both.kernel_pods().node_ips == frozenset()


def test_without_api_sandboxes_are_unknown_pods():
    idx = PodIndex(snapshot(), None, "node-a", PodIds(), Selection(name="web"))
    refs = idx.selected_refs()
    assert len(refs) == 5 and all(not r.known for r in refs)
    who = idx.attribute(drop(pod_raw=idx.by_netns[103] << 2 | ND_DIR_IN_POD, netns=103))
    assert who.pod.to_json() is None and who.direction == "in-pod"
    assert who.pod.label == "unknown pod (pid 4242, 10.244.1.12)"
