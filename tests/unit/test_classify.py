from datetime import UTC, datetime

import pytest

from tracer.explain.categories import CATEGORIES, category_of
from tracer.explain.classify import classify
from tracer.kernel.decode import Drop


def drop(**kw) -> Drop:
    base = dict(time=datetime(2026, 1, 1, tzinfo=UTC), reason="NOT_SPECIFIED", reason_raw=2,
                location="somewhere", location_raw=1, netns=4026531840, ifindex=2, ifname="eth0",
                dev_mtu=1500, out_ifindex=None, out_ifname=None, mtu=None, family=4, proto="udp",
                src="10.0.0.1", dst="10.0.0.2", sport=1234, dport=53, len=100, df=False, fragment=False,
                icmp_sent=None)
    base.update(kw)
    return Drop(**base)


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
