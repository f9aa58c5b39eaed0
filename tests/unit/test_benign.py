"""Benign drops (explain/benign.py): each listed case is benign, and the drops that look like one
but may hide a real cause are not (docs/benign.md, "Not benign")."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer.explain import benign
from tracer.explain.benign import benign_why, is_benign
from tracer.explain.classify import classify
from tracer.kernel import facts

from .test_classify import drop

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
KERNEL_REASONS = set(facts.reasons_from_format((GOLDEN / "kfree_skb.format").read_text()).values())


@pytest.mark.parametrize("reason,location,why", [
    # A netlink or packet socket closed with messages unread, a device torn down.
    ("QUEUE_PURGE", "skb_queue_purge_reason", "teardown"),
    # MLD reports, router solicitations, mDNS for groups this interface did not join.
    ("NOT_SPECIFIED", "ip6_mc_input", "IPv6 multicast"),
    # DHCP, SSDP, NetBIOS broadcasts; IPv6 multicast UDP to ff02::1 nobody listens for.
    ("NOT_SPECIFIED", "__udp4_lib_rcv", "UDP broadcast or multicast"),
    ("NOT_SPECIFIED", "__udp6_lib_rcv", "UDP broadcast or multicast"),
    # A solicitation for fd01::2 reaches the host of fd00::2: one solicited-node group.
    ("IPV6_NDISC_NS_OTHERHOST", "icmpv6_rcv", "neighbour solicitation for another host"),
])
def test_each_listed_case_is_benign_and_says_why(reason, location, why):
    assert why in (benign_why(reason, location) or "")
    d = drop(reason=reason, location=location)
    assert is_benign(d)
    # classify marks it, whatever category the drop has.
    assert classify(d).benign is True


@pytest.mark.parametrize("reason,location", [
    # Unicast to a closed port: the same functions, a real answer ("nothing listens").
    ("NO_SOCKET", "__udp4_lib_rcv"),
    ("NO_SOCKET", "__udp6_lib_rcv"),
    ("UDP_CSUM", "__udp4_lib_rcv"),
    ("PKT_TOO_SMALL", "__udp4_lib_rcv"),
    # A frame for another MAC: also a pod receiving for a stale neighbour entry after a restart.
    ("OTHERHOST", "ip_rcv_core"),
    ("OTHERHOST", "ip6_rcv_core"),
    # IPv4 multicast nobody joined shares ip_rcv_finish_core with refused source routes and route errors.
    ("NOT_SPECIFIED", "ip_rcv_finish_core"),
    # An ethertype without a handler: LLDP, or a VLAN or MPLS module the node lacks.
    ("UNHANDLED_PROTO", "__netif_receive_skb_core"),
    # The right reason in the wrong place, or the right place with a real reason.
    ("QUEUE_PURGE", "tcp_v4_rcv"),
    ("NETFILTER_DROP", "ip6_mc_input"),
    ("NOT_SPECIFIED", "nft_do_chain"),
    ("NOT_SPECIFIED", "ip6_mc_input_x"),
    ("IPV6_NDISC_NS_OTHERHOST", "ip6_forward"),
    ("IPV6_NDISC_BAD_OPTIONS", "icmpv6_rcv"),
    ("NEIGH_FAILED", "neigh_invalidate"),
    ("PKT_TOO_BIG", "ip_forward"),
    # Case matters: kernel names are exact.
    ("queue_purge", "skb_queue_purge_reason"),
    # Without a reason (kernels before 5.17) the location alone says too little.
    (None, "ip6_mc_input"),
    (None, "skb_queue_purge_reason"),
    ("QUEUE_PURGE", None),
])
def test_near_misses_are_not_benign(reason, location):
    assert benign_why(reason, location) is None
    assert classify(drop(reason=reason, location=location or "")).benign is False


@pytest.mark.parametrize("reason,category", [("IPV6_NDISC_NS_OTHERHOST", "other"),
                                             ("IPV6_NDISC_BAD_OPTIONS", "malformed"),
                                             ("IPV6_NDISC_HOP_LIMIT", "malformed")])
def test_a_solicitation_for_another_host_is_not_called_malformed(reason, category):
    assert classify(drop(reason=reason, location="icmpv6_rcv", proto="icmpv6")).category == category


def test_every_listed_reason_is_one_our_kernel_has():
    """Names from the tracepoint format recorded on our kernel: a typo would never match."""
    for entry in benign.BENIGN:
        assert entry.reasons and set(entry.reasons) <= KERNEL_REASONS, entry
        assert entry.locations and entry.why


def test_the_documentation_lists_every_entry():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "benign.md").read_text()
    for entry in benign.BENIGN:
        for name in (*entry.reasons, *entry.locations):
            assert f"`{name}`" in doc, name


@given(st.one_of(st.none(), st.text(max_size=40)), st.one_of(st.none(), st.text(max_size=40)))
def test_any_names_give_an_answer_and_only_listed_reasons_are_benign(reason, location):
    why = benign_why(reason, location)
    listed = {r for entry in benign.BENIGN for r in entry.reasons}
    assert why is None or reason in listed
