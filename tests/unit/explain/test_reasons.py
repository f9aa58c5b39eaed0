"""Every drop reason of the recorded kernels has a decision (a category and
what it means, or why no node meets it), every unspecific location of a
node's paths an explanation, and the hints built on the node's evidence name
the fact that decided them."""

from pathlib import Path

import pytest

from tracer.explain import evidence as E
from tracer.explain.categories import BY_NAME, OTHER, REGISTRY, category_of
from tracer.explain.causes import CAUSES, NOT_ON_A_NODE, PLACES, cause, place_of
from tracer.explain.classify import Classifier, classify
from tracer.explain.verdict import name_matches
from tracer.kernel import facts
from tracer.kernel.decode import Drop

from ..helpers import drop

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
FORMATS = sorted(GOLDEN.glob("*.format"))
REASONS = sorted({r for f in FORMATS for r in facts.reasons_from_format(f.read_text()).values()})



def test_the_recorded_formats_are_read():
    assert FORMATS and len(REASONS) > 100 and "VXLAN_VNI_NOT_FOUND" in REASONS


@pytest.mark.parametrize("reason", REASONS)
def test_every_reason_has_a_decision(reason):
    # A reason a new kernel adds fails here until it is decided: a category
    # named in the registry (by an entry's own reason patterns) with its meaning
    # in CAUSES, or listed in NOT_ON_A_NODE with why.
    if reason in NOT_ON_A_NODE:
        assert NOT_ON_A_NODE[reason] and reason not in CAUSES
        return
    assert CAUSES.get(reason), f"{reason}: no meaning in causes.CAUSES"
    if reason == "NOT_SPECIFIED":
        return                         # decided by the location: PLACES (test below)
    named = [c.name for c in REGISTRY if name_matches(reason, c.reasons)]
    assert named, f"{reason}: no category names it"
    category = category_of(reason, None)
    assert category in named
    if category == OTHER.name:         # "other" only on purpose, never by falling through
        assert reason in OTHER.reasons


def test_no_decision_names_a_reason_no_kernel_has():
    # A typo in the tables would leave the real reason undecided.
    assert set(CAUSES) | set(NOT_ON_A_NODE) <= set(REASONS)


# The functions that free packets without a specific reason on the paths a
# node uses (found on kernel 6.18 by tracing the simulated node and the causes
# of tests/kernel/explain/test_causes.py), with the category they give.
NODE_PLACES = [
    ("ip6_mc_input", "other"), ("__udp4_lib_rcv", "other"), ("__udp6_lib_rcv", "other"),
    ("tcp_v4_rcv", "tcp"), ("tcp_v6_rcv", "tcp"), ("ip_forward", "other"), ("ip_rcv_finish_core", "other"),
    ("dst_discard_out", "no-route"), ("dst_discard", "no-route"), ("__dev_forward_skb2", "device"),
    ("veth_xmit", "device"), ("__dev_queue_xmit", "qdisc"), ("br_handle_frame", "device"),
    ("br_dev_xmit", "device"), ("vxlan_rcv", "overlay"), ("vxlan_xmit", "overlay"),
    ("xfrm_lookup_with_ifid", "ipsec"), ("__xfrm_policy_check", "ipsec"), ("nf_hook_slow", "netfilter"),
    ("igmpv3_newpack", "other"), ("icmp_rcv", "other"), ("__netif_receive_skb_core", "other"),
    ("udp_queue_rcv_one_skb", "other"), ("netlink_broadcast_filtered", "other"),
]


@pytest.mark.parametrize("location,category", NODE_PLACES)
def test_unspecific_drops_are_explained_by_where_they_happened(location, category):
    d = drop(reason="NOT_SPECIFIED", location=location)
    assert category_of("NOT_SPECIFIED", location) == category == category_of(None, location)
    place = place_of(location)
    assert place is not None, location
    assert cause(d) == place.cause
    v = classify(d)
    assert v.category == category and v.hint


def test_each_place_is_reached_by_its_own_functions():
    for place in PLACES:
        for f in place.functions:
            assert place_of(f.replace("*", "X")) is not None


def test_new_categories_rank_with_their_tier():
    assert {"overlay", "device", "bpf-program", "ipsec"} <= {c.name for c in REGISTRY if c.rank == 0}
    assert BY_NAME["memory"].rank == BY_NAME["qdisc"].rank
    assert sorted(REGISTRY, key=lambda c: c.rank)[-1] is OTHER


# -- hints from the node's evidence (constructed: tests/kernel/explain/test_causes.py reads real ones) --

def dev(name="veth1", ifindex=2, kind="veth", up=True, carrier=True, **kw) -> E.Device:
    return E.Device(ifindex, name, kind, up, carrier, "UP" if carrier else "LOWERLAYERDOWN", **kw)


def evidence(*devices, xfrm=None, programs=(), node=None) -> E.Evidence:
    return E.Evidence(1, tuple(devices), xfrm, tuple(programs), node)


def test_veth_with_its_peer_down_is_no_overloaded_queue():
    d = drop(reason="QDISC_DROP", location="__dev_queue_xmit", ifname="veth1", ifindex=2)
    assert "overloaded" in classify(d).hint          # without evidence: what the event alone says
    ev = evidence(dev(carrier=False, peer_ifindex=2, peer_netns="cni-1234"))
    v = classify(d, evidence=ev)
    assert v.category == "qdisc"
    assert "veth1 is UP, no carrier" in v.hint and "its peer, ifindex 2 in cni-1234, is down" in v.hint
    assert "torn down" in v.hint and "overloaded" not in v.hint


def test_bridge_port_not_forwarding_names_its_state():
    d = drop(reason="BRIDGE_INGRESS_STP_STATE", location="br_handle_frame", ifname="veth1", ifindex=2)
    v = classify(d, evidence=evidence(dev(master="cni0", port_state="blocking")))
    assert v.category == "device" and "bridge port veth1 of cni0 is blocking" in v.hint


def test_ipv6_disabled_and_route_localnet_name_the_sysctl():
    v = classify(drop(reason="IPV6DISABLED", location="ip6_rcv_core", family=6, src="fd00::1", dst="fd00::2",
                      ifname="eth0", ifindex=3), evidence=evidence(dev("eth0", 3, disable_ipv6=True)))
    assert v.category == "device" and "net.ipv6.conf.eth0.disable_ipv6=1" in v.hint and "fd00::1" in v.hint
    v = classify(drop(reason="IP_LOCALNET", location="ip_rcv_finish_core", dst="127.0.0.1", ifname="eth0",
                      ifindex=3), evidence=evidence(dev("eth0", 3, route_localnet=False)))
    assert v.category == "device" and "route_localnet is 0" in v.hint and "127.0.0.1" in v.hint


def test_overlay_vni_and_port_mismatch_name_the_devices_here():
    vx = dev("flannel.1", 5, "vxlan", vxlan=E.Vxlan(43, 8472, "192.168.0.2", None, "eth0", 1, ("192.168.0.1",)))
    v = classify(drop(reason="VXLAN_VNI_NOT_FOUND", location="vxlan_rcv", dport=8472), evidence=evidence(vx))
    assert v.category == "overlay" and "flannel.1 VNI 43 port 8472" in v.hint
    v = classify(drop(reason="NO_SOCKET", location="__udp4_lib_rcv", dport=4789, icmp_sent=(3, 3)),
                 evidence=evidence(vx))
    assert v.category == "no-socket" and "port 4789" in v.hint and "flannel.1 VNI 43 port 8472" in v.hint
    v = classify(drop(reason="NO_SOCKET", location="__udp4_lib_rcv", dport=53), evidence=evidence(vx))
    assert "nothing listens on UDP 10.0.0.2:53" in v.hint


def test_programs_and_policies_name_the_program():
    prog = E.Program("eth0", "tc ingress", 42, "cil_from_netdev", ("cilium-agent(77)",))
    v = classify(drop(reason="TC_INGRESS", location="tcf_classify", ifname="eth0"), evidence=evidence(programs=[prog]))
    assert v.category == "bpf-program" and "'cil_from_netdev' id 42 on eth0 held by cilium-agent(77)" in v.hint
    v = classify(drop(reason="TC_INGRESS", location="tcf_classify", ifname="eth1"), evidence=evidence(programs=[prog]))
    assert "no BPF program at tc ingress of eth1" in v.hint
    cg = E.Program("/kubepods/pod1", "cgroup_inet_egress", 7, "deny_egress")
    node = E.NodeFacts((cg,), ("lockdown", "capability", "apparmor", "bpf"), None)
    v = classify(drop(reason="BPF_CGROUP_EGRESS", location="ip_finish_output"), evidence=evidence(node=node))
    assert v.category == "bpf-program" and "'deny_egress' id 7 on /kubepods/pod1" in v.hint
    # LSM drops cannot be made on this machine (no securityfs, no LSM that drops): the hint on a constructed event.
    v = classify(drop(reason="SECURITY_HOOK", location="sk_filter_trim_cap"), evidence=evidence(node=node))
    assert v.category == "bpf-program" and "active: lockdown, capability, apparmor, bpf" in v.hint


def test_ipsec_without_state_says_the_keys_are_missing():
    x = E.Xfrm((("in", 1), ("out", 0), ("fwd", 0)), 0)
    v = classify(drop(reason="XFRM_POLICY", location="icmp_rcv"), evidence=evidence(xfrm=x))
    assert v.category == "ipsec" and "1 in, 0 out, 0 fwd policies and 0 states" in v.hint and "keys" in v.hint
    x = E.Xfrm((("in", 0), ("out", 2), ("fwd", 0)), 0)
    v = classify(drop(reason="NOT_SPECIFIED", location="dst_discard_out"), evidence=evidence(xfrm=x))
    assert v.category == "no-route" and "2 outbound IPsec policies and no IPsec state" in v.hint


def test_memory_pressure_quotes_the_nodes_memory():
    # Memory pressure cannot be made safely on a shared machine: a constructed event.
    node = E.NodeFacts(None, None, E.Memory(8 << 20, 100 << 10, 42.5))
    for reason in ("NOMEM", "PFMEMALLOC"):
        v = classify(drop(reason=reason, location="__netif_receive_skb_core"), evidence=evidence(node=node))
        assert v.category == "memory" and "100 MiB of 8192 MiB available" in v.hint and "42.5%" in v.hint


def test_the_classifier_never_reuses_a_hint_once_the_evidence_changed():
    d = drop(reason="QDISC_DROP", location="__dev_queue_xmit", ifname="veth1", ifindex=2)
    now: list[E.Evidence | None] = [evidence(dev(carrier=False))]
    remember = Classifier(evidence=lambda _d: now[0])
    down = remember(d)
    assert "no carrier" in down.hint and remember(d) is down
    now[0] = evidence(dev(carrier=True))
    assert remember(d).hint == classify(d, evidence=now[0]).hint and "no carrier" not in remember(d).hint
    now[0] = None
    assert remember(d).hint == classify(d).hint
    # Categories that read no evidence never ask for it.
    asked: list[Drop] = []
    Classifier(evidence=lambda x: asked.append(x))(drop(reason="PKT_TOO_BIG", location="ip_forward", mtu=1450))
    assert asked == []
