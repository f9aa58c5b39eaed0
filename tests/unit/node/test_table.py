"""nodeview's incremental state (NodeTable), the netlink parsing through pyroute2 (rtnl) and the
notifications folded into changes (nodeevents), on plain data."""

import logging
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer.node import events as ne
from tracer.node import namespaces, table
from tracer.node import rtnl
from tracer.node.events import Changes
from tracer.node.table import HostVeth, NodeTable

NODE = 4026531840


def where(name: str | None = None, pid: int | None = None) -> namespaces.FoundNetns:
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
    assert t.pending(now=table.PENDING_SECONDS + 1) == set()
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


PENDING_LATER = table.PENDING_SECONDS + 1


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
    ne.parse_inotify(inotify_event(ne.IN_CREATE, "cni-a") + inotify_event(ne.IN_DELETE, "cni-b")
                     + inotify_event(ne.IN_MOVED_TO, "cni-c"), changes)
    assert changes.created == {"cni-a", "cni-c"} and changes.deleted == {"cni-b"} and not changes.names
    ne.parse_inotify(struct.pack("=iIII", -1, ne.IN_Q_OVERFLOW, 0, 0), changes)
    assert changes.names


@given(st.binary(max_size=256))
def test_inotify_parser_survives_any_input(data):
    changes = Changes()
    ne.parse_inotify(data, changes)
    assert all(isinstance(n, str) for n in changes.created | changes.deleted)


def test_node_namespace_is_never_one_of_the_pods():
    t = NodeTable(NODE)
    assert t.add_found({NODE: where("node")}, now=0.0) == set()
    assert NODE not in t.found


# ------------------------------------------------------------------ the parsers (pyroute2's, through rtnl)

# Attribute numbers (include/uapi/linux/if_link.h, if_addr.h, net_namespace.h), as the kernel sends them
IFLA_IFNAME, IFLA_LINK, IFLA_LINKINFO, IFLA_LINK_NETNSID, IFLA_INFO_KIND = 3, 5, 18, 37, 1
IFLA_MTU, IFLA_STATS64, IFA_ADDRESS, IFA_LABEL, NETNSA_NSID = 4, 23, 1, 3, 1


def rtattr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + bytes(-len(data) % 4)


def nlmsg(kind: int, body: bytes, seq: int = 1) -> bytes:
    data = struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body
    return data + bytes(-len(data) % 4)


def link_body(index: int, name: str | bytes, kind: str | None, peer: int | None, nsid: int | None,
              family: int = 0) -> bytes:
    """rtnl_fill_ifinfo's order (net/core/rtnetlink.c): name, MTU, ..., statistics, link info."""
    raw = name.encode() if isinstance(name, str) else name
    body = struct.pack("=BxHiII", family, 1, index, 0, 0) + rtattr(IFLA_IFNAME, raw + b"\0") \
        + rtattr(IFLA_MTU, struct.pack("=I", 1500))
    if peer is not None:
        body += rtattr(IFLA_LINK, struct.pack("=I", peer))
    body += rtattr(IFLA_STATS64, bytes(200))
    if kind:
        body += rtattr(IFLA_LINKINFO, rtattr(IFLA_INFO_KIND, kind.encode() + b"\0"))
    if nsid is not None:
        body += rtattr(IFLA_LINK_NETNSID, struct.pack("=i", nsid))
    return body


def addr_body(family: int, addr: str, scope: int | None = None) -> bytes:
    """As the kernel sends it: an IPv6 address's scope is the kernel's (ipv6_addr_scope: link for
    fe80::/10, host for ::1), an IPv4 one's what it was added with."""
    if scope is None:
        scope = {"fe8": 253, "::1": 254}.get(addr[:3], 0) if family == socket.AF_INET6 else 0
    return struct.pack("=BBBBI", family, 24, 0, scope, 2) + rtattr(IFA_ADDRESS, socket.inet_pton(family, addr)) \
        + rtattr(IFA_LABEL, b"eth0\0")


def nsid_reply(nsid: int) -> bytes:
    return nlmsg(rtnl.RTM_NEWNSID, struct.pack("=B3x", 0) + rtattr(NETNSA_NSID, struct.pack("=i", nsid)))


def test_link_messages_give_veths_with_their_peer_and_namespace_id():
    data = nlmsg(rtnl.RTM_NEWLINK, link_body(9, "veth1234", "veth", 2, 5)) \
        + nlmsg(rtnl.RTM_NEWLINK, link_body(3, "cni0", "bridge", None, None)) \
        + nlmsg(rtnl.RTM_NEWLINK, link_body(4, "veth-local", "veth", 5, None))
    msgs = rtnl.decode(data)
    assert [rtnl.kind(m) for m in msgs] == [rtnl.RTM_NEWLINK] * 3
    assert rtnl.veths_of(msgs) == {9: ("veth1234", 2, 5), 4: ("veth-local", 5, None)}


def test_a_veth_name_that_is_not_utf8_is_replaced_not_refused():
    msgs = rtnl.decode(nlmsg(rtnl.RTM_NEWLINK, link_body(9, b"veth\xff\xfe", "veth", 2, 5)))
    assert rtnl.veths_of(msgs) == {9: ("veth\ufffd\ufffd", 2, 5)}


def test_addresses_skip_loopback_and_link_local():
    msgs = rtnl.decode(nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET, "10.244.1.10"))
                       + nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET, "127.0.0.1"))
                       + nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET, "169.254.1.1"))
                       + nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET6, "::1"))
                       + nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET6, "fe80::1"))
                       + nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET6, "fd00:0:0::a")))
    assert rtnl.global_ips(msgs) == ("10.244.1.10", "fd00::a")


def test_addresses_are_told_by_the_address_whatever_their_scope_says():
    """Link-local and loopback are left out by the address; the scope field decides alone only
    for IPv6, where the kernel sets it from the address."""
    msgs = rtnl.decode(nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET, "127.0.0.1", scope=0))
                       + nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET, "10.0.0.9", scope=253))
                       + nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET6, "fe80::1", scope=0))
                       + nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET6, "fe80::2")))
    assert rtnl.global_ips(msgs) == ("10.0.0.9",)


def test_an_address_of_the_wrong_size_for_its_family_is_none():
    body = struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, 2) + rtattr(IFA_ADDRESS, bytes(16))
    assert rtnl.global_ips(rtnl.decode(nlmsg(rtnl.RTM_NEWADDR, body))) == ()


def test_notifications_fold_into_changes():
    changes = Changes()
    ne.parse_events([nlmsg(rtnl.RTM_NEWLINK, link_body(9, "veth1", "veth", 2, 5))
                     + nlmsg(rtnl.RTM_DELLINK, link_body(8, "veth0", "veth", 2, 4)),
                     nlmsg(rtnl.RTM_NEWNSID, b"\0" * 4)], changes)
    assert changes.links == {9: ("veth1", 2, 5), 8: None} and changes.nsids and not changes.addrs
    assert changes and not Changes()


def test_a_links_last_message_is_what_it_is_now():
    """A new pod's veth: made in the node, its peer moved into the pod (its namespace id
    now known), then deleted with the pod and its index given to another: each says
    only what the link is now."""
    made = nlmsg(rtnl.RTM_NEWLINK, link_body(9, "veth1", "veth", 2, None))
    moved = nlmsg(rtnl.RTM_NEWLINK, link_body(9, "veth1", "veth", 2, 5))
    gone = nlmsg(rtnl.RTM_DELLINK, link_body(9, "veth1", "veth", 2, 5))
    changes = Changes()
    ne.parse_events([made, moved], changes)
    assert changes.links == {9: ("veth1", 2, 5)}
    changes = Changes()
    ne.parse_events([made, moved, gone], changes)
    assert changes.links == {9: None}
    changes = Changes()
    ne.parse_events([gone, nlmsg(rtnl.RTM_NEWLINK, link_body(9, "dummy0", "dummy", None, None))], changes)
    assert changes.links == {9: None}


def test_a_link_known_to_be_no_veth_is_not_decoded_again_until_it_goes():
    bridge = nlmsg(rtnl.RTM_NEWLINK, link_body(3, "cni0", "bridge", None, None))
    damaged = nlmsg(rtnl.RTM_NEWLINK, struct.pack("=BxHiII", 0, 1, 3, 0, 0) + struct.pack("=HH", 200, IFLA_LINKINFO))
    others: set[int] = set()
    changes = Changes()
    ne.parse_events([bridge], changes, others)
    assert changes.links == {3: None} and others == {3}
    changes = Changes()
    ne.parse_events([damaged], changes, others)          # not decoded: no overflow, no news
    assert not changes
    changes = Changes()
    ne.parse_events([nlmsg(rtnl.RTM_DELLINK, link_body(3, "cni0", "bridge", None, None)),
                     nlmsg(rtnl.RTM_NEWLINK, link_body(3, "veth9", "veth", 2, 5))], changes, others)
    assert changes.links == {3: ("veth9", 2, 5)} and others == set()


def test_bridge_and_ipv6_link_messages_are_not_news_of_the_veth():
    """The bridge's port-state RTM_NEWLINK (AF_BRIDGE) and IPv6's (AF_INET6) carry no
    IFLA_LINKINFO: taken for the link's own, they made a pod's veth look gone."""
    changes = Changes()
    ne.parse_events([nlmsg(rtnl.RTM_NEWLINK, link_body(9, "veth1", "veth", 2, 5)),
                     nlmsg(rtnl.RTM_NEWLINK, link_body(9, "veth1", None, None, None, family=socket.AF_BRIDGE)),
                     nlmsg(rtnl.RTM_NEWLINK, link_body(9, "veth1", None, None, None, family=socket.AF_INET6))],
                    changes)
    assert changes.links == {9: ("veth1", 2, 5)}
    changes = Changes()
    ne.parse_events([nlmsg(rtnl.RTM_NEWLINK, link_body(9, "veth1", None, None, None, family=socket.AF_BRIDGE))],
                    changes)
    assert changes.links == {} and not changes


def test_a_new_veths_link_local_address_is_no_news_of_the_nodes_addresses():
    changes = Changes()
    ne.parse_events([nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET6, "fe80::1c2d:3eff:fe4f:5a6b"))], changes)
    assert not changes.addrs
    ne.parse_events([nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET, "192.168.1.7"))], changes)
    assert changes.addrs


@pytest.mark.parametrize("body", [b"\0" * 8, b""])
def test_a_link_message_too_short_is_lost_notifications(body: bytes):
    changes = Changes()
    ne.parse_events([nlmsg(rtnl.RTM_NEWLINK, body) + nlmsg(rtnl.RTM_NEWLINK, link_body(9, "veth1", "veth", 2, 5))],
                    changes)
    assert changes.overflow and changes.links == {9: ("veth1", 2, 5)}


def test_a_damaged_attribute_is_absent_and_logs_nothing(caplog):
    """A link info whose length runs past its message: no veth, and no traceback from pyroute2
    on stderr even where logging is set up."""
    info = struct.pack("=HH", 200, IFLA_LINKINFO) + rtattr(IFLA_INFO_KIND, b"veth\0")
    body = struct.pack("=BxHiII", 0, 1, 9, 0, 0) + rtattr(IFLA_LINK, struct.pack("=I", 2)) + info
    with caplog.at_level(logging.WARNING):
        assert rtnl.veths_of(rtnl.decode(nlmsg(rtnl.RTM_NEWLINK, body))) == {}
    assert not caplog.records


def test_nsid_reply():
    assert rtnl.nsid(rtnl.decode(nsid_reply(7))[0]) == 7
    assert rtnl.nsid(rtnl.decode(nsid_reply(-1))[0]) is None        # NETNSA_NSID_NOT_ASSIGNED


def test_a_message_whose_length_does_not_fit_ends_the_datagram():
    good = nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET, "10.0.0.1"))
    for length in (0, 8, 15, 2 * len(good) + 4, 1 << 20):
        bad = struct.pack("=I", length) + good[4:]
        assert len(rtnl.decode(good + bad + good)) == 1


def test_what_addresses_said_is_remembered_within_its_bound(monkeypatch):
    """A node's addresses come again in every scan, so their meaning is remembered by their
    bytes: never past MEMO_BYTES, however many different ones come."""
    monkeypatch.setattr(rtnl, "MEMO_BYTES", 4096)
    rtnl.forget()
    for i in range(1000):
        addr = f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"
        assert rtnl.global_ips(rtnl.decode(nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET, addr)))) == (addr,)
        assert rtnl._address_said.size <= rtnl.MEMO_BYTES
    again = nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET, "10.0.0.1"))
    assert rtnl.global_ips(rtnl.decode(again) * 2) == ("10.0.0.1",)


def test_requests_are_encoded_as_the_kernel_reads_them():
    """A link dump asks for veths without statistics; the header carries its own length."""
    req = rtnl.request(rtnl.RTM_GETLINK, 0x301, 7, kind="veth")
    length, kind, flags, seq = struct.unpack_from("=IHHI", req)
    assert (length, kind, flags, seq) == (len(req), rtnl.RTM_GETLINK, 0x301, 7)
    assert b"veth\0" in req and struct.pack("=HHI", 8, 29, rtnl.RTEXT_FILTER_SKIP_STATS) in req   # IFLA_EXT_MASK


valid = st.sampled_from([
    nlmsg(rtnl.RTM_NEWLINK, link_body(9, "veth1234", "veth", 2, 5)),
    nlmsg(rtnl.RTM_DELLINK, link_body(9, "veth1234", "veth", 2, 5)),
    nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET6, "fd00::a")),
    nlmsg(rtnl.RTM_NEWADDR, addr_body(socket.AF_INET, "10.1.2.3")),
    nsid_reply(7),
    nlmsg(2, struct.pack("=i", -1) + bytes(16)),           # NLMSG_ERROR
    nlmsg(3, bytes(4)),                                     # NLMSG_DONE
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
    """Whatever a datagram holds (kernel text comes from pod workloads: interface names),
    nothing escapes, what comes out is of its type, and it is bounded by the input."""
    msgs = rtnl.decode(data)
    assert len(msgs) <= len(data) // rtnl.NLMSG_HDRLEN
    for m in msgs:
        assert isinstance(rtnl.kind(m), int) and isinstance(rtnl.seq(m), int)
        link = rtnl.link(m)
        assert link is None or (isinstance(link[0], int) and (link[1] is None or isinstance(link[1][0], str)))
        addr = rtnl.address(m)
        assert addr is None or isinstance(addr, str)
        nsid = rtnl.nsid(m)
        assert nsid is None or nsid >= 0
        rtnl.link_attrs(m, frozenset({"IFLA_IFNAME", "IFLA_IFALIAS"}))
    rtnl.veths_of(msgs)
    rtnl.global_ips(msgs)
    changes = Changes()
    ne.parse_events([data, data], changes)
    assert len(changes.links) <= len(data) // rtnl.NLMSG_HDRLEN
