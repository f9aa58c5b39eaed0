
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.style import Style

from tracer.explain.categories import CATEGORIES, OTHER, REGISTRY, category_of, entry
from tracer.explain.classify import Classifier, classify

from ..helpers import drop


@pytest.mark.parametrize("reason,location,category", [
    ("PKT_TOO_BIG", "ip_forward", "mtu"),
    ("FRAG_REASM_TIMEOUT", "ip_expire", "mtu"),
    ("NETFILTER_DROP", "nft_do_chain", "netfilter"),
    ("NETFILTER_DROP", "nf_hook_slow", "netfilter"),
    ("NETFILTER_DROP", "__nf_conntrack_confirm", "conntrack"),
    ("NO_SOCKET", "__udp4_lib_rcv", "no-socket"),
    ("IP_INNOROUTES", "ip_error", "no-route"),
    ("IP_OUTNOROUTES", "ip_route_output_flow", "no-route"),
    ("NEIGH_FAILED", "neigh_invalidate", "neighbor"),
    ("IP_RPFILTER", "ip_rcv_finish_core", "rp-filter"),
    ("TCP_OLD_SEQUENCE", "tcp_validate_incoming", "tcp"),
    ("TCP_LISTEN_OVERFLOW", "tcp_conn_request", "socket-buffer"),
    ("SOCKET_RCVBUFF", "__udp_enqueue_schedule_skb", "socket-buffer"),
    ("QDISC_DROP", "__dev_queue_xmit", "qdisc"),
    ("UDP_CSUM", "__udp4_lib_rcv", "malformed"),
    ("OTHERHOST", "ip_rcv_core", "other"),
    ("SOMETHING_NEW_IN_7_0", "x", "other"),
])
def test_category_by_reason_name(reason, location, category):
    assert category_of(reason, location) == category


@pytest.mark.parametrize("location,icmp,category", [
    ("ip_forward", (3, 4), "mtu"),
    ("__udp4_lib_rcv", (3, 3), "no-socket"),
    ("ip_error", None, "no-route"),
    ("ip_error", (3, 0), "no-route"),
    ("nf_hook_slow", None, "netfilter"),
    ("ipt_do_table", None, "netfilter"),
    ("neigh_invalidate", None, "neighbor"),
    ("kfree_skb_list", None, "other"),
])
def test_kernels_without_reason_classify_by_location_and_icmp(location, icmp, category):
    assert category_of(None, location, icmp) == category


def test_every_category_is_from_the_fixed_list():
    for reason in ("PKT_TOO_BIG", "NETFILTER_DROP", "NO_SOCKET", "X", None):
        assert category_of(reason, "nft_do_chain") in CATEGORIES


def test_hints_name_the_evidence():
    v = classify(drop(reason="PKT_TOO_BIG", location="ip_forward", len=1500, df=True, mtu=1450,
                      out_ifname="flannel.1", ifname="cni0"))
    assert v.category == "mtu"
    assert "1500-byte packet with DF set" in v.hint and "MTU 1450 of flannel.1" in v.hint

    v = classify(drop(reason="NO_SOCKET", location="__udp4_lib_rcv", dport=9999, dst="10.244.1.11",
                      icmp_sent=(3, 3)))
    assert "nothing listens on UDP 10.244.1.11:9999" in v.hint and "port unreachable" in v.hint

    v = classify(drop(reason="NETFILTER_DROP", location="nft_do_chain", ifname="cni0"))
    assert "nft_do_chain on cni0" in v.hint and "policy" in v.hint

    v = classify(drop(reason="IP_INNOROUTES", location="ip_error", dst="10.244.3.10", ifname="cni0"))
    assert "no route to 10.244.3.10 on cni0" in v.hint


def _example(pattern: str) -> str:
    """A name that the pattern matches."""
    return pattern.replace("*", "X")


@pytest.mark.parametrize("category", REGISTRY, ids=CATEGORIES)
def test_each_entrys_own_names_give_that_entry(category):
    # A new entry that repeats an exact reason name of an earlier one, or a pattern
    # that takes another's reasons, shows here.
    at = _example(category.locations[0]) if category.locations else "somewhere"
    for name in category.reasons:
        assert category_of(_example(name), at) == category.name, name
    for location in category.locations:
        assert category_of(None, _example(location)) == category.name, location
    for icmp in category.icmp:
        assert category_of(None, "somewhere", icmp) == category.name, icmp


def test_every_category_is_shown_and_summarised():
    for c in REGISTRY:
        Style.parse(c.style)                  # a bad style would fail the live console at its first drop
        assert re.fullmatch(r"#[0-9a-f]{6}", c.colour) and c.verdict
    # A summary.json is anyone's file: its category picks an entry, it never becomes a colour itself.
    assert entry('mtu" onmouseover="x') is OTHER and entry("mtu").colour == "#8e44ad"
    assert [c.name for c in sorted(REGISTRY, key=lambda c: c.rank)][-1] == "other"


names = st.none() | st.sampled_from(("NETFILTER_DROP", "TCP_CSUM", "PKT_TOO_BIG", "FRAG_TOO_FAR", "NO_SOCKET",
                                     "nft_do_chain", "__nf_conntrack_confirm", "tcp_v4_rcv", "NOT_SPECIFIED")) | \
    st.text(max_size=20)
maybe_text = st.none() | st.text(max_size=20)
maybe_int = st.none() | st.integers(0, 2**32)


@settings(max_examples=300)
@given(reason=names, location=names, icmp=st.none() | st.tuples(st.integers(0, 255), st.integers(0, 255)),
       ifname=maybe_text, out_ifname=maybe_text, src=maybe_text, dst=maybe_text, proto=maybe_text,
       dport=maybe_int, mtu=maybe_int, tcp_flags=maybe_int, conntrack=maybe_text)
def test_any_drop_gets_a_category_and_a_hint(reason, location, icmp, ifname, out_ifname, src, dst, proto, dport,
                                             mtu, tcp_flags, conntrack):
    v = classify(drop(reason=reason, location=location, icmp_sent=icmp, ifname=ifname, out_ifname=out_ifname,
                      src=src, dst=dst, proto=proto, dport=dport, mtu=mtu, tcp_flags=tcp_flags, conntrack=conntrack))
    assert v.category in CATEGORIES and v.hint


# A stream of drops that share most fields, as a storm does: values from small pools.
small_drops = st.builds(
    lambda reason, location, icmp, src, dst, sport, dport, proto, mtu, length, df, tcp_flags, ifname: drop(
        reason=reason, location=location, icmp_sent=icmp, src=src, dst=dst, sport=sport, dport=dport, proto=proto,
        mtu=mtu, out_ifname="flannel.1" if mtu else None, len=length, df=df, tcp_flags=tcp_flags, ifname=ifname),
    st.sampled_from(("PKT_TOO_BIG", "FRAG_REASM_TIMEOUT", "NO_SOCKET", "TCP_INVALID_SEQUENCE", "IP_INNOROUTES",
                     "SOCKET_RCVBUFF", "QUEUE_PURGE", "NOT_SPECIFIED", None)),
    st.sampled_from(("ip_forward", "__udp4_lib_rcv", "tcp_v4_rcv", "ip_error", "ip6_mc_input",
                     "skb_queue_purge_reason")),
    st.sampled_from((None, (3, 3), (3, 4))),
    st.sampled_from(("10.0.0.1", "10.0.0.2", None)), st.sampled_from(("10.0.0.3", "fd00::3")),
    st.sampled_from((1234, 1235, None)), st.sampled_from((53, 80, None)), st.sampled_from(("udp", "tcp", None)),
    st.sampled_from((None, 1450)), st.sampled_from((100, 1500)), st.booleans(), st.sampled_from((None, 0x12, 0x10)),
    st.sampled_from(("eth0", "cni0", None)))


@settings(max_examples=200)
@given(st.lists(small_drops, min_size=1, max_size=40), st.integers(1, 8))
def test_the_remembering_classifier_answers_as_classify_does(drops, max_answers):
    # Whatever came before (and however small its memory), each drop gets
    # exactly what classify gives it: no hint of one flow shown for another.
    remember = Classifier(max_answers=max_answers)
    for d in drops:
        assert remember(d) == classify(d)
    for d in reversed(drops):
        assert remember(d) == classify(d)


def test_a_storm_of_new_source_ports_to_one_closed_port_is_classified_once():
    remember = Classifier()
    first = remember(drop(reason="NO_SOCKET", location="__udp4_lib_rcv", sport=1000, dport=9))
    again = [remember(drop(reason="NO_SOCKET", location="__udp4_lib_rcv", sport=1001 + i, dport=9)) for i in range(50)]
    assert all(v is first for v in again) and "UDP 10.0.0.2:9" in first.hint
    # Another destination: its own hint, never the first one's.
    other = remember(drop(reason="NO_SOCKET", location="__udp4_lib_rcv", dst="10.0.0.9", dport=9))
    assert "10.0.0.9:9" in other.hint and other is not first


def test_a_hint_that_quotes_the_flow_quotes_each_events_own():
    remember = Classifier()
    for sport in (1000, 1001, 1002):
        v = remember(drop(reason="TCP_INVALID_SEQUENCE", location="tcp_v4_rcv", proto="tcp", sport=sport, dport=80))
        assert f"10.0.0.1:{sport} -> 10.0.0.2:80 tcp" in v.hint


def test_remembered_answers_are_bounded():
    remember = Classifier(max_answers=16)
    for sport in range(1000):
        remember(drop(reason="TCP_INVALID_SEQUENCE", location="tcp_v4_rcv", proto="tcp", sport=sport))
    assert remember._answers <= 16
    assert sum(len(p[2]) for plans in remember._plans.values() for p in plans) <= 16


def test_a_syn_ack_nobody_takes_asks_the_namespace_context_each_time():
    asked = []
    remember = Classifier(context=lambda netns: asked.append(netns))
    for _ in range(3):
        v = remember(drop(reason="NO_SOCKET", location="tcp_v4_rcv", proto="tcp", tcp_flags=0x12))
        assert v.category == "conntrack" and v.detail["by"] == "nat-bypass"
    assert asked == [4026531840] * 3
    remember(drop(reason="NO_SOCKET", location="__udp4_lib_rcv"))
    assert len(asked) == 3      # a plain verdict needs no context


@pytest.mark.parametrize("flags,category", [(0x02, "no-socket"), (0x12, "tcp"), (0x10, "tcp"), (0x04, "tcp")])
def test_without_reasons_a_bare_syn_freed_by_tcp_input_found_no_socket(flags, category):
    """Before 5.17 tcp_v4_rcv() frees a SYN nobody listens for without a reason: the
    SYN itself says it (a SYN-ACK, ACK or RST freed there is another matter)."""
    d = drop(reason=None, reason_raw=0, location="tcp_v4_rcv", proto="tcp", dport=8080, dst="10.244.1.11",
             tcp_flags=flags)
    assert classify(d).category == category
    assert Classifier(lambda _ns: None)(d).category == category
    if category == "no-socket":
        assert "nothing listens on TCP 10.244.1.11:8080" in classify(d).hint
    # the same segment with a reason: the kernel's word stands
    assert classify(drop(reason="TCP_FLAGS", location="tcp_v4_rcv", proto="tcp", tcp_flags=flags)).category == "tcp"
