"""explain/xfrm.py: the namespace's inbound IPsec policies and states as `ip xfrm` prints them
(iproute2 6.1), which one refused a packet and how, and parsers that survive any text."""

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tracer.explain import xfrm
from tracer.explain.classify import classify
from tracer.explain.evidence import XFRM_CMDS, Evidence
from tracer.kernel import event, pktfacts

from ..helpers import drop

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "evidence"
# `ip xfrm policy list` as iproute2 6.1 printed it here (three inbound policies, one outbound);
# the state in iproute2's format: this kernel has no ESP (CONFIG_INET_ESP), so none could be made.
POLICIES = (GOLDEN / "xfrm-policy-list.txt").read_text()
STATES = (GOLDEN / "xfrm-state-list.txt").read_text()
X = xfrm.Xfrm((("in", 3), ("out", 1), ("fwd", 0)), 1, xfrm.parse_policies(POLICIES), xfrm.parse_states(STATES))
UNICAST = pktfacts.make(pktfacts.PACKET_HOST)


def udp(dport: int, src: str = "192.0.2.1"):
    return drop(reason="NOT_SPECIFIED", location="__udp4_lib_rcv", src=src, dst="192.0.2.2", dport=dport,
                facts=UNICAST)


def test_inbound_policies_and_states_are_read_and_no_key_is_kept():
    assert [p.dport for p in X.inbound or ()] == [7003, 7002, 7001]       # "dir out" passed over
    assert [p.action for p in X.inbound or ()] == ["allow", "allow", "block"]
    assert X.inbound and X.inbound[0].templates == (xfrm.Template("esp", "transport", 7, "0.0.0.0", "0.0.0.0"),)
    assert X.state_list == (xfrm.State("192.0.2.1", "192.0.2.2", "esp", "0x00000100", 7, "transport"),)
    assert "1111" not in repr(X) and "2222" not in repr(X)


def test_each_refusal_is_told_apart_and_names_its_policy():
    sel = "src 192.0.2.1/32 dst 192.0.2.2/32 proto udp dport"
    block = xfrm.hint(udp(7001), X, "cause")
    assert block.startswith(f"inbound IPsec policy '{sel} 7001 dir in action block' refused 192.0.2.1:1234")
    assert block.endswith("the policy blocks it (action block)")
    no_state = xfrm.hint(udp(7002), xfrm.Xfrm(X.policies, 0, X.inbound, ()), "cause")
    assert f"'{sel} 7002 dir in tmpl esp transport'" in no_state and "has no state (SA) for it" in no_state
    plaintext = xfrm.hint(udp(7003), X, "cause")
    assert f"'{sel} 7003 dir in tmpl esp transport'" in plaintext and "came in plaintext" in plaintext
    # reqid 0 takes any state; the state of reqid 7 serves 7002's template, so 7002 is plaintext too.
    assert "came in plaintext" in xfrm.hint(udp(7002), X, "cause")
    # A state for another peer does not serve this one's packet.
    assert xfrm.refusal(X, udp(7003, src="192.0.2.9")) is None     # no policy selects 192.0.2.9 either
    other = xfrm.Xfrm(X.policies, 1, X.inbound, (xfrm.State("192.0.2.5", "192.0.2.2", "esp", None, 7, "transport"),))
    assert xfrm.refusal(other, udp(7003)).how == "no-state"


def test_without_the_lists_the_hint_says_what_the_counts_say():
    counts = xfrm.Xfrm((("in", 1), ("out", 0), ("fwd", 0)), 0)
    assert "has not installed its keys" in xfrm.hint(udp(7009), counts, "refused")
    assert "check 'ip xfrm policy'" in xfrm.hint(udp(7009), None, "refused")


def test_without_an_inbound_policy_the_hint_names_none():
    """0 inbound policies: no policy 'requires a transform'; the default or a short datagram may."""
    none_in = xfrm.Xfrm((("in", 0), ("out", 2), ("fwd", 0)), 0)
    said = xfrm.hint(udp(7009), none_in, "refused")
    assert "requires" not in said and "getdefault" in said and "shorter than a UDP header" in said


def test_unicast_refused_on_udps_no_socket_path_is_ipsec_and_named_a_broadcast_is_not():
    ev = Evidence(4026531840, (), X, None, None)
    v = classify(udp(7001), evidence=ev)
    assert v.category == "ipsec" and not v.benign and "action block" in v.hint
    bcast = drop(reason="NOT_SPECIFIED", location="__udp4_lib_rcv", dst="192.0.2.255", dport=7001,
                 facts=pktfacts.make(pktfacts.PACKET_BROADCAST, event.ND_DST_BROADCAST))
    assert classify(bcast, evidence=ev).category != "ipsec" and classify(bcast).benign
    # Looped back, unclassified: neither benign nor called IPsec.
    loop = drop(reason="NOT_SPECIFIED", location="__udp4_lib_rcv", facts=pktfacts.make(pktfacts.PACKET_LOOPBACK))
    assert classify(loop).category != "ipsec" and not classify(loop).benign
    # 127.255.255.255 on lo comes in a frame to lo's own MAC: its route says broadcast.
    lo = drop(reason="NOT_SPECIFIED", location="__udp4_lib_rcv", dst="127.255.255.255", dport=7001,
              facts=pktfacts.make(pktfacts.PACKET_HOST, event.ND_DST_BROADCAST))
    assert classify(lo, evidence=ev).category != "ipsec" and classify(lo).benign


LINES = st.lists(st.one_of(
    st.sampled_from(POLICIES.splitlines() + STATES.splitlines()),
    st.text(alphabet=st.sampled_from(list(" \tsrcdtpoinumyaeqlk0123456789./:x")), max_size=60),
    st.text(max_size=40)), max_size=40)


@given(LINES, LINES)
def test_any_text_parses_to_typed_bounded_values(policies, states):
    ps, ss = xfrm.parse_policies("\n".join(policies)), xfrm.parse_states("\n".join(states))
    assert len(ps) <= xfrm.MAX_POLICIES and len(ss) <= xfrm.MAX_STATES
    for p in ps:
        assert p.action in ("allow", "block") and len(p.templates) <= xfrm.MAX_TEMPLATES
        assert len(p.selector) <= xfrm.SELECTOR_MAX
        assert p.dport is None or 0 <= p.dport < 65536
    x = xfrm.Xfrm((("in", len(ps)),), len(ss), ps, ss)
    for port in (7001, 7002, 7003):
        assert isinstance(xfrm.hint(udp(port), x, "c"), str)


def test_a_closed_port_the_policy_refused_is_named_one_that_answered_is_not():
    """__udp6_lib_rcv() and tcp_v4_rcv() say NO_SOCKET for a refusal on their no-socket path."""
    ev = Evidence(4026531840, (), X, None, None)
    refused = drop(reason="NO_SOCKET", location="__udp6_lib_rcv", family=6, src="192.0.2.1", dst="192.0.2.2",
                   dport=7001, facts=UNICAST)
    v = classify(refused, evidence=ev)
    assert v.category == "no-socket" and not v.benign
    assert v.hint.startswith("inbound IPsec policy '") and "action block" in v.hint and "NO_SOCKET" in v.hint
    answered = drop(reason="NO_SOCKET", location="__udp4_lib_rcv", dst="192.0.2.2", dport=7001,
                    icmp_sent=(3, 3), facts=UNICAST)
    assert classify(answered, evidence=ev).hint.startswith("nothing listens on UDP")
    assert classify(drop(reason="NO_SOCKET", location="__udp4_lib_rcv", dst="192.0.2.2", dport=7009),
                    evidence=ev).hint.startswith("nothing listens on UDP")


def test_the_states_are_read_without_their_keys():
    """`ip xfrm state list` prints each state's keys; nokeys leaves them in the kernel."""
    states = [c for c in XFRM_CMDS if c[:4] == ("ip", "xfrm", "state", "list")]
    assert states and all("nokeys" in c for c in states)


def test_a_selector_line_of_any_length_is_quoted_bounded():
    """Node text: a pod's namespace may hold a policy on a device of any name; the hint stays short."""
    text = "src 192.0.2.1/32 dst 192.0.2.2/32 " + "dev x " * 100_000 + "\n\tdir in action block\n"
    (p,) = xfrm.parse_policies(text)
    assert len(p.selector) <= xfrm.SELECTOR_MAX
    assert len(xfrm.hint(udp(7009), xfrm.Xfrm((("in", 1),), 0, (p,), ()), "c")) < 2 * xfrm.SELECTOR_MAX
