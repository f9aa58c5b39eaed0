"""NETFILTER_DROP told apart, on rulesets and statistics recorded from the lab's node."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.explain.classify import classify
from tracer.explain.explainer import (ACTIVE_SECONDS, IDLE_SECONDS, MAX_WANTED, MEMO_FLOWS, Context, Explainer,
                                      NetnsView, Ruleset)
from tracer.explain.conntrack import parse_ct_stats
from tracer.explain.droppoints import DropPoint, Parsed
from tracer.explain.iptables import parse_iptables_save
from tracer.explain.matcher import Packet, RuleIndex, matches, matches_packet
from tracer.explain.nft import parse_nft_json

from ..helpers import drop

G = Path(__file__).resolve().parents[2] / "golden" / "netfilter"


def nft_save():
    parsed = parse_iptables_save((G / "iptables-nft-save.txt").read_text(), "iptables-nft", "ipv4")
    assert parsed.skipped == 0
    return list(parsed.value)


def test_iptables_save_drop_points_with_counters():
    points = nft_save()
    policy = next(p for p in points if p.kind == "policy")
    assert (policy.table, policy.chain, policy.target, policy.packets) == ("filter", "FORWARD", "DROP", 3)
    rule = next(p for p in points if p.rule and "--dport 5354" in p.rule)
    assert (rule.chain, rule.target, rule.packets) == ("FORWARD", "DROP", 2)
    svc = next(p for p in points if p.target == "REJECT")
    assert svc.no_endpoints_service == "default/empty" and svc.table == "filter" and svc.chain == "KUBE-SERVICES"
    assert next(p for p in points if p.drops_invalid).chain == "KUBE-FORWARD"
    # DNAT and jumps are not drop points.
    assert not [p for p in points if p.table == "nat"]
    legacy = parse_iptables_save((G / "iptables-legacy-save.txt").read_text(), "iptables-legacy", "ipv4").value
    assert [(p.chain, p.target, p.backend) for p in legacy] == [("INPUT", "REJECT", "iptables-legacy")]


def test_native_nftables_points_skip_iptables_nft_tables():
    text = (G / "nft-ruleset.json").read_text()
    parsed = parse_nft_json(text, skip_tables={("ip", "filter"), ("ip", "nat")})
    points = parsed.value
    assert parsed.skipped == 0
    assert {(p.table, p.chain, p.kind, p.target) for p in points} == {
        ("nd_native", "forward_chk", "rule", "drop"), ("nd_native", "input_chk", "policy", "drop")}
    rule = next(p for p in points if p.kind == "rule")
    assert rule.packets == 4 and "udp dport" in rule.rule and rule.family == "inet"
    assert next(p for p in points if p.kind == "policy").packets is None   # base chains count no policy
    assert matches(rule, drop(proto="udp", dport=5355)) is True
    assert matches(rule, drop(proto="udp", dport=53)) is False and matches(rule, drop(proto="tcp", dport=5355)) is False


def test_conntrack_stats_sum_cpus_but_not_entries():
    stats = parse_ct_stats((G / "nf_conntrack.stat").read_text()).value
    assert stats["entries"] == 6 and "clash_resolve" in stats and stats["insert_failed"] == 0
    two_cpus = ("entries clashres found invalid insert_failed drop\n"
                "00000002 00000003 0 0000000a 1 0\n00000002 00000004 0 00000001 0 0\n")
    s = parse_ct_stats(two_cpus).value
    assert (s["entries"], s["clash_resolve"], s["invalid"], s["insert_failed"]) == (2, 7, 11, 1)


def test_rules_are_matched_against_the_packet():
    points = nft_save()
    rule = next(p for p in points if p.rule and "--dport 5354" in p.rule)
    fwd = dict(out_ifname="ext0")          # forwarded: through FORWARD
    assert matches(rule, drop(src="10.244.1.10", dport=5354, proto="udp", **fwd)) is True
    assert matches(rule, drop(src="10.244.1.10", dport=5353, proto="udp", **fwd)) is False
    assert matches(rule, drop(src="10.244.1.99", dport=5354, proto="udp", **fwd)) is False
    # Delivered here, the packet never went through FORWARD.
    assert matches(rule, drop(src="10.244.1.10", dport=5354, proto="udp")) is False
    inv = next(p for p in points if p.drops_invalid)
    assert matches(inv, drop(conntrack="none")) is True and matches(inv, drop(conntrack="new")) is False
    assert matches(next(p for p in points if p.kind == "policy"), drop(**fwd)) is None


def view(points, grown=(), ct=None, growth=None):
    return NetnsView(list(grown), [p for p in points if p.packets], points, ct, {}, growth or {})


def ctx(points, **kw):
    return Context(view(points, **kw))


@pytest.mark.parametrize("packet,by,expected", [
    (dict(src="10.244.1.10", dst="172.16.200.2", proto="udp", dport=5354, out_ifname="ext0"), "rule", "--dport 5354"),
    (dict(src="10.244.1.10", dst="172.16.200.2", proto="udp", dport=5353, out_ifname="ext0"), "policy", "FORWARD"),
])
def test_netfilter_rule_or_policy(packet, by, expected):
    points = nft_save()
    v = classify(drop(reason="NETFILTER_DROP", location="nft_do_chain", conntrack="new", **packet), ctx(points))
    assert v.category == "netfilter" and v.detail["by"] == by
    assert expected in (v.detail["rule"] or v.detail["chain"]) and expected in v.hint


def test_service_without_endpoints_is_named():
    v = classify(drop(reason="NETFILTER_DROP", location="nft_do_chain", dst="10.96.0.30", proto="tcp", dport=80,
                      icmp_sent=(3, 3), conntrack="new"), ctx(nft_save()))
    assert v.category == "netfilter" and v.detail["service_without_endpoints"] == "default/empty"
    assert v.hint.startswith("Service default/empty has no endpoints")


def test_invalid_state_is_conntrack():
    v = classify(drop(reason="NETFILTER_DROP", location="nft_do_chain", conntrack="none", proto="tcp"),
                 ctx(nft_save(), ct={"entries": 3, "invalid": 7}))
    assert v.category == "conntrack" and v.detail == {"by": "conntrack", "state": "invalid", "chain": "KUBE-FORWARD",
                                                      "rule": "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
                                                      "conntrack_invalid": 7}
    # Without conntrack in use there (no INVALID rule, nothing counted), no state says nothing.
    plain = [p for p in nft_save() if not p.drops_invalid]
    v = classify(drop(reason="NETFILTER_DROP", location="nft_do_chain", conntrack="none", dport=5354,
                      src="10.244.1.10", out_ifname="ext0"), ctx(plain, ct={"entries": 0}))
    assert v.category == "netfilter" and "--dport 5354" in v.detail["rule"]


@pytest.mark.parametrize("growth,state", [({"insert_failed": 3}, "insert_failed"), ({"drop": 12}, "table_full")])
def test_conntrack_refusals_from_statistics(growth, state):
    v = classify(drop(reason="NETFILTER_DROP", location="nf_hook_slow", conntrack="new"),
                 ctx([], ct={"entries": 65536}, growth=growth))
    assert v.category == "conntrack" and v.detail["state"] == state
    # At nft_do_chain it was a rule, whatever conntrack counted meanwhile.
    assert classify(drop(reason="NETFILTER_DROP", location="nft_do_chain", conntrack="new"),
                    ctx([], ct={"entries": 1}, growth=growth)).category == "netfilter"


def test_reply_that_bypassed_nat():
    v = classify(drop(reason="NO_SOCKET", location="tcp_v4_rcv", proto="tcp", src="10.244.1.11", sport=8080,
                      tcp_flags=0x12), Context(None, "0"))
    assert v.category == "conntrack" and v.detail["by"] == "nat-bypass"
    assert "bridge-nf-call-iptables=0" in v.hint and "10.244.1.11:8080" in v.hint
    plain_syn = classify(drop(reason="NO_SOCKET", location="tcp_v4_rcv", proto="tcp", tcp_flags=0x02))
    assert plain_syn.category == "no-socket"


def test_explainer_diffs_counters_between_samples():
    points = nft_save()
    samples = iter([(points, {"entries": 1, "clash_resolve": 5}),
                    ([DropPoint(**{**p.__dict__, "packets": (p.packets or 0) + 4}) if p.kind == "policy" else p
                      for p in points], {"entries": 1, "clash_resolve": 9})])
    asked = []

    def sample(path, rules):
        asked.append(rules)
        points, ct = next(samples)
        return (Ruleset(tuple(points)) if rules else None), Parsed(ct)

    ex = Explainer(paths={7: "/x"}, node_netns=7, sample=sample)
    ex.sample_now()
    assert ex.view(7).grown == [] and 7 not in ex.notices
    ex.want(7)                       # a netfilter drop there: rules are read again
    ex.sample_now()
    assert asked == [True, True]
    grown = ex.view(7).grown
    assert [(p.chain, p.kind, n) for p, n in grown] == [("FORWARD", "policy", 4)]
    assert "clash_resolve +4" in ex.notices[7]
    ex._last_want[7] -= ACTIVE_SECONDS  # quiet for a while: statistics only
    samples = iter([(points, {"entries": 1, "clash_resolve": 9})])
    ex.sample_now()
    assert asked[-1] is False and ex.view(7).grown == []
    ex.views[7].rules_at -= IDLE_SECONDS  # but the ruleset is read again now and then
    samples = iter([(points, {"entries": 1, "clash_resolve": 9})])
    ex.sample_now()
    assert asked[-1] is True


def test_service_named_even_when_the_icmp_error_was_rate_limited():
    v = classify(drop(reason="NETFILTER_DROP", location="nft_do_chain", dst="10.96.0.30", proto="tcp", dport=80,
                      conntrack="new"), ctx(nft_save()))
    assert v.detail["service_without_endpoints"] == "default/empty"


def test_hook_drop_without_a_matching_rule_is_conntrack_or_nat():
    # An ICMP error to a pod refused in nf_hook_slow: no rule or policy fits it.
    v = classify(drop(reason="NETFILTER_DROP", location="nf_hook_slow", src="10.244.1.1", dst="10.244.1.10",
                      proto="icmp", sport=None, dport=None, conntrack="related-reply"), ctx(nft_save()))
    assert v.category == "conntrack" and v.detail == {"by": "hook", "conntrack_state": "related-reply"}


def test_groups_keep_what_was_learnt():
    from tracer.groups import Groups
    from tracer.kernel.decode import Decoder
    from tracer.kernel.facts import Kallsyms

    groups = Groups(Decoder({12: "NETFILTER_DROP"}, Kallsyms([], [])))
    d = drop(reason="NETFILTER_DROP", location="nft_do_chain", reason_raw=12, conntrack="new", dport=5353,
             out_ifname="ext0")
    groups.add_event(d, classify(d, ctx(nft_save())))
    g = next(iter(groups.groups.values()))
    assert g.detail["by"] == "policy"
    groups.reclassify(lambda x: classify(x, ctx([])), ("netfilter", "conntrack"))   # the policy was set back
    assert g.detail["by"] == "policy" and "FORWARD" in g.hint


def test_invalid_rule_alone_shows_conntrack_is_in_use():
    # A quiet node: conntrack counters all 0, yet kube-proxy's INVALID rule matched the packet.
    v = classify(drop(reason="NETFILTER_DROP", location="nft_do_chain", conntrack="none", proto="tcp",
                      out_ifname="ext0"), ctx(nft_save(), ct={"entries": 0, "invalid": 0}))
    assert v.category == "conntrack" and v.detail["chain"] == "KUBE-FORWARD"


def sampler(by_path):
    """A sample function over plain data: path -> (drop points, conntrack stats), or an exception to raise."""
    def sample(path, rules):
        got = by_path[path]
        if isinstance(got, Exception):
            raise got
        points, ct = got
        return (points if isinstance(points, Ruleset) else Ruleset(tuple(points))) if rules else None, \
            Parsed(ct)
    return sample


def test_a_namespace_that_cannot_be_read_stops_no_other_and_warns_once():
    warnings = []
    by_path = {"/run/netns/bad": RuntimeError("nsenter vanished"), "/run/netns/good": (nft_save(), {"entries": 1})}
    ex = Explainer(paths={1: "/run/netns/bad", 2: "/run/netns/good"}, sample=sampler(by_path),
                      warn=warnings.append)
    ex.want(1)
    ex.want(2)
    ex.sample_now()
    ex.sample_now()
    assert ex.view(1) is None and ex.view(2).points == nft_save()
    assert warnings == ["netns 1 (bad): its rule counters and conntrack statistics could not be read "
                        "(RuntimeError: nsenter vanished); its netfilter drops are explained without them"]


def test_unreadable_ruleset_entries_warned_once_per_namespace():
    warnings = []
    rules = Ruleset(tuple(nft_save()), (("nft -j list ruleset", 3),))
    ex = Explainer(paths={5: "/run/netns/cni-1", 6: "/proc/42/ns/net"},
                      sample=sampler({"/run/netns/cni-1": (rules, {}), "/proc/42/ns/net": (rules, {})}),
                      warn=warnings.append)
    for _ in range(3):
        ex.want(5)
        ex.want(6)
        ex.sample_now()
    assert warnings == [f"netns {n} ({label}): 3 ruleset entries could not be read (3 from nft -j list ruleset); "
                        "they are not used to explain drops" for n, label in ((5, "cni-1"), (6, "pid 42"))]
    assert len(ex.view(5).points) == len(nft_save())     # what could be read is used


def test_a_namespace_gone_is_forgotten_and_a_reused_inode_starts_fresh():
    points = nft_save()
    more = [DropPoint(**{**p.__dict__, "packets": (p.packets or 0) + 5}) for p in points]
    seen = {9: "/run/netns/cni-a"}
    data = {"/run/netns/cni-a": (points, {"entries": 1, "clash_resolve": 1}),
            "/run/netns/cni-b": (more, {"entries": 1, "clash_resolve": 0})}
    warnings = []
    ex = Explainer(sample=sampler(data), discover=lambda: dict(seen), warn=warnings.append)
    ex.want(9)
    ex.sample_now()
    data["/run/netns/cni-a"] = (points, {"entries": 1, "clash_resolve": 4})
    ex.sample_now()
    assert 9 in ex.notices and ex.view(9) is not None
    # The namespace goes: its view, notice and want go with it.
    seen.clear()
    ex.sample_now()
    assert (ex.view(9), ex.notices, ex._wanted, ex._last_want) == (None, {}, set(), {})
    # A new namespace gets the freed inode (another path enters it): nothing of the old one is carried over.
    seen[9] = "/run/netns/cni-a"
    ex.want(9)
    ex.sample_now()
    seen[9] = "/run/netns/cni-b"
    ex.want(9)
    ex.sample_now()
    assert ex.view(9).grown == [] and ex.view(9).points == more and 9 not in ex.notices


def test_discovery_that_fails_is_a_warning():
    warnings = []

    def discover():
        raise PermissionError("/proc")
    ex = Explainer(node_netns=3, sample=sampler({}), discover=discover, warn=warnings.append)
    ex.sample_now()
    ex.sample_now()
    assert len(warnings) == 1 and "namespaces could not be listed" in warnings[0]


def test_wants_are_bounded():
    ex = Explainer(paths={}, sample=sampler({}))
    for netns in range(MAX_WANTED * 3):
        ex.want(netns)
    assert len(ex._wanted) == len(ex._last_want) == MAX_WANTED
    for netns in list(ex._last_want):
        ex._last_want[netns] -= ACTIVE_SECONDS     # quiet, and never discovered: forgotten
    ex.sample_now()
    assert ex._wanted == set() and ex._last_want == {}


def test_flow_memo_is_bounded_and_a_source_port_storm_hits_it():
    points = nft_save()                     # no rule tests the source port
    v = view(points)
    rule = next(p for p in points if p.rule and "--dport 5354" in p.rule)
    for sport in range(100_000):
        assert v.likely_points(drop(src="10.244.1.10", sport=sport, dport=5354, proto="udp",
                                    out_ifname="ext0")) == [rule]
    assert len(v._memo) == 1
    # Where a rule tests the source port, it is part of the key, and the memo stays bounded.
    by_sport = parse_iptables_save("*filter\n[0:0] -A INPUT -p udp --sport 1000:1999 -j DROP\n",
                                      "iptables-nft", "ipv4").value
    v = view(list(by_sport))
    answers = [v.likely_points(drop(sport=sport)) for sport in range(0, 30_000, 3)]
    assert len(v._memo) <= MEMO_FLOWS
    assert [bool(a) for a in answers] == [1000 <= s <= 1999 for s in range(0, 30_000, 3)]


# ------------------------------------------------------------------ the rule index

ADDRS = ("10.96.0.1", "10.96.0.2", "10.96.1.0", "fd00::1")
ipt_rule = st.builds(
    lambda chain, neg_d, addr, plen, proto, neg_p, ports, target:
        f"[0:0] -A {chain}" + (f" {neg_d}-d {addr}{plen}" if addr else "")
        + (f" -p {proto} -m {proto}" if proto else "") + (f" {neg_p}--dport {ports}" if ports else "")
        + f" -j {target}",
    st.sampled_from(("FORWARD", "INPUT", "KUBE-SERVICES")), st.sampled_from(("", "! ")),
    st.sampled_from((None, *ADDRS)), st.sampled_from(("", "/32", "/24", "/128")), st.sampled_from((None, "tcp", "udp")),
    st.sampled_from(("", "! ")), st.sampled_from((None, "80", "80:82", "90:80", "53,80", "1:65535", "0:100,200:1")),
    st.sampled_from(("DROP", "REJECT")))
nft_value = st.sampled_from((80, 81, [80, 81], 80.0, "http", True, list(range(60, 130))))
nft_rule = st.builds(
    lambda i, op_a, addr, op_p, proto, port: {"rule": {
        "family": "inet", "table": "t", "chain": "c", "handle": i, "expr": [
            *([{"match": {"op": op_a, "left": {"payload": {"protocol": "ip6" if ":" in addr else "ip",
                                                           "field": "daddr"}}, "right": addr}}] if addr else []),
            *([{"match": {"op": op_p, "left": {"payload": {"protocol": proto, "field": "dport"}},
                          "right": {"set": port} if isinstance(port, list) else port}}] if proto else []),
            {"drop": None}]}},
    st.integers(1, 1000), st.sampled_from(("==", "!=", "in")), st.sampled_from((None, *ADDRS, "10.96.0.0/24", "x")),
    st.sampled_from(("==", "!=", "in", "<")), st.sampled_from((None, "tcp", "udp", "th")), nft_value)
packets = st.builds(
    lambda dst, dport, proto, fwd: drop(dst=dst, dport=dport, proto=proto, out_ifname="ext0" if fwd else None),
    st.sampled_from((None, "garbage", *ADDRS, "10.96.0.9")), st.sampled_from((None, 53, 80, 81, 82, 100, 9999)),
    st.sampled_from(("tcp", "udp", None)), st.booleans())


@settings(max_examples=300)
@given(st.lists(ipt_rule, max_size=20), st.lists(nft_rule, max_size=10), st.lists(packets, min_size=1, max_size=10))
def test_the_rule_index_answers_as_trying_every_rule(ipt_lines, nft_rules, pkts):
    points = [*parse_iptables_save("*filter\n:FORWARD DROP [0:0]\n" + "\n".join(ipt_lines) + "\n",
                                   "iptables-nft", "ipv4").value,
              *parse_nft_json(json.dumps({"nftables": nft_rules})).value, *nft_save()]
    index = RuleIndex(points)
    for d in pkts:
        pkt = Packet.of(d)
        every = [(p, v) for p in points if (v := matches_packet(p, pkt)) is not False]
        assert index.verdicts(pkt) == every


def test_the_rule_index_tries_a_packet_on_its_services_rules_only():
    text = "*filter\n:FORWARD DROP [0:0]\n[0:0] -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n" + "".join(
        f"[0:0] -A KUBE-SERVICES -d 10.96.{i // 250}.{i % 250 + 1}/32 -p tcp -m tcp --dport {8000 + i % 100} "
        f"-m comment --comment \"ns/svc-{i}:http has no endpoints\" -j REJECT\n" for i in range(5000))
    points = parse_iptables_save(text, "iptables-nft", "ipv4").value
    index = RuleIndex(points)
    pkt = Packet.of(drop(dst="10.96.3.8", dport=8057, proto="tcp", out_ifname="ext0"))
    assert len(index.candidates(pkt)) == 3           # the policy, the INVALID rule, the Service's rule
    assert [p.no_endpoints_service for p, v in index.verdicts(pkt) if v] == ["ns/svc-757"]
    # No destination port read: no rule can be ruled out by it.
    assert len(index.candidates(Packet.of(drop(dst="10.96.3.8", dport=None)))) == len(points)
