"""NETFILTER_DROP told apart on the simulated node: iptables-nft, legacy
iptables and native nftables rules and policies, kube-proxy's REJECT for a
Service without endpoints and its INVALID rule, a reply that bypassed NAT,
and conntrack insert races the kernel resolved."""

import os
import re
import time

import pytest

from tracer.explain.explainer import ct_stats
from tracer.lab.cases import CASES
from tracer.lab.ownership import NETNS_DIR
from tracer.lab.shell import run
from tracer.lab.topology import CLIENT_V4, SVC_EMPTY

from ..helpers import pod_args

N = 3


def watch(netdrop, node, play, *extra):
    nd = netdrop(*pod_args(node, "-A", *extra)).wait_ready()
    sent = play()
    nd.stop(settle=1.5)
    assert nd.proc.returncode == 0, nd.stderr
    return sent, nd.records(), nd.stderr


def test_forward_policy_is_named(netdrop, node):
    # As on a real node, the policy is in place before netdrop starts.
    run("iptables", "-P", "FORWARD", "DROP", ns=node.node1)
    try:
        _, records, _ = watch(netdrop, node, lambda: node.traffic(
            node.pods["web"].netns, "udp", "--dst", CLIENT_V4, "--port", "5353", "--count", str(N)))
    finally:
        run("iptables", "-P", "FORWARD", "ACCEPT", ns=node.node1)
    drops = [r for r in records if r["dst"] == CLIENT_V4]
    assert len(drops) == N
    for r in drops:
        d = r["detail"]
        assert (d["by"], d["table"], d["chain"], d["backend"]) == ("policy", "filter", "FORWARD", "iptables-nft")
        assert "FORWARD chain's policy DROP" in r["hint"]


def test_iptables_rule_legacy_and_nft_and_native_nftables(netdrop, node):
    web = node.pods["web"]
    rules = [("iptables", "-I", "FORWARD", "-s", f"{web.ipv4}/32", "-p", "udp", "--dport", "5354", "-j", "DROP"),
             ("iptables-legacy", "-I", "FORWARD", "-p", "udp", "--dport", "5356", "-j", "DROP")]
    nft = ["add table inet nd_native",
           "add chain inet nd_native forward_chk { type filter hook forward priority -5; policy accept; }",
           "add rule inet nd_native forward_chk udp dport 5355 counter drop"]
    try:
        for r in rules:
            run(*r, ns=node.node1)
        for cmd in nft:
            run("nft", cmd, ns=node.node1)

        def play():
            for port in (5354, 5355, 5356):
                node.traffic(web.netns, "udp", "--dst", CLIENT_V4, "--port", str(port), "--count", str(N))
        _, records, _ = watch(netdrop, node, play)
    finally:
        run("iptables", "-D", *rules[0][2:], ns=node.node1, check=False)
        run("iptables-legacy", "-D", *rules[1][2:], ns=node.node1, check=False)
        run("nft", "delete table inet nd_native", ns=node.node1, check=False)
    by_port = {p: [r for r in records if r["dport"] == p] for p in (5354, 5355, 5356)}
    assert all(len(v) == N for v in by_port.values()), {p: len(v) for p, v in by_port.items()}
    undetailed = [(r["dport"], r["location"], r["ifname"], r["out_ifname"], r["hint"]) for r in records
                  if r["dport"] in by_port and r["detail"] is None]
    assert not undetailed, undetailed
    for r in by_port[5354]:
        assert r["location"] == "nft_do_chain" and r["detail"]["backend"] == "iptables-nft"
        assert r["detail"]["by"] == "rule" and "--dport 5354" in r["detail"]["rule"]
    for r in by_port[5355]:
        assert r["location"] == "nft_do_chain" and r["detail"]["backend"] == "nftables"
        assert (r["detail"]["table"], r["detail"]["chain"]) == ("nd_native", "forward_chk")
    for r in by_port[5356]:
        # Legacy xtables hand the verdict back: nf_hook_slow frees the packet.
        assert r["location"] == "nf_hook_slow" and r["detail"]["backend"] == "iptables-legacy"
        assert "--dport 5356" in r["detail"]["rule"]


def test_service_without_endpoints(netdrop, node):
    _, records, _ = watch(netdrop, node, lambda: CASES["no-endpoints"].play(node, N))
    drops = [r for r in records if r["dst"] == SVC_EMPTY[0]]
    assert len(drops) == N
    for r in drops:
        assert r["category"] == "netfilter" and r["detail"]["service_without_endpoints"] == "default/empty"
        assert r["hint"].startswith("Service default/empty has no endpoints")
        assert r["pod"]["name"] == node.pods["web"].name and r["direction"] == "from-pod"


def test_invalid_state_dropped_by_kube_proxy(netdrop, node):
    before = ct_stats(str(NETNS_DIR / node.node1))
    _, records, _ = watch(netdrop, node, lambda: CASES["invalid"].play(node, N))
    after = ct_stats(str(NETNS_DIR / node.node1))
    drops = [r for r in records if r["dst"] == node.pods["web"].ipv4 and r["dport"] == 8080]
    assert len(drops) == N
    assert after["invalid"] - before["invalid"] >= N            # the kernel's own count
    for r in drops:
        assert (r["category"], r["conntrack"]) == ("conntrack", "none")
        assert r["detail"]["state"] == "invalid" and r["detail"]["chain"] == "KUBE-FORWARD"


def test_reply_that_bypassed_nat(netdrop, node):
    web, db = node.pods["web"], node.pods["db"]
    _, records, _ = watch(netdrop, node, lambda: CASES["nat-bypass"].play(node, N))
    drops = [r for r in records if r["src"] == db.ipv4 and r["dst"] == web.ipv4 and r["reason"] == "NO_SOCKET"]
    assert len(drops) >= N                         # one SYN-ACK per attempt at least (the SYN is retried)
    for r in drops:
        assert r["category"] == "conntrack" and r["detail"]["by"] == "nat-bypass"
        assert r["pod"]["name"] == web.name and r["direction"] == "in-pod"
        assert r["detail"]["reply_from"] == f"{db.ipv4}:8080"
    assert any(r["detail"].get("bridge_nf_call_iptables") == "0" for r in drops)


def test_conntrack_races_resolved_are_a_notice(netdrop, node):
    before = ct_stats(str(NETNS_DIR / node.node1))["clash_resolve"]
    for _ in range(3):      # bounded: the race needs both CPUs at once, a few hundred tries give dozens
        _, _, stderr = watch(netdrop, node, lambda: CASES["dns-race"].play(node, 3))
        gained = ct_stats(str(NETNS_DIR / node.node1))["clash_resolve"] - before
        if gained:
            break
    else:
        pytest.fail("no conntrack clash in 3 rounds of 300 racing query pairs")
    m = re.search(r"notice: netns (\S+): conntrack resolved insert races \(clash_resolve \+(\d+)\)", stderr)
    assert m and m.group(1) == node.node1
    assert 0 < int(m.group(2)) <= gained
    assert "5-second DNS timeouts" in stderr


def test_a_pods_own_unusual_ruleset_is_read(netdrop, node):
    """A pod with NET_ADMIN writes its own rules: a named counter, a raw payload
    match, a comment with quotes, a backslash and a byte that is not UTF-8. netdrop
    keeps running and names the rule that dropped packets to the pod."""
    web = node.pods["web"]
    nft = ["add table inet podfw",
           "add counter inet podfw named",
           "add chain inet podfw inp { type filter hook input priority 0; policy accept; }",
           "add rule inet podfw inp udp dport 5357 counter name named drop",
           "add rule inet podfw inp @nh,72,8 17 udp dport 5358 counter drop"]
    weird = "we\"ird \\ quote " + os.fsdecode(b"\xff")
    ipt = ("-p", "udp", "--dport", "5359", "-m", "comment", "--comment", weird, "-j", "DROP")
    try:
        for cmd in nft:
            run("nft", cmd, ns=web.netns)
        run("iptables", "-A", "INPUT", *ipt, ns=web.netns)

        def play():
            ports = (5357, 5358, 5359)
            for port in ports:       # netfilter drops there: netdrop reads this namespace's rules
                node.traffic(node.client, "udp", "--dst", web.ipv4, "--port", str(port), "--count", "1")
            time.sleep(2.5)
            for port in ports:
                node.traffic(node.client, "udp", "--dst", web.ipv4, "--port", str(port), "--count", str(N))
        _, records, stderr = watch(netdrop, node, play)
    finally:
        run("nft", "delete table inet podfw", ns=web.netns, check=False)
        run("iptables", "-D", "INPUT", *ipt, ns=web.netns, check=False)
    assert "Traceback" not in stderr
    later = {p: [r for r in records if r["dport"] == p][1:] for p in (5357, 5358, 5359)}
    assert all(len(v) == N for v in later.values()), {p: len(v) for p, v in later.items()}
    for port in (5357, 5358):
        for r in later[port]:
            assert r["direction"] == "in-pod" and r["detail"]["by"] == "rule", r
            assert (r["detail"]["table"], r["detail"]["chain"]) == ("podfw", "inp") and str(port) in r["detail"]["rule"]
    for r in later[5359]:
        assert r["detail"]["backend"] == "iptables-nft" and "--dport 5359" in r["detail"]["rule"], r
