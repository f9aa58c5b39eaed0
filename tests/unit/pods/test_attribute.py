"""Pod attribution on plain data: the join of API pods and node namespaces,
and what a kernel tag or a hostNetwork port means."""

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from tracer.kernel.decode import Drop
from tracer.kernel.event import ND_DIR_FROM_POD, ND_DIR_IN_POD, ND_DIR_TO_POD
from tracer.pods.attribute import PodIds, PodIndex
from tracer.pods.kube import Selection
from tracer.pods.objects import PodInfo
from tracer.node.table import HostVeth, NetnsInfo, NodeSnapshot

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


def tag(idx, inode, direction):
    return idx.by_netns[inode] << 2 | direction


def test_peer_is_the_pod_at_the_other_end_on_the_node():
    idx = PodIndex(snapshot(), PODS, "node-a", PodIds())
    # web -> db dropped in the node's FORWARD: the kernel tags the source, web.
    who = idx.attribute(drop(pod_raw=tag(idx, 101, ND_DIR_FROM_POD), src="10.244.1.10", dst="10.244.1.11",
                             reason="NETFILTER_DROP", location="nft_do_chain"))
    assert (who.pod.name, who.direction) == ("web", "from-pod")
    assert (who.peer.name, who.peer.namespace, who.peer_direction) == ("db", "data", "to-pod")
    # A reply db -> web tagged to-pod (say by the veth it was going out on): peer is the source.
    back = idx.attribute(drop(pod_raw=tag(idx, 101, ND_DIR_TO_POD), src="10.244.1.11", dst="10.244.1.10"))
    assert (back.pod.name, back.peer.name, back.peer_direction) == ("web", "db", "from-pod")
    # IPv6 ends too, and a pod in a namespace only a process holds.
    v6 = idx.attribute(drop(pod_raw=tag(idx, 103, ND_DIR_TO_POD), family=6, src="fd00::a", dst="10.244.1.12"))
    assert (v6.pod.name, v6.peer.name) == ("cache", "web")


def test_peer_inside_the_receiving_pod_by_which_end_is_its_own():
    idx = PodIndex(snapshot(), PODS, "node-a", PodIds())
    # web -> db:9999, nobody listens: dropped in db's namespace.
    got = idx.attribute(drop(pod_raw=tag(idx, 102, ND_DIR_IN_POD), netns=102, src="10.244.1.10",
                             dst="10.244.1.11", dport=9999))
    assert (got.pod.name, got.direction, got.peer.name, got.peer_direction) == ("db", "in-pod", "web", "from-pod")
    # A packet db sends, dropped in db's own namespace: web is where it was going.
    out = idx.attribute(drop(pod_raw=tag(idx, 102, ND_DIR_IN_POD), netns=102, src="10.244.1.11",
                             dst="10.244.1.10"))
    assert (out.peer.name, out.peer_direction) == ("web", "to-pod")
    # Neither end is db's address (a DNAT'd destination seen before translation): no guess.
    odd = idx.attribute(drop(pod_raw=tag(idx, 102, ND_DIR_IN_POD), netns=102, src="10.244.1.10",
                             dst="10.96.0.10"))
    assert odd.pod.name == "db" and odd.peer is None and odd.peer_direction is None


def test_no_peer_when_the_other_end_is_no_pod_or_ambiguous():
    idx = PodIndex(snapshot(), PODS, "node-a", PodIds())
    web = tag(idx, 101, ND_DIR_FROM_POD)
    for dst in ("172.16.0.2",        # outside the node
                "10.244.1.13",       # twin's address, claimed by two sandboxes
                "192.168.1.5",       # a node address: hostNetwork pods share it
                "10.244.1.10",       # web itself (a Service hairpin)
                "10.244.1.99"):      # pending: no sandbox yet
        who = idx.attribute(drop(pod_raw=web, src="10.244.1.10", dst=dst))
        assert who.pod.name == "web" and who.peer is None and who.peer_direction is None, dst
    # A hostNetwork pod's drop names a pod peer by the pod's address, never by a node address.
    exp = idx.hostports[9100]
    hn = idx.attribute(drop(pod_raw=exp << 2 | ND_DIR_TO_POD, src="10.244.1.11", dst="192.168.1.5"))
    assert (hn.pod.name, hn.peer.name, hn.peer_direction) == ("exporter", "db", "from-pod")
    # No pod, no peer; a drop without addresses has none either.
    assert idx.attribute(drop(src="10.244.1.10", dst="10.244.1.11")).peer is None
    assert idx.attribute(drop(pod_raw=web, src=None, dst=None, family=0, proto=None)).peer is None


def test_pod_filter_keeps_the_filtered_pod_as_pod():
    # --pod db: the kernel tags db (to-pod) for web -> db; a tag from maps of an
    # older index that names web is turned round in Python: db stays `pod`.
    idx = PodIndex(snapshot(), PODS, "node-a", PodIds(), Selection(name="db", namespace="data"))
    packet = dict(src="10.244.1.10", dst="10.244.1.11")
    right = idx.attribute(drop(pod_raw=tag(idx, 102, ND_DIR_TO_POD), **packet))
    swapped = idx.attribute(drop(pod_raw=tag(idx, 101, ND_DIR_FROM_POD), **packet))
    for who in (right, swapped):
        assert (who.pod.name, who.direction, who.peer.name, who.peer_direction) == ("db", "to-pod", "web", "from-pod")


def test_without_api_peers_are_unknown_sandboxes():
    idx = PodIndex(snapshot(), None, "node-a", PodIds())
    who = idx.attribute(drop(pod_raw=tag(idx, 101, ND_DIR_FROM_POD), src="10.244.1.10", dst="10.244.1.12"))
    assert who.peer is not None and not who.peer.known and who.peer.label == "unknown pod (pid 4242, 10.244.1.12)"
    # The twins' address names neither of them.
    assert idx.attribute(drop(pod_raw=tag(idx, 101, ND_DIR_FROM_POD), src="10.244.1.10",
                              dst="10.244.1.13")).peer is None


ADDRS = ["10.244.1.10", "fd00::a", "10.244.1.11", "10.244.1.12", "10.244.1.13", "192.168.1.5", "10.244.1.1",
         "172.16.0.2", "10.96.0.10"]


@given(st.sampled_from([101, 102, 103]), st.sampled_from([ND_DIR_IN_POD, ND_DIR_FROM_POD, ND_DIR_TO_POD]),
       st.sampled_from(ADDRS), st.sampled_from(ADDRS), st.sampled_from([None, "web", "db", "cache"]))
def test_peer_is_another_pod_named_by_one_address(inode, direction, src, dst, selected):
    sel = Selection(name=selected, all_namespaces=True) if selected else Selection()
    idx = PodIndex(snapshot(), PODS, "node-a", PodIds(), sel)
    who = idx.attribute(drop(pod_raw=tag(idx, inode, direction), src=src, dst=dst))
    assert who.pod is not None
    if who.peer is None:
        assert who.peer_direction is None
        return
    assert who.peer != who.pod and who.peer.name in ("web", "db", "cache")
    assert {who.direction, who.peer_direction} <= {"from-pod", "to-pod", "in-pod"}
    if selected and who.peer.name == selected:
        assert who.pod.name == selected
    named = who.peer if who.pod == idx.ids.refs[idx.by_netns[inode]] else who.pod   # turned round for --pod
    # The end named by address is the one its direction says, an address of its own sandbox, never a node's.
    direction_of_named = who.peer_direction if named is who.peer else who.direction
    end = src if direction_of_named == "from-pod" else dst
    assert end in named.ips and end not in ("192.168.1.5", "10.244.1.1", "10.244.1.13")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sandbox(i: int) -> tuple[NetnsInfo, PodInfo]:
    ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
    return (NetnsInfo(10_000 + i, (f"cni-{i}",), (), (ip,), HostVeth(100 + i, f"veth{i}")),
            pod(f"p{i}", [ip]))


def test_churn_of_100000_pods_keeps_ids_bounded_recent_gone_named_and_never_reuses_an_id():
    clock = Clock()
    ids = PodIds(gone_seconds=600, gone_max=1000, clock=clock)
    live = 10
    tags: dict[int, int] = {}        # pod number -> its tag (in-pod), as a counter key would keep it
    idx = None
    for first in range(0, 100_000 - live + 1, live):   # ten pods at a time replaced by ten new ones
        clock.now += 1.0
        pairs = [sandbox(i) for i in range(first, first + live)]
        snap = NodeSnapshot(NODE, ("192.168.1.5",), {n.inode: n for n, _ in pairs})
        idx = PodIndex(snap, [p for _, p in pairs], "node-a", ids)
        for n, _ in pairs:
            tags[int(n.names[0][4:])] = idx.by_netns[n.inode] << 2 | ND_DIR_IN_POD
        assert len(ids.refs) <= live + 1000
    assert len(set(tags.values())) == 100_000           # every pod its own id: none reused
    assert ids.gone == 1000 and len(ids.refs) == live + 1000
    # The latest gone pods are still named by their tags; the oldest are forgotten.
    assert idx.attribute(drop(pod_raw=tags[99_989], netns=10_000 + 99_989)).pod.name == "p99989"
    assert idx.attribute(drop(pod_raw=tags[98_990])).pod.name == "p98990"
    assert idx.attribute(drop(pod_raw=tags[98_989])).pod is None
    assert idx.attribute(drop(pod_raw=tags[0])).pod is None


def test_a_gone_pod_is_named_for_gone_seconds_and_gets_its_id_back_if_it_returns_meanwhile():
    clock = Clock()
    ids = PodIds(gone_seconds=600, clock=clock)
    first = PodIndex(snapshot(), PODS, "node-a", ids)
    web = first.by_netns[101]
    without_web = [p for p in PODS if p.name != "web"]
    clock.now = 100.0
    gone = PodIndex(snapshot(), without_web, "node-a", ids)
    clock.now = 699.0
    gone = PodIndex(snapshot(), without_web, "node-a", ids)
    assert gone.attribute(drop(pod_raw=web << 2 | ND_DIR_IN_POD)).pod.name == "web"
    back = PodIndex(snapshot(), PODS, "node-a", ids)             # back (same uid) while remembered
    assert back.by_netns[101] == web and ids.gone == 0
    clock.now = 800.0
    PodIndex(snapshot(), without_web, "node-a", ids)
    clock.now = 1401.0                                           # gone for 601 s: forgotten
    later = PodIndex(snapshot(), without_web, "node-a", ids)
    assert later.attribute(drop(pod_raw=web << 2 | ND_DIR_IN_POD)).pod is None
    again = PodIndex(snapshot(), PODS, "node-a", ids)            # back after: a new id, the old one never again
    assert again.by_netns[101] not in (web, *first.by_netns.values())
    assert again.attribute(drop(pod_raw=again.by_netns[101] << 2 | ND_DIR_IN_POD)).pod.name == "web"


def test_attributions_remembered_per_index_and_bounded():
    from tracer.pods import attribute

    ids = PodIds()
    idx = PodIndex(snapshot(), PODS, "node-a", ids)
    packet = dict(pod_raw=tag(idx, 101, ND_DIR_FROM_POD), src="10.244.1.10", dst="10.244.1.11")
    first = idx.attribute(drop(**packet))
    assert (first.pod.name, first.peer.name) == ("web", "db")
    assert idx.attribute(drop(**packet, sport=1, dport=2)) is first     # ports do not matter: the same answer
    # db is gone: the next index names no peer for the same packet (nothing remembered across indexes).
    later = PodIndex(snapshot(), [p for p in PODS if p.name != "db"], "node-a", ids)
    assert later.attribute(drop(**packet)).peer is None
    assert later.attribute(drop(**packet)).pod.name == "web"
    for i in range(3 * attribute.MEMO_MAX):      # a storm of distinct flows stays bounded
        other = f"10.{i >> 16}.{i >> 8 & 255}.{i & 255}"
        got = idx.attribute(drop(pod_raw=packet["pod_raw"], src="10.244.1.10", dst=other))
        assert got.pod.name == "web"
        assert len(idx._memo) <= attribute.MEMO_MAX
    assert idx.attribute(drop(**packet)) == first
