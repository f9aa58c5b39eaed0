"""netdrop doctor on a simulated node: healthy, then one misconfiguration at a time."""

import json
import os
import subprocess
import time

import pytest

from tracer.explain.explainer import ct_stats
from tracer.lab import api as labapi
from tracer.lab.cases import CASES
from tracer.lab.node import SimNode
from tracer.lab.ownership import NETNS_DIR
from tracer.lab.shell import in_netns, run
from tracer.lab.topology import OVERLAY_MTU

from .. import bpftest
from ..conftest import NETDROP


@pytest.fixture(scope="module")
def healthy():
    sim = SimNode.create(prefix=f"ndh{os.getpid()}", healthy=True)
    try:
        yield sim
    finally:
        sim.destroy()


def doctor(node, *extra):
    res = subprocess.run([*NETDROP, "doctor", "--netns", node.node1, "--kubeconfig", str(node.kubeconfig),
                          "--cni-dir", str(node.ipam_dir), "--json", *extra], capture_output=True, text=True,
                         timeout=120)
    assert "Traceback" not in res.stderr, res.stderr
    out = json.loads(res.stdout)
    return res.returncode, out["findings"]


def problems(findings, check=None):
    return [f for f in findings if f["severity"] in ("error", "warning") and (check is None or f["check"] == check)]


def test_healthy_node_has_no_problem(healthy):
    rc, findings = doctor(healthy)
    assert problems(findings) == [] and rc == 0
    checks = {f["check"] for f in findings}
    assert {"ip_forward", "bridge-nf-call-iptables", "rp_filter", "forward", "mtu", "conntrack: table",
            "kube-proxy", "hairpin", "node addresses", "neighbours", "ipam", "kernel: BTF", "pod routes"} <= checks
    routes = next(f for f in findings if f["check"] == "pod routes")
    assert routes["severity"] == "ok" and len(routes["evidence"]) == 2       # node2 and node3
    mtu = next(f for f in findings if f["check"] == "mtu")
    assert mtu["severity"] == "ok" and len(mtu["evidence"]) == 3       # web, db, cache: not client or node2


def misconfigured(node, do, undo):
    do()
    try:
        return doctor(node)
    finally:
        undo()


def sysctl(node, setting):
    return lambda: run("sysctl", "-qw", setting, ns=node.node1)


@pytest.mark.parametrize("setting,restore,check,severity,words", [
    ("net.ipv4.ip_forward=0", "net.ipv4.ip_forward=1", "ip_forward", "error", "forwards no pod traffic"),
    ("net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-iptables=1", "bridge-nf-call-iptables",
     "warning", "not translated back"),
    ("net.ipv4.conf.eth0.rp_filter=1", "net.ipv4.conf.eth0.rp_filter=0", "rp_filter", "warning", "strict"),
])
def test_sysctls(healthy, setting, restore, check, severity, words):
    rc, findings = misconfigured(healthy, sysctl(healthy, setting), sysctl(healthy, restore))
    found = problems(findings, check)
    assert rc == 1 and len(found) == 1 and found[0]["severity"] == severity and words in found[0]["summary"]
    assert found[0]["fix"].startswith("sysctl -w")
    assert problems(findings) == found


def test_forward_policy_drop(healthy):
    rc, findings = misconfigured(healthy, lambda: run("iptables", "-P", "FORWARD", "DROP", ns=healthy.node1),
                                 lambda: run("iptables", "-P", "FORWARD", "ACCEPT", ns=healthy.node1))
    found = problems(findings, "forward")
    assert rc == 1 and len(found) == 1 and "FORWARD chain's policy DROP" in found[0]["summary"]
    assert found[0]["fix"].startswith("iptables -P FORWARD ACCEPT")


def test_pod_mtu_larger_than_the_overlay(healthy):
    web = healthy.pods["web"]
    rc, findings = misconfigured(
        healthy, lambda: run("ip", "link", "set", "eth0", "mtu", "1500", ns=web.netns),
        lambda: run("ip", "link", "set", "eth0", "mtu", str(OVERLAY_MTU), ns=web.netns))
    found = problems(findings, "mtu")
    assert rc == 1 and len(found) == 1 and found[0]["severity"] == "error"
    assert "eth0 MTU 1500, larger than" in found[0]["summary"]
    assert "largest packet that passes is 1450 bytes" in found[0]["summary"]
    assert found[0]["evidence"] == [f"default/{web.name}: pod eth0 1500 -> host {web.host_veth} 1450 -> "
                                    "bridge cni0 1450 -> overlay flannel.1 1450"]


def test_overlay_mtu_larger_than_its_underlay(healthy):
    # The kernel refuses a VXLAN MTU too big for its device, but not a device MTU lowered later.
    rc, findings = misconfigured(healthy, lambda: run("ip", "link", "set", "eth0", "mtu", "1400",
                                                          ns=healthy.node1),
                                 lambda: run("ip", "link", "set", "eth0", "mtu", "1500", ns=healthy.node1))
    found = [f for f in problems(findings, "mtu") if "underlay" in f["summary"]]
    assert rc == 1 and found and "eth0 MTU 1400 - 50 bytes of encapsulation = 1350" in found[0]["summary"]
    assert found[0]["fix"] == "ip link set flannel.1 mtu 1350"


def test_one_pod_with_pod_option(healthy):
    web = healthy.pods["web"]
    rc, findings = doctor(healthy, "--pod", web.name)
    mtu = [f for f in findings if f["check"] == "mtu"]
    assert len(mtu) == 1 and mtu[0]["evidence"] == [f"default/{web.name}: largest packet 1450"]


def test_stale_ipam_reservations(healthy):
    net = healthy.ipam_dir / "cbr0"
    # host-local (the CNI plugins, when installed) reserves IPv6 addresses too: count what is there.
    held = sum(1 for p in net.iterdir() if p.name[:1].isdigit() or ":" in p.name)
    stale = [net / "10.244.1.77", net / "10.244.1.78"]
    rc, findings = misconfigured(healthy, lambda: [p.write_text("0123456789abcdef\neth0") for p in stale],
                                 lambda: [p.unlink() for p in stale])
    found = problems(findings, "ipam")
    assert rc == 1 and f"2 of {held + 2} IPAM reservations in network cbr0" in found[0]["summary"]
    assert "10.244.1.77 held by container 0123456789ab" in found[0]["evidence"]


def test_kube_proxy_missing(healthy):
    saved = run("iptables-save", ns=healthy.node1)

    def remove():
        for table in ("filter", "nat"):
            run("iptables", "-t", table, "-F", ns=healthy.node1)
            run("iptables", "-t", table, "-X", ns=healthy.node1)

    def restore():
        subprocess.run([*in_netns(healthy.node1), "iptables-restore"], input=saved, text=True, check=True)
    rc, findings = misconfigured(healthy, remove, restore)
    found = problems(findings, "kube-proxy")
    assert rc == 1 and "no kube-proxy rules" in found[0]["summary"]


def test_hairpin_off(healthy):
    veth = healthy.pods["db"].host_veth
    set_hp = lambda v: lambda: run("ip", "link", "set", veth, "type", "bridge_slave", "hairpin", v,  # noqa: E731
                                       ns=healthy.node1)
    rc, findings = misconfigured(healthy, set_hp("off"), set_hp("on"))
    found = problems(findings, "hairpin")
    assert rc == 1 and found[0]["evidence"] == [veth] and "hairpin on" in found[0]["fix"]


def test_static_plus_dhcp_address(healthy):
    add = lambda: run("ip", "addr", "add", "192.168.100.11/24", "dev", "eth0", "valid_lft", "3600",  # noqa: E731
                          "preferred_lft", "3600", ns=healthy.node1)
    rc, findings = misconfigured(healthy, add, lambda: run("ip", "addr", "del", "192.168.100.11/24", "dev",
                                                               "eth0", ns=healthy.node1))
    found = problems(findings, "node addresses")
    assert rc == 1 and "eth0 has 2 IPv4 addresses from static and DHCP configuration" in found[0]["summary"]
    assert found[0]["evidence"] == ["192.168.100.1/24 (static)", "192.168.100.11/24 (dynamic, DHCP)"]


def test_failed_and_conflicting_neighbours(healthy):
    def break_arp():
        # Nobody has .99: ARP fails. Two addresses on one MAC: a wrong entry (the seed's case).
        subprocess.run([*in_netns(healthy.node1), "ping", "-c1", "-W1", "192.168.100.99"], capture_output=True)
        for ip in ("192.168.100.2", "192.168.100.3"):
            run("ip", "neigh", "replace", ip, "lladdr", "0e:00:00:00:02:99", "dev", "eth0", "nud", "permanent",
                    ns=healthy.node1)

    def repair():
        for ip in ("192.168.100.99", "192.168.100.2", "192.168.100.3"):
            run("ip", "neigh", "del", ip, "dev", "eth0", ns=healthy.node1, check=False)
    deadline = time.monotonic() + 10
    while True:          # INCOMPLETE becomes FAILED after the ARP retries (about 3 s)
        rc, findings = misconfigured(healthy, break_arp, repair)
        found = problems(findings, "neighbours")
        if len(found) == 2 or time.monotonic() > deadline:
            break
    failed = next(f for f in found if "never resolved" in f["summary"])
    assert "192.168.100.99 dev eth0" in failed["evidence"][0]
    shared = next(f for f in found if "one MAC" in f["summary"])
    assert "192.168.100.2, 192.168.100.3" in shared["summary"]


def test_conntrack_races_are_reported(healthy):
    before = ct_stats(str(NETNS_DIR / healthy.node1))["clash_resolve"]
    for _ in range(3):
        CASES["dns-race"].play(healthy, 3)
        now = ct_stats(str(NETNS_DIR / healthy.node1))["clash_resolve"]
        if now > before:
            break
    rc, findings = doctor(healthy)
    found = next(f for f in findings if f["check"] == "conntrack: clash_resolve")
    assert found["severity"] == "info" and f"clash_resolve = {now}" in found["summary"]


def test_unknown_netns_is_one_line():
    res = subprocess.run([*NETDROP, "doctor", "--netns", "no-such-node"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "unknown network namespace" in res.stderr


def test_missing_route_to_another_nodes_pod_cidr(node):
    # The default lab is the seed's node: no route to node3's pod CIDR.
    rc, findings = doctor(node)
    found = problems(findings, "pod routes")
    assert rc == 1 and found[0]["severity"] == "error" and found[0]["evidence"] == ["sim-node3 10.244.3.0/24"]
    assert "ip route add 10.244.3.0/24" in found[0]["fix"]


def test_ipam_files_that_are_no_files_do_not_hang_doctor(healthy):
    # The CNI's state directory is writable by others than netdrop: a FIFO named like an
    # address would block a plain read forever, a link would read any file.
    net = healthy.ipam_dir / "cbr0"
    fifo, link = net / "10.244.1.98", net / "10.244.1.99"
    os.mkfifo(fifo)
    link.symlink_to("/etc/shadow")
    try:
        rc, findings = doctor(healthy)
    finally:
        fifo.unlink()
        link.unlink()
    ipam = problems(findings, "ipam")
    assert rc == 1 and len(ipam) == 1
    assert "10.244.1.98 held by container ?" in ipam[0]["evidence"]
    assert "10.244.1.99 held by container ?" in ipam[0]["evidence"]


# -- Standing states that drop packets --

def test_bridge_port_not_forwarding_and_stp(healthy):
    ns = healthy.node1

    def stp_on():
        # STP on cni0 and a new port: it listens (forward_delay) before it forwards, as a new pod's would.
        run("ip", "link", "set", "cni0", "type", "bridge", "stp_state", "1", "forward_delay", "2000", ns=ns)
        run("ip", "link", "add", "ndstp0", "type", "veth", "peer", "name", "ndstp1", ns=ns)
        run("ip", "link", "set", "ndstp0", "master", "cni0", ns=ns)
        for dev in ("ndstp0", "ndstp1"):
            run("ip", "link", "set", dev, "up", ns=ns)
        deadline = time.monotonic() + 5
        while "state listening" not in run("ip", "-d", "link", "show", "ndstp0", ns=ns):
            assert time.monotonic() < deadline
            time.sleep(0.05)

    def stp_off():
        run("ip", "link", "del", "ndstp0", ns=ns, check=False)
        run("ip", "link", "set", "cni0", "type", "bridge", "stp_state", "0", ns=ns)
    rc, findings = misconfigured(healthy, stp_on, stp_off)
    ports, stp = problems(findings, "bridge ports"), problems(findings, "bridge stp")
    assert rc == 1 and len(ports) == 1 and ports[0]["severity"] == "error"
    assert ports[0]["evidence"] == ["ndstp0 of cni0: listening"] and "BRIDGE_INGRESS_STP_STATE" in ports[0]["summary"]
    assert len(stp) == 1 and "cni0" in stp[0]["summary"] and stp[0]["fix"] == "ip link set cni0 type bridge stp_state 0"
    # Healthy again: every port forwards.
    rc, findings = doctor(healthy)
    assert problems(findings, "bridge ports") == [] and problems(findings, "bridge stp") == []


def test_ipsec_policy_without_its_state(healthy):
    policy = ("src", "10.244.1.0/24", "dst", "10.244.9.0/24", "dir", "out")    # a network no traffic goes to
    add = lambda: run("ip", "xfrm", "policy", "add", *policy, "tmpl", "src", "192.168.100.1", "dst",  # noqa: E731
                          "192.168.100.9", "proto", "esp", "mode", "tunnel", ns=healthy.node1)
    rc, findings = misconfigured(healthy, add, lambda: run("ip", "xfrm", "policy", "delete", *policy,
                                                               ns=healthy.node1))
    found = problems(findings, "ipsec")
    assert rc == 1 and len(found) == 1 and "1 IPsec policy and no IPsec state" in found[0]["summary"]
    assert "out: 1" in found[0]["evidence"] and "states: 0" in found[0]["evidence"]


def test_vxlan_device_that_sends_nowhere(healthy):
    ns = healthy.node1
    add = lambda: (run("ip", "link", "add", "ndvx0", "type", "vxlan", "id", "77", "dstport", "4789",  # noqa: E731
                           "nolearning", ns=ns), run("ip", "link", "set", "ndvx0", "up", ns=ns))
    rc, findings = misconfigured(healthy, add, lambda: run("ip", "link", "del", "ndvx0", ns=ns, check=False))
    found = problems(findings, "overlay")
    assert rc == 1 and len(found) == 1 and "NO_TX_TARGET" in found[0]["summary"]
    assert found[0]["evidence"] == ["ndvx0: VNI 77, UDP port 4789, underlay -, remote -, 0 FDB entries"]
    # The lab's own flannel.1 (VNI 1, port 8472, node2's VTEP in its FDB) is listed for comparison.
    listed = next(f for f in findings if f["check"] == "overlay" and f["severity"] == "info")
    assert listed["evidence"][0].startswith("flannel.1: VNI 1, UDP port 8472")


def test_overlay_vni_other_nodes_announce(healthy):
    from tracer.doctor.links import check_overlay, flannel_vnis
    from tracer.doctor.node import Node
    node = Node(str(NETNS_DIR / healthy.node1), healthy.node1)
    nodes = [{"metadata": {"name": "sim-node2", "annotations": {
        "flannel.alpha.coreos.com/backend-data": '{"VNI":2,"VtepMAC":"0e:00:00:00:02:01"}'}}},
        {"metadata": {"name": "sim-node3", "annotations": {
            "flannel.alpha.coreos.com/backend-data": '{"VNI":1,"VtepMAC":"0e:00:00:00:03:01"}'}}}]
    found = check_overlay(node, flannel_vnis(nodes))
    assert [f.severity for f in found] == ["error", "info"] and "VXLAN_VNI_NOT_FOUND" in found[0].summary
    assert found[0].evidence[0] == "sim-node2: VNI 2"
    assert [f.severity for f in check_overlay(node, flannel_vnis(nodes[1:]))] == ["info"]


def test_bpf_program_on_a_cgroup_is_listed(healthy):
    prog = bpftest.program("deny_egress", 1)        # attached, passes every packet
    try:
        with bpftest.cgroup("netdrop-doctor") as cg, bpftest.attached_to_cgroup(prog, "deny_egress", cg):
            rc, findings = doctor(healthy)
    finally:
        prog.cleanup()
    found = next(f for f in findings if f["check"] == "cgroup bpf")
    assert found["severity"] == "info"
    assert any("cgroup_inet_egress program 'deny_egress'" in e and f"netdrop-doctor-{os.getpid()}" in e
               for e in found["evidence"])


def test_ipv6_disabled_in_a_pod_behind_a_dual_stack_service(healthy):
    """db with disable_ipv6=1 on eth0: a dual-stack Service selecting it (read from the API)
    is a warning naming the Service; a SingleStack one is not; without the API, the
    node-level warning says the Services were not read."""
    db, api = healthy.pods["db"], healthy.api
    saved_addrs = [a for a in json.loads(run("ip", "-6", "-j", "addr", "show", "dev", "eth0", ns=db.netns))[0]
                   ["addr_info"] if a.get("scope") == "global"]
    saved_routes = run("ip", "-6", "route", "show", ns=db.netns).splitlines()

    def restore():
        # disable_ipv6 took the pod's IPv6 addresses and routes with it: put them back.
        run("sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0", ns=db.netns)
        for a in saved_addrs:
            run("ip", "addr", "replace", f"{a['local']}/{a['prefixlen']}", "dev", "eth0", "nodad", ns=db.netns)
        for r in saved_routes:
            run("ip", "-6", "route", "replace", *r.split(), ns=db.netns, check=False)
        for name in ("db-dual", "db-single"):
            api.delete_service("default", name)

    def no_api():
        res = subprocess.run([*NETDROP, "doctor", "--netns", healthy.node1, "--cni-dir", str(healthy.ipam_dir),
                              "--json"], capture_output=True, text=True, timeout=120)
        assert "Traceback" not in res.stderr, res.stderr
        return res.returncode, json.loads(res.stdout)["findings"]

    sysctl_in(db.netns, "net.ipv6.conf.eth0.disable_ipv6=1")()
    try:
        api.put_service(labapi.service_object("db-single", "default", {"app": "db"}, cluster_ips=["10.96.0.20"]))
        rc, findings = doctor(healthy)
        # (db's IPv6 reservation is stale for the ipam check meanwhile: disable_ipv6 took the address)
        assert problems(findings, "pod ipv6") == []
        [info] = [f for f in findings if f["check"] == "pod ipv6"]
        assert info["severity"] == "info" and info["evidence"] == [
            f"default/{db.name}: eth0 disable_ipv6=1; no IPv6 Service selects it"]

        api.put_service(labapi.service_object("db-dual", "default", {"app": "db"}, ip_family_policy="RequireDualStack",
                                              cluster_ips=["10.96.0.21", "fd00:96::21"]))
        rc, findings = doctor(healthy)
        found = problems(findings, "pod ipv6")
        assert rc == 1 and len(found) == 1 and "IPV6DISABLED" in found[0]["summary"]
        assert found[0]["evidence"] == [f"default/{db.name}: eth0 disable_ipv6=1; behind dual-stack Service "
                                        "default/db-dual (RequireDualStack)"]
        assert found[0]["fix"].endswith("kubectl -n default patch service db-dual -p "
                                        """'{"spec":{"ipFamilyPolicy":"SingleStack"}}'""")

        rc, findings = no_api()
        found = problems(findings, "pod ipv6")
        assert rc == 1 and len(found) == 1 and "Services not read" in found[0]["summary"]
        assert found[0]["evidence"] == [f"sandbox {db.netns}: eth0 disable_ipv6=1"]
    finally:
        restore()
    assert db.ipv6 in run("ip", "-6", "addr", "show", "dev", "eth0", ns=db.netns)
    rc, findings = doctor(healthy)
    assert [f["severity"] for f in findings if f["check"] == "pod ipv6"] == ["ok"]


def sysctl_in(ns, setting):
    return lambda: run("sysctl", "-qw", setting, ns=ns)


def test_vni_mismatch_across_nodes(healthy):
    """Another node's flannel announces VNI 2 (its annotation, read from the API):
    node1's flannel.1 has VNI 1, so their overlay packets would be dropped here."""
    api = healthy.api
    before = dict(api.nodes["sim-node2"])
    changed = json.loads(json.dumps(before))
    changed["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"] = json.dumps(
        {"VNI": 2, "VtepMAC": "02:00:00:00:00:02"})
    rc, findings = misconfigured(healthy, lambda: api.add_node(changed), lambda: api.add_node(before))
    found = [f for f in problems(findings, "overlay") if "announce a VNI" in f["summary"]]
    assert rc == 1 and found, findings
    assert "sim-node2: VNI 2" in found[0]["evidence"]
    # The same VNI everywhere (the lab as made): no overlay problem.
    rc, findings = doctor(healthy)
    assert problems(findings, "overlay") == [] and rc == 0


def test_doctor_says_which_function_hooks_the_node_allows(healthy):
    """Our kernel has no kprobes and refuses fentry: each conntrack hook is named
    with why it cannot attach (the tracepoints still work: no problem counted)."""
    rc, findings = doctor(healthy)
    hooks = {f["check"]: f for f in findings if f["check"].startswith("hook: ")}
    assert {"hook: kretprobe __nf_conntrack_confirm", "hook: kretprobe __nf_conntrack_alloc"} <= hooks.keys()
    for f in hooks.values():
        assert f["severity"] == "info" and "cannot attach here" in f["summary"] and "CONFIG_KPROBES" in f["summary"]
    assert rc == 0
    kernel = {f["check"]: f for f in findings if f["check"] in ("kernel: ring buffer", "kernel: tracepoints")}
    assert kernel["kernel: ring buffer"]["severity"] == "ok"
    assert kernel["kernel: tracepoints"]["severity"] == "ok" and "(tp_btf)" in kernel["kernel: tracepoints"]["summary"]
    # watch names the same hooks in the same form, for the same reasons
    res = subprocess.run([*NETDROP, "watch", "--json", "--duration", "1"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for name, f in hooks.items():
        assert f"{name.removeprefix('hook: ')}: {f['summary'].split('cannot attach here: ')[1]}" in res.stderr


@pytest.mark.parametrize("columns", [80, 120])
def test_the_report_into_a_pipe_keeps_every_fix_command_whole(healthy, columns):
    """What a ticket gets: `netdrop doctor | cat` at $COLUMNS, each command on one line as
    --json names it, and no line past the width but a command longer than it."""
    db = healthy.pods["db"].host_veth
    saved = run("iptables-save", "-t", "nat", ns=healthy.node1)
    breaks = [(("sysctl", "-qw", "net.ipv4.ip_forward=0"), ("sysctl", "-qw", "net.ipv4.ip_forward=1")),
              (("ip", "link", "set", db, "type", "bridge_slave", "hairpin", "off"),
               ("ip", "link", "set", db, "type", "bridge_slave", "hairpin", "on")),
              (("iptables", "-t", "nat", "-F"), None)]
    try:
        for do, _ in breaks:
            run(*do, ns=healthy.node1)
        run("iptables", "-t", "nat", "-X", ns=healthy.node1)
        _, findings = doctor(healthy)
        res = subprocess.run([*NETDROP, "doctor", "--netns", healthy.node1, "--kubeconfig", str(healthy.kubeconfig),
                              "--cni-dir", str(healthy.ipam_dir)], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "COLUMNS": str(columns)})
    finally:
        for _, undo in breaks:
            if undo:
                run(*undo, ns=healthy.node1)
        subprocess.run([*in_netns(healthy.node1), "iptables-restore"], input=saved, text=True, check=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    lines = res.stdout.splitlines()
    commands = [c for f in problems(findings) for c in f["commands"]]
    assert {"sysctl -w net.ipv4.ip_forward=1", f"ip link set {db} type bridge_slave hairpin on",
            "kubectl -n kube-system get pods -o wide | grep kube-proxy"} <= set(commands)
    for cmd in commands:
        assert any(cmd in line for line in lines), (cmd, res.stdout)
    for line in lines:
        assert len(line) <= columns or line.strip() in commands, line
    assert "\x1b" not in res.stdout
    head = next(i for i, line in enumerate(lines) if line.startswith("error     ip_forward — "))
    assert lines[head:lines.index("", head)][-2:] == ["          · net.ipv4.ip_forward = 0",
                                                      "          fix: sysctl -w net.ipv4.ip_forward=1"]
