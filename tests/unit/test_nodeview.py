"""nodeview's incremental state (NodeTable) and its netlink parsers, on plain data."""

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from tracer.pods import nodeview as nv
from tracer.pods.nodeview import Changes, HostVeth, NodeTable

NODE = 4026531840


def where(name: str | None = None, pid: int | None = None) -> nv.FoundNetns:
    return {"path": f"/run/netns/{name}" if name else f"/proc/{pid}/ns/net",
            "names": [name] if name else [], "pids": [pid] if pid else []}


def pod_table() -> NodeTable:
    """A node with one pod: namespace 101 (nsid 5), its eth0 (index 2) paired with the node's veth 9."""
    t = NodeTable(NODE, node_ips=("192.168.1.5",))
    t.add_found({101: where("cni-a")}, now=0.0)
    t.link(9, ("vethaaa", 2, 5))
    t.read(101, ("10.244.1.10",), {2: ("eth0", 9, 0)}, nsid=5)
    return t


def test_a_pod_is_joined_by_its_veth_pair_and_namespace_id():
    t = pod_table()
    info = t.snapshot().namespaces[101]
    assert info.host_veth == HostVeth(9, "vethaaa") and info.ips == ("10.244.1.10",)
    assert [n.inode for n in t.snapshot().pod_like()] == [101]


def test_the_same_index_in_another_namespace_is_not_its_pair():
    t = NodeTable(NODE)
    t.add_found({101: where("cni-a"), 102: where("cni-b")}, now=0.0)
    t.link(9, ("vethaaa", 2, 5))              # points into nsid 5 (namespace 101)
    t.read(102, ("10.244.1.11",), {2: ("eth0", 9, 0)}, nsid=6)
    assert t.snapshot().namespaces[102].host_veth is None


def test_snapshot_is_the_same_object_until_something_changes():
    t = pod_table()
    first = t.snapshot()
    t.read(101, ("10.244.1.10",), {2: ("eth0", 9, 0)}, nsid=5)      # read again, nothing new
    t.set_node_ips(("192.168.1.5",))
    assert t.snapshot() is first
    t.set_node_ips(("192.168.1.6",))
    assert t.snapshot() is not first and t.snapshot().node_ips == ("192.168.1.6",)


def test_a_veth_that_goes_names_its_namespace_to_look_at_again():
    t = pod_table()
    owners, unknown = t.link(9, None)
    assert owners == {101} and unknown == set()
    assert 9 not in t.node_veths


def test_a_new_veth_into_an_unknown_namespace_is_reported_as_such():
    t = pod_table()
    owners, unknown = t.link(12, ("vethbbb", 2, 7))
    assert owners == set() and unknown == {7}
    # once the namespace is known by its id, the same veth names it
    t.add_found({103: where("cni-c")}, now=1.0)
    t.set_nsid(103, 7)
    assert t.link(12, ("vethbbb", 2, 7)) == ({103}, set())


def test_a_veth_deleted_with_its_namespace_is_not_looked_for():
    t = pod_table()
    t.forget(101)
    assert t.link(9, None) == (set(), set())


def test_forget_removes_the_namespace_everywhere():
    t = pod_table()
    first = t.snapshot()
    t.forget(101)
    assert 101 not in t.snapshot().namespaces and t.snapshot() is not first
    assert t.owner_of_nsid(5) is None and 101 not in t.found


def test_named_listing_reports_new_and_lost_names():
    t = pod_table()
    new, lost = t.named_listing({102: where("cni-b")}, now=2.0)
    assert new == {102} and lost == {101}
    assert t.found[101]["names"] == []          # kept until the caller finds it gone


def test_a_namespace_that_loses_its_name_but_has_a_process_is_entered_through_it():
    t = NodeTable(NODE)
    t.add_found({101: {"path": "/run/netns/cni-a", "names": ["cni-a"], "pids": [42]}}, now=0.0)
    t.read(101, ("10.244.1.10",), {}, nsid=None)
    t.named_listing({}, now=1.0)
    assert t.found[101]["path"] == "/proc/42/ns/net"
    assert t.snapshot().namespaces[101].names == () and t.snapshot().namespaces[101].path == "/proc/42/ns/net"


def test_pending_are_recent_namespaces_wired_but_without_address():
    t = NodeTable(NODE)
    t.add_found({101: where("cni-a"), 102: where("cni-b"), 103: where("other")}, now=0.0)
    t.link(9, ("vethaaa", 2, 5))
    t.read(101, (), {2: ("eth0", 9, 0)}, nsid=5)     # wired, no address yet: CNI still at work
    t.read(103, ("10.0.0.1",), {}, nsid=None)        # no veth: waits for a link event, not polled
    assert t.pending(now=1.0) == {101}                 # 102 never read: nothing leads into it
    assert t.pending(now=nv.PENDING_SECONDS + 1) == set()
    t.read(101, ("10.244.1.10",), {2: ("eth0", 9, 0)}, nsid=None)
    assert 101 not in t.pending(now=1.0) and t.complete(101)


def test_only_namespaces_a_node_veth_leads_into_are_wired():
    t = NodeTable(NODE)
    t.add_found({101: where("cni-a"), 102: where("other-lab"), 103: where("cni-b")}, now=0.0)
    t.set_nsid(101, 5)
    t.set_nsid(102, 6)          # the node has an id for it, but no veth of the node leads there
    t.set_node_veths({9: ("vethaaa", 2, 5), 10: ("vethbbb", 2, 7)})
    assert t.wired() == {101}
    assert t.lacking_nsid() == [103] and t.lacking_nsid(now=PENDING_LATER) == []
    t.set_nsid(103, 7)
    assert t.wired() == {101, 103}


PENDING_LATER = nv.PENDING_SECONDS + 1


def test_set_node_veths_reports_the_namespaces_whose_host_side_changed():
    t = pod_table()
    assert t.set_node_veths({9: ("vethaaa", 2, 5)}) == set()
    assert t.set_node_veths({}) == {101}


def test_dropped_names_leave_namespaces_without_a_name_lost_unless_a_process_holds_them():
    t = NodeTable(NODE)
    t.add_found({101: where("cni-a"), 102: {"path": "/run/netns/cni-b", "names": ["cni-b", "alias"], "pids": []},
                 103: {"path": "/run/netns/cni-c", "names": ["cni-c"], "pids": [42]}}, now=0.0)
    assert t.drop_names({"cni-a", "cni-b", "cni-c"}, now=1.0) == {101, 103}
    assert t.found[102]["names"] == ["alias"] and t.found[103]["path"] == "/proc/42/ns/net"


def inotify_event(mask: int, name: str) -> bytes:
    raw = name.encode() + b"\0"
    raw += bytes(-len(raw) % 16)
    return struct.pack("=iIII", 1, mask, 0, len(raw)) + raw


def test_inotify_events_give_the_names_made_and_removed():
    changes = Changes()
    nv.parse_inotify(inotify_event(nv.IN_CREATE, "cni-a") + inotify_event(nv.IN_DELETE, "cni-b")
                     + inotify_event(nv.IN_MOVED_TO, "cni-c"), changes)
    assert changes.created == {"cni-a", "cni-c"} and changes.deleted == {"cni-b"} and not changes.names
    nv.parse_inotify(struct.pack("=iIII", -1, nv.IN_Q_OVERFLOW, 0, 0), changes)
    assert changes.names


@given(st.binary(max_size=256))
def test_inotify_parser_survives_any_input(data):
    changes = Changes()
    nv.parse_inotify(data, changes)
    assert all(isinstance(n, str) for n in changes.created | changes.deleted)


def test_node_namespace_is_never_one_of_the_pods():
    t = NodeTable(NODE)
    assert t.add_found({NODE: where("node")}, now=0.0) == set()
    assert NODE not in t.found


# ------------------------------------------------------------------ the parsers

def rtattr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + bytes(-len(data) % 4)


def nlmsg(kind: int, body: bytes, seq: int = 1) -> bytes:
    data = struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body
    return data + bytes(-len(data) % 4)


def link_body(index: int, name: str, kind: str | None, peer: int | None, nsid: int | None,
              family: int = 0) -> bytes:
    body = struct.pack("=BxHiII", family, 1, index, 0, 0) + rtattr(nv.IFLA_IFNAME, name.encode() + b"\0")
    if kind:
        body += rtattr(nv.IFLA_LINKINFO, rtattr(nv.IFLA_INFO_KIND, kind.encode() + b"\0"))
    if peer is not None:
        body += rtattr(nv.IFLA_LINK, struct.pack("=I", peer))
    if nsid is not None:
        body += rtattr(nv.IFLA_LINK_NETNSID, struct.pack("=i", nsid))
    return body


def addr_body(family: int, addr: str) -> bytes:
    return struct.pack("=BBBBI", family, 24, 0, 0, 2) + rtattr(nv.IFA_ADDRESS, socket.inet_pton(family, addr))


def test_link_messages_give_veths_with_their_peer_and_namespace_id():
    data = nlmsg(nv.RTM_NEWLINK, link_body(9, "veth1234", "veth", 2, 5)) \
        + nlmsg(nv.RTM_NEWLINK, link_body(3, "cni0", "bridge", None, None)) \
        + nlmsg(nv.RTM_NEWLINK, link_body(4, "veth-local", "veth", 5, None))
    msgs = nv.parse_messages(data)
    assert [m.kind for m in msgs] == [nv.RTM_NEWLINK] * 3
    assert nv.veths_of(msgs) == {9: ("veth1234", 2, 5), 4: ("veth-local", 5, None)}


def test_addresses_skip_loopback_and_link_local():
    msgs = nv.parse_messages(nlmsg(nv.RTM_NEWADDR, addr_body(socket.AF_INET, "10.244.1.10"))
                             + nlmsg(nv.RTM_NEWADDR, addr_body(socket.AF_INET, "127.0.0.1"))
                             + nlmsg(nv.RTM_NEWADDR, addr_body(socket.AF_INET6, "fe80::1"))
                             + nlmsg(nv.RTM_NEWADDR, addr_body(socket.AF_INET6, "fd00::a")))
    assert nv.global_ips(msgs) == ("10.244.1.10", "fd00::a")


def test_notifications_fold_into_changes():
    changes = Changes()
    nv.parse_events(nlmsg(nv.RTM_NEWLINK, link_body(9, "veth1", "veth", 2, 5))
                    + nlmsg(nv.RTM_DELLINK, link_body(8, "veth0", "veth", 2, 4))
                    + nlmsg(nv.RTM_NEWNSID, b"\0" * 4), changes)
    assert changes.links == {9: ("veth1", 2, 5), 8: None} and changes.nsids and not changes.addrs
    assert changes and not Changes()


def test_bridge_and_ipv6_link_messages_are_not_news_of_the_veth():
    """The bridge's port-state RTM_NEWLINK (AF_BRIDGE) and IPv6's (AF_INET6) carry no
    IFLA_LINKINFO: taken for the link's own, they made a pod's veth look gone."""
    changes = Changes()
    nv.parse_events(nlmsg(nv.RTM_NEWLINK, link_body(9, "veth1", None, None, None, family=socket.AF_BRIDGE))
                    + nlmsg(nv.RTM_NEWLINK, link_body(9, "veth1", None, None, None, family=socket.AF_INET6)),
                    changes)
    assert changes.links == {} and not changes


def test_a_new_veths_link_local_address_is_no_news_of_the_nodes_addresses():
    changes = Changes()
    nv.parse_events(nlmsg(nv.RTM_NEWADDR, addr_body(socket.AF_INET6, "fe80::1c2d:3eff:fe4f:5a6b")), changes)
    assert not changes.addrs
    nv.parse_events(nlmsg(nv.RTM_NEWADDR, addr_body(socket.AF_INET, "192.168.1.7")), changes)
    assert changes.addrs


def test_a_link_message_too_short_is_lost_notifications():
    changes = Changes()
    nv.parse_events(nlmsg(nv.RTM_NEWLINK, b"\0" * 8), changes)
    assert changes.overflow


def test_nsid_reply():
    reply = nlmsg(nv.RTM_NEWNSID, struct.pack("=B3x", 0) + rtattr(nv.NETNSA_NSID, struct.pack("=i", 7)))
    assert nv.parse_nsid_reply(reply) == 7
    unassigned = nlmsg(nv.RTM_NEWNSID, struct.pack("=B3x", 0) + rtattr(nv.NETNSA_NSID, struct.pack("=i", -1)))
    assert nv.parse_nsid_reply(unassigned) is None


valid = st.sampled_from([
    nlmsg(nv.RTM_NEWLINK, link_body(9, "veth1234", "veth", 2, 5)),
    nlmsg(nv.RTM_NEWADDR, addr_body(socket.AF_INET6, "fd00::a")),
    nlmsg(nv.RTM_NEWNSID, struct.pack("=B3x", 0) + rtattr(nv.NETNSA_NSID, struct.pack("=i", 7))),
])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(b"".join(draw(st.lists(valid, min_size=1, max_size=4))))
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    return bytes(data[:draw(st.integers(0, len(data)))])


@given(st.one_of(st.binary(max_size=512), mutated()))
def test_parsers_survive_any_input(data):
    msgs = nv.parse_messages(data)
    for m in msgs:
        link = nv.parse_link(m.body)
        assert link is None or isinstance(link[0], int)
        addr = nv.parse_addr(m.body)
        assert addr is None or isinstance(addr, str)
        nv.attrs(m.body, 0)
    nv.veths_of(msgs)
    nv.global_ips(msgs)
    nv.parse_events(data, Changes())
    nsid = nv.parse_nsid_reply(data)
    assert nsid is None or nsid >= 0
