"""Benign drops (explain/benign.py): each rule is benign only with the packet facts it needs, the
drops that look like one but may hide a real cause are not (docs/benign.md, "Not benign"), and
unicast to an address of the receiving namespace never is, whatever its reason and location."""

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer.explain import benign
from tracer.explain.benign import benign_why, is_benign, why_at
from tracer.explain.classify import classify
from tracer.kernel import decode, event, facts, pktfacts
from tracer.kernel.pktfacts import (PACKET_BROADCAST, PACKET_HOST, PACKET_LOOPBACK, PACKET_MULTICAST,
                                    PACKET_OTHERHOST, PACKET_OUTGOING, make)

from ..helpers import drop

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
KERNEL_REASONS = set(facts.reasons_from_format((GOLDEN / "kfree_skb.format").read_text()).values())

BCAST = make(PACKET_BROADCAST, event.ND_DST_BROADCAST)          # 192.0.2.255 from a neighbour
MCAST4 = make(PACKET_MULTICAST, event.ND_DST_MULTICAST)         # 224.0.0.251, ff02::1
NETLINK = make(PACKET_HOST, event.ND_DST_NOT_IP)                 # a netlink socket's queue
OURS = make(PACKET_HOST)                                         # a unicast frame to our MAC
LOCAL_IN_BCAST = make(PACKET_BROADCAST, event.ND_DST_LOCAL)     # our address in a broadcast frame
LO_BCAST = make(PACKET_HOST, event.ND_DST_BROADCAST)             # 127.255.255.255 on lo
LOCAL = make(PACKET_HOST, event.ND_DST_LOCAL)                    # our address, its route read
UNKNOWN = 0                                                      # no facts read


@pytest.mark.parametrize("reason,location,facts_,why", [
    # A netlink socket closed with messages unread, a device torn down.
    ("QUEUE_PURGE", "skb_queue_purge_reason", NETLINK, "teardown"),
    # MLD reports, router solicitations, mDNS for groups this interface did not join.
    ("NOT_SPECIFIED", "ip6_mc_input", MCAST4, "IPv6 multicast"),
    # DHCP, SSDP, NetBIOS broadcasts; IPv6 multicast UDP to ff02::1 nobody listens for.
    ("NOT_SPECIFIED", "__udp4_lib_rcv", BCAST, "UDP broadcast or multicast"),
    ("NOT_SPECIFIED", "__udp4_lib_rcv", MCAST4, "UDP broadcast or multicast"),
    ("NOT_SPECIFIED", "__udp6_lib_rcv", MCAST4, "UDP broadcast or multicast"),
    # 127.255.255.255 nobody listens for: on lo every frame carries lo's own MAC, the route says broadcast.
    ("NOT_SPECIFIED", "__udp4_lib_rcv", LO_BCAST, "UDP broadcast or multicast"),
    # A solicitation for fd01::2 reaches the host of fd00::2: one solicited-node group.
    ("IPV6_NDISC_NS_OTHERHOST", "icmpv6_rcv", MCAST4, "neighbour solicitation for another host"),
])
def test_each_rule_with_its_packet_is_benign_and_says_why(reason, location, facts_, why):
    assert why in (benign_why(reason, location, facts_) or "")
    assert why in (why_at(reason, location) or "")
    d = drop(reason=reason, location=location, facts=facts_)
    assert is_benign(d)
    # classify marks it, whatever category the drop has.
    assert classify(d).benign is True


@pytest.mark.parametrize("reason,location,facts_", [
    # The same place with another packet: the IPsec refusal of unicast to our own address
    # (xfrm4_policy_check() on __udp4_lib_rcv's no-socket path) frees it with the same reason.
    ("NOT_SPECIFIED", "__udp4_lib_rcv", OURS),
    ("NOT_SPECIFIED", "__udp4_lib_rcv", LOCAL),
    ("NOT_SPECIFIED", "__udp4_lib_rcv", LOCAL_IN_BCAST),      # unicast IP in an L2 broadcast frame
    ("NOT_SPECIFIED", "__udp4_lib_rcv", make(PACKET_MULTICAST, event.ND_DST_UNICAST)),
    ("NOT_SPECIFIED", "__udp4_lib_rcv", make(PACKET_LOOPBACK)),   # looped back: not classified
    ("NOT_SPECIFIED", "__udp4_lib_rcv", UNKNOWN),
    ("NOT_SPECIFIED", "__udp6_lib_rcv", make(PACKET_MULTICAST, event.ND_DST_UNICAST)),
    ("NOT_SPECIFIED", "__udp6_lib_rcv", OURS),
    ("NOT_SPECIFIED", "ip6_mc_input", UNKNOWN),
    ("NOT_SPECIFIED", "ip6_mc_input", BCAST),
    # An inet socket closed with data unread, a packet socket's copies of our traffic.
    ("QUEUE_PURGE", "skb_queue_purge_reason", OURS),
    ("QUEUE_PURGE", "skb_queue_purge_reason", make(PACKET_OUTGOING)),
    ("QUEUE_PURGE", "skb_queue_purge_reason", UNKNOWN),
    # A unicast solicitation (NUD) to our address for another target.
    ("IPV6_NDISC_NS_OTHERHOST", "icmpv6_rcv", OURS),
    ("IPV6_NDISC_NS_OTHERHOST", "icmpv6_rcv", make(PACKET_MULTICAST, event.ND_DST_UNICAST)),
])
def test_a_rules_place_with_another_packet_is_not_benign(reason, location, facts_):
    assert benign_why(reason, location, facts_) is None
    assert classify(drop(reason=reason, location=location, facts=facts_)).benign is False


ANY_FACTS = (BCAST, MCAST4, NETLINK, OURS, LOCAL_IN_BCAST, UNKNOWN, make(PACKET_OTHERHOST), make(PACKET_OUTGOING))


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
    # An IPsec policy's refusal, wherever it is made.
    ("XFRM_POLICY", "__udp4_lib_rcv"),
    ("XFRM_POLICY", "udp_queue_rcv_one_skb"),
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
def test_near_misses_are_not_benign_whatever_the_packet(reason, location):
    assert why_at(reason, location) is None
    for f in ANY_FACTS:
        assert benign_why(reason, location, f) is None
        assert classify(drop(reason=reason, location=location or "", facts=f)).benign is False


@pytest.mark.parametrize("reason,category", [("IPV6_NDISC_NS_OTHERHOST", "other"),
                                             ("IPV6_NDISC_BAD_OPTIONS", "malformed"),
                                             ("IPV6_NDISC_HOP_LIMIT", "malformed")])
def test_a_solicitation_for_another_host_is_not_called_malformed(reason, category):
    assert classify(drop(reason=reason, location="icmpv6_rcv", proto="icmpv6")).category == category


def test_every_listed_reason_is_one_our_kernel_has():
    """Names from the tracepoint format recorded on our kernel: a typo would never match."""
    for entry in benign.BENIGN:
        assert entry.reasons and set(entry.reasons) <= KERNEL_REASONS, entry
        assert entry.locations and entry.why and entry.needs.says


def test_no_rule_takes_unicast_to_an_address_of_ours_or_unknown_facts():
    """By construction: what a rule needs never includes our own addresses."""
    for entry in benign.BENIGN:
        assert not entry.needs.destinations & {event.ND_DST_LOCAL, event.ND_DST_UNICAST, event.ND_DST_UNREAD}, entry
        # A frame to our MAC only where the route said broadcast or multicast (lo's frames).
        ip = entry.needs.destinations - {event.ND_DST_NOT_IP}
        assert not ip or (entry.needs.pkt_types is not None and ip <= {event.ND_DST_BROADCAST,
                                                                       event.ND_DST_MULTICAST}), entry


def test_the_documentation_lists_every_entry_and_what_it_needs():
    doc = (Path(__file__).resolve().parents[3] / "docs" / "benign.md").read_text()
    for entry in benign.BENIGN:
        for name in (*entry.reasons, *entry.locations):
            assert f"`{name}`" in doc, name
        assert entry.needs.says in doc, entry.needs.says


@given(st.one_of(st.none(), st.text(max_size=40)), st.one_of(st.none(), st.text(max_size=40)),
       st.integers(0, 255))
def test_any_names_give_an_answer_and_only_listed_reasons_are_benign(reason, location, facts_):
    why = benign_why(reason, location, facts_)
    listed = {r for entry in benign.BENIGN for r in entry.reasons}
    assert why is None or (reason in listed and facts_ & event.ND_PF_KNOWN)


# ---------------------------------------------------------------- over decoded events

# Every rule's own place, and others: the reasons and functions of the kernel recorded here.
PLACES = [(r, loc) for entry in benign.BENIGN for r in entry.reasons for loc in entry.locations if "*" not in loc]
PLACES += [("NO_SOCKET", "__udp4_lib_rcv"), ("XFRM_POLICY", "xfrm_policy_check"), ("OTHERHOST", "ip_rcv_core")]
REASONS = {code: name for code, name in enumerate(sorted({r for r, _ in PLACES}), start=1)}
FUNCTIONS = sorted({loc for _, loc in PLACES})
ADDRS = [0xffffffff81000000 + 0x1000 * i for i in range(len(FUNCTIONS))]
DECODER = decode.Decoder(REASONS, facts.Kallsyms(ADDRS, FUNCTIONS), mono_to_wall=0.0)
CODES = {name: code for code, name in REASONS.items()}


def _to_ours(draw: st.DrawFn) -> int:
    """Facts of unicast to an address of the receiving namespace, as the kernel writes them:
    a route to a local address (in any frame), or an IP frame to this host's MAC."""
    if draw(st.booleans()):
        return make(draw(st.integers(0, 7)), event.ND_DST_LOCAL)
    return make(PACKET_HOST, draw(st.sampled_from([event.ND_DST_UNREAD, event.ND_DST_LOCAL, event.ND_DST_UNICAST])))


@st.composite
def events_to_ours(draw: st.DrawFn) -> bytes:
    """A whole nd_event record, every field drawn, its facts those of unicast to our address."""
    raw = bytearray(draw(st.binary(min_size=event.EVENT.size, max_size=event.EVENT.size)))
    reason, location = draw(st.sampled_from(PLACES))
    f = event.NdEvent
    struct.pack_into("=Q", raw, f.location_raw.offset, ADDRS[FUNCTIONS.index(location)] + draw(st.integers(0, 0xfff)))
    struct.pack_into("=I", raw, f.reason_raw.offset, CODES[reason])
    struct.pack_into("=H", raw, f.l3proto_raw.offset, draw(st.sampled_from([0x0800, 0x86DD])))
    struct.pack_into("=H", raw, f.caplen.offset, 0)
    struct.pack_into("=B", raw, f.facts.offset, _to_ours(draw))
    return bytes(raw)


@given(events_to_ours())
def test_unicast_to_an_address_of_ours_is_never_benign_whatever_the_reason_and_location(raw):
    d = DECODER.decode_record(raw)
    assert d.location in FUNCTIONS and d.reason in REASONS.values()
    assert not is_benign(d)
    assert classify(d).benign is False


@given(st.binary(min_size=event.EVENT.size, max_size=event.EVENT.size))
def test_a_decoded_event_is_benign_only_with_known_facts_a_rule_needs(raw):
    raw = raw[:event.NdEvent.caplen.offset] + b"\0\0" + raw[event.NdEvent.caplen.offset + 2:]
    d = DECODER.decode_record(raw)
    assert d.facts == raw[event.NdEvent.facts.offset]
    rule = benign.rule_at(d.reason, d.location)
    assert is_benign(d) == (rule is not None and rule.needs.hold(d.facts))
    if is_benign(d):
        f = pktfacts.read(d.facts)
        assert f.known and f.destination in (event.ND_DST_BROADCAST, event.ND_DST_MULTICAST, event.ND_DST_NOT_IP)


def test_the_bpf_program_is_told_not_specifieds_number_on_each_kernel():
    """The facts of an IPv4 frame to our MAC are classified for NOT_SPECIFIED only: its number
    moved (0 on 5.17-5.19, 2 since SKB_NOT_DROPPED_YET and SKB_CONSUMED), none without reasons."""
    recorded = facts.reasons_from_format((GOLDEN / "kfree_skb.format").read_text())
    assert recorded[facts.not_specified(recorded)] == "NOT_SPECIFIED"
    assert facts.not_specified({0: "NOT_SPECIFIED", 1: "NO_SOCKET"}) == 0
    assert facts.not_specified({}) == 0xFFFFFFFF
