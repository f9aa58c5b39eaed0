"""Each category's lead: the fact that decides, in the few words an 80-column row has for it."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.explain.categories import REGISTRY, entry
from tracer.explain.classify import classify

from ..helpers import drop


@pytest.mark.parametrize("reason,location,fields,lead", [
    ("PKT_TOO_BIG", "ip_forward", dict(len=1500, df=True, mtu=1450, out_ifname="flannel.1"),
     "MTU 1450 flannel.1, 1500-byte DF"),
    ("PKT_TOO_BIG", "ip_forward", dict(len=9000, df=False, mtu=None), "9000-byte > path MTU on eth0"),
    ("FRAG_REASM_TIMEOUT", "ip_expire", {}, "fragments lost (FRAG_REASM_TIMEOUT)"),
    ("NO_SOCKET", "__udp4_lib_rcv", dict(dport=53, dst="10.96.0.10"), "udp/53 nothing listening on 10.96.0.10"),
    ("NO_SOCKET", "tcp_v4_rcv", dict(proto="tcp", dport=8080, tcp_flags=0x02),
     "tcp/8080 nothing listening on 10.0.0.2"),
    ("SOCKET_CLOSE", "tcp_close", dict(proto="tcp", dport=443), "tcp/443 socket closing on 10.0.0.2"),
    ("IP_INNOROUTES", "ip_error", dict(dst="10.244.3.10", ifname="cni0"), "no route to 10.244.3.10 on cni0"),
    ("NEIGH_FAILED", "neigh_invalidate", dict(dst="10.0.0.9"), "no ARP/ND answer on eth0, to 10.0.0.9"),
    ("NEIGH_CREATEFAIL", "neigh_create", {}, "neighbour table full on eth0, to 10.0.0.2"),
    ("IP_RPFILTER", "ip_rcv_finish_core", dict(src="192.0.2.7"), "rp_filter: source 192.0.2.7 on eth0"),
    ("TCP_LISTEN_OVERFLOW", "tcp_conn_request", dict(proto="tcp", dport=80), "tcp/80 listen queue full"),
    ("SOCKET_RCVBUFF", "__udp_enqueue_schedule_skb", dict(dport=514), "udp/514 receive buffer full"),
    ("TCP_OLD_SEQUENCE", "tcp_validate_incoming", dict(proto="tcp", dport=80, tcp_flags=0x10),
     "tcp/80 OLD_SEQUENCE [ACK]"),
    ("QDISC_OVERLIMIT", "tbf_enqueue", dict(ifname="veth1"), "QDISC_OVERLIMIT on veth1"),
    ("UDP_CSUM", "__udp4_lib_rcv", dict(src="10.0.0.7"), "UDP_CSUM from 10.0.0.7"),
    ("OTHERHOST", "ip_rcv_core", {}, "OTHERHOST@ip_rcv_core"),
])
def test_a_rows_lead_says_what_decides(reason, location, fields, lead):
    d = drop(reason=reason, location=location, **fields)
    v = classify(d)
    assert entry(v.category).lead_of(d, v.detail) == lead


@pytest.mark.parametrize("detail,lead", [
    ({"by": "policy", "backend": "iptables-nft", "table": "filter", "chain": "FORWARD", "target": "DROP"},
     "FORWARD policy DROP"),
    ({"by": "rule", "table": "filter", "chain": "KUBE-FIREWALL", "target": "DROP", "rule": "-A KUBE-FIREWALL -j DROP"},
     "KUBE-FIREWALL rule DROP"),
    ({"by": "rule", "chain": "KUBE-SERVICES", "target": "REJECT", "service_without_endpoints": "default/empty"},
     "Service default/empty: no endpoints"),
    ({"by": "one of", "candidates": [{"by": "policy", "chain": "INPUT", "target": "DROP"},
                                     {"by": "rule", "chain": "INPUT", "target": "DROP"}]},
     "one of: INPUT policy DROP; INPUT rule DROP"),
    (None, "rule or policy on eth0, nft_do_chain"),
])
def test_a_netfilter_lead_names_the_chain_and_its_policy_or_rule(detail, lead):
    d = drop(reason="NETFILTER_DROP", location="nft_do_chain")
    assert entry("netfilter").lead_of(d, detail) == lead


def test_a_reject_says_so_whichever_point_matched():
    d = drop(reason="NETFILTER_DROP", location="nft_do_chain", icmp_sent=(3, 3))
    reject = {"by": "rule", "chain": "INPUT", "target": "REJECT"}
    assert entry("netfilter").lead_of(d, reject) == "INPUT rule REJECT, ICMP 3/3 sent"
    policy = {"by": "policy", "chain": "FORWARD", "target": "DROP"}
    assert entry("netfilter").lead_of(d, policy) == "REJECT, ICMP 3/3 sent"


@pytest.mark.parametrize("detail,lead", [
    ({"by": "conntrack", "state": "invalid", "rule": "-A KUBE-FORWARD ... -j DROP", "chain": "KUBE-FORWARD"},
     "ctstate INVALID, KUBE-FORWARD rule DROP"),
    ({"by": "conntrack", "state": "insert_failed", "insert_failed": 3}, "conntrack insert race, udp/53"),
    ({"by": "conntrack", "state": "table_full", "max": 65536}, "conntrack table full (65536)"),
    ({"by": "nat-bypass", "reply_from": "10.244.1.11:8080", "bridge_nf_call_iptables": "0"},
     "reply not NATed back, bridge-nf-call-iptables=0"),
    ({"by": "nat-bypass", "reply_from": "10.244.1.11:8080"}, "reply not NATed back from 10.244.1.11:8080"),
    ({"by": "hook", "conntrack_state": "related-reply"}, "conntrack/NAT refused, ct related-reply"),
])
def test_a_conntrack_lead_names_what_conntrack_did(detail, lead):
    d = drop(reason="NETFILTER_DROP", location="nf_hook_slow")
    assert entry("conntrack").lead_of(d, detail) == lead


@pytest.mark.parametrize("category,reason,location,fields", [
    ("device", "DEV_READY", "veth_xmit", {}),
    ("overlay", "VXLAN_VNI_NOT_FOUND", "vxlan_rcv", {}),
    ("ipsec", "XFRM_POLICY", "xfrm_policy_check", {}),
    ("memory", "NOMEM", "skb_alloc", {}),
    ("bpf-program", "TC_INGRESS", "tcf_classify", {}),
    ("qdisc", "QDISC_DROP", "__dev_queue_xmit", {}),                       # a device's carrier may be why
    ("no-socket", "NO_SOCKET", "__udp4_lib_rcv", dict(dport=4789)),          # an overlay port mismatch may be why
    ("no-route", "NOT_SPECIFIED", "dst_discard_out", {}),                   # IPsec without its state may be why
])
def test_where_the_hint_reads_the_nodes_state_the_hint_leads_itself(category, reason, location, fields):
    d = drop(reason=reason, location=location, **fields)
    assert entry(category).lead_of(d, None) is None


names = st.none() | st.text(max_size=30)


@settings(max_examples=300)
@given(category=st.sampled_from([c.name for c in REGISTRY]), reason=names, location=names,
       proto=names, dst=names, src=names, ifname=names, out_ifname=names,
       dport=st.none() | st.integers(0, 65535), mtu=st.none() | st.integers(0, 2**32),
       tcp_flags=st.none() | st.integers(0, 255),
       detail=st.none() | st.dictionaries(st.sampled_from(["by", "state", "chain", "target", "candidates", "max",
                                                           "service_without_endpoints", "reply_from"]),
                                          st.none() | st.text(max_size=10) | st.integers()
                                          | st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=5)))))
def test_any_drop_and_detail_give_a_lead_or_none(category, reason, location, proto, dst, src, ifname, out_ifname,
                                                 dport, mtu, tcp_flags, detail):
    d = drop(reason=reason, location=location, proto=proto, dst=dst, src=src, ifname=ifname,
             out_ifname=out_ifname, dport=dport, mtu=mtu, tcp_flags=tcp_flags)
    lead = entry(category).lead_of(d, detail)
    assert lead is None or (isinstance(lead, str) and lead)
