"""doctor's report into a pipe at 80 and 120 columns: a block per finding, each command whole on one line."""

import io

import pytest
from rich.cells import cell_len

from tracer.doctor import view
from tracer.doctor.findings import Cmd, Finding, fix
from tracer.doctor.node import Node
from tracer.env import Environment

STALE = [f"/var/lib/cni/networks/cbr0/10.244.1.{i}" for i in range(70, 75)]

# Findings as the checks write them, the fixes the issue found broken at 80 columns among them.
FINDINGS = [
    Finding("rp_filter", "ok", "no strict rp_filter (all=0)"),
    Finding("kube-proxy", "warning", "no kube-proxy rules (no KUBE-SERVICES chain, no kube-ipvs0, no kube-proxy nft "
            "table): Services do not work on this node unless a replacement handles them",
            ["iptables-save -t nat: no KUBE-SERVICES"],
            *fix("check that kube-proxy runs on this node (",
                 Cmd("kubectl -n kube-system get pods -o wide | grep kube-proxy"), ")")),
    Finding("ip_forward", "error", "node1: net.ipv4.ip_forward=0: the node forwards no pod traffic",
            ["net.ipv4.ip_forward = 0"], *fix(Cmd("sysctl -w net.ipv4.ip_forward=1"))),
    Finding("mtu", "error", "1 pod with eth0 MTU 1500, larger than overlay flannel.1 (1450): packets of 1451-1500 "
            "bytes with DF set are dropped (PKT_TOO_BIG at ip_forward); the largest packet that passes is 1450 bytes",
            ["default/web-7d9f8c6b5-x2x9k: pod eth0 1500 -> host veth1a2b3c4d 1450 -> bridge cni0 1450 -> overlay "
             "flannel.1 1450"],
            *fix("set the CNI's MTU to 1450 (for one pod: ", Cmd("ip link set eth0 mtu 1450"), " in its namespace)")),
    Finding("pod ipv6", "warning", "IPv6 is disabled in 1 pod behind dual-stack Services: the IPv6 the Services send "
            "them is dropped there (IPV6DISABLED at ip6_rcv_core)", ["default/db-0: eth0 disable_ipv6=1"],
            *fix("enable IPv6 in the pod (net.ipv6.conf.eth0.disable_ipv6=0: the pod's or the runtime's sysctls); "
                 "or, if the Service needs no IPv6, make it SingleStack (it keeps its IPv4 clusterIP): ",
                 Cmd("""kubectl -n default patch service db-svc -p '{"spec":{"ipFamilyPolicy":"SingleStack"}}'"""))),
    Finding("ipam", "warning", "5 of 9 IPAM reservations in network cbr0 belong to no live pod (dead sandboxes)",
            [f"{ip} held by container 0123456789ab" for ip in STALE],
            *fix("after checking the containers are gone: ", Cmd("rm " + " ".join(STALE)))),
    Finding("bridge ports", "error", "1 bridge port up but not forwarding: every frame they receive is dropped",
            ["veth1 of cni0: blocking"],
            *fix("a pod bridge needs no STP: ", Cmd("ip link set cni0 type bridge stp_state 0"), "; or ",
                 Cmd("bridge link set dev veth1 state 3"))),
    Finding("forward", "info", "rule 3 of FORWARD drops forwarded packets (0 so far)", ["filter FORWARD 3"],
            "check that this rule should match pod traffic"),
    Finding("kernel: lockdown", "unchecked", "securityfs is not mounted: lockdown mode unknown", [],
            *fix(Cmd("mount -t securityfs securityfs /sys/kernel/security"))),
]


def report(width: int | None, findings=FINDINGS, **env) -> list[str]:
    out = io.StringIO()
    view.write(Environment(stdout=out, columns=width, **env), findings, Node(None, "node1"))
    return out.getvalue().splitlines()


@pytest.mark.parametrize("width", [80, 120])
def test_every_command_whole_on_one_line_and_no_line_past_the_width(width):
    lines = report(width)
    commands = [c for f in FINDINGS for c in f.commands]
    assert len(commands) == 8
    for cmd in commands:
        assert any(cmd in line for line in lines), cmd
    # Past the width only a command longer than the fix's lines: on a line of its own, whole.
    room = width - len(view.FIX)
    too_long = [" " * len(view.FIX) + c for c in commands if cell_len(c) > room]
    assert [line for line in lines if cell_len(line) > width] == too_long
    assert len(too_long) == (2 if width == 80 else 1)      # the rm of 5 paths (+ kubectl patch at 80)
    assert "\x1b" not in "".join(lines)     # a pipe gets no colour


def test_a_finding_is_a_block_severity_and_check_then_evidence_then_fix():
    lines = report(80)
    assert lines[0] == "netdrop doctor: node1"
    start = next(i for i, line in enumerate(lines) if line.startswith("warning   kube-proxy — "))
    block = lines[start:lines.index("", start)]
    assert block == [
        "warning   kube-proxy — no kube-proxy rules (no KUBE-SERVICES chain, no",
        "          kube-ipvs0, no kube-proxy nft table): Services do not work on this",
        "          node unless a replacement handles them",
        "          · iptables-save -t nat: no KUBE-SERVICES",
        "          fix: check that kube-proxy runs on this node",
        "               (kubectl -n kube-system get pods -o wide | grep kube-proxy)"]
    # Worst first; one-line findings without a blank line between them.
    severities = [line.split()[0] for line in lines[1:] if line and not line.startswith(" ")]
    assert severities == ["error"] * 3 + ["warning"] * 3 + ["info", "ok", "unchecked"]


def test_a_pipe_takes_columns_or_80_and_a_terminal_its_width():
    assert max(map(cell_len, report(None, findings=FINDINGS[:4]))) <= 80
    assert max(map(cell_len, report(100, findings=FINDINGS[:4]))) > 80
    env = Environment(stdout=io.StringIO(), stdout_tty=True, width=132, columns=None)
    assert env.report_width() == 132 and Environment(stdout=io.StringIO(), columns=None).report_width() == 80


def test_node_text_reaches_the_pipe_escaped_and_commands_still_whole():
    evil = "veth\x1b]0;x\x07"
    f = Finding("neighbours", "warning", f"{evil}: one MAC answers for 10.0.0.1, 10.0.0.2", [f"10.0.0.2 dev {evil}"],
                *fix(Cmd(f"ip neigh del 10.0.0.2 dev {evil}")))
    text = "\n".join(report(80, findings=[f]))
    assert "\x1b" not in text and "ip neigh del 10.0.0.2 dev veth\\x1b]0;x\\x07" in text


def test_json_lists_each_fix_command():
    out = view.to_json(FINDINGS[1:3], Node(None, "node1"))
    assert '"commands": [\n        "kubectl -n kube-system get pods -o wide | grep kube-proxy"\n      ]' in out
    assert all(c in f.fix for f in FINDINGS if f.fix for c in f.commands)
