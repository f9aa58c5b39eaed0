"""topology: the simulated node's network, as ip, bridge and iptables make it.

    client ──ext0── node1 ──eth0 (underlay 192.168.100.0/24)── node2
                    │ cni0 10.244.1.1/24                        │ cni0 10.244.2.1/24
                    │ flannel.1 (VXLAN, MTU 1450) ═════════════ │ flannel.1
                    ├─ veth… ── pod web 10.244.1.10             └─ veth… ── pod api 10.244.2.10
                    ├─ veth… ── pod db  10.244.1.11
                    └─ veth… ── pod cache 10.244.1.13 (sandbox held by a process, no name)

The pods keep the default MTU 1500 while the overlay has 1450: the classic
flannel misconfiguration. node1 has no route to 10.244.3.0/24 (a third node
whose route is missing). node-exporter is a hostNetwork pod on node1 declaring
port 9100. Every command runs inside the lab's own namespaces (`ip -n`,
`ip netns exec`): the host's namespace is never touched.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .shell import run

OVERLAY_MTU = 1450
POD_MTU = 1500
VXLAN_PORT = 8472
POD_IFNAME = "eth0"        # the pod's end of its veth, as CNI_IFNAME names it

CLIENT_V4 = "172.16.200.2"
CLIENT_V6 = "fd00:200::2"
NODE1_EXT = "172.16.200.1"
UNROUTED_POD = "10.244.3.10"   # a pod on a third node whose route node1 lacks
HOSTNET_PORT = 9100

SVC_DB = ("10.96.0.20", 8080)            # -> db:8080
SVC_DNS = ("10.96.0.10", 53)             # -> db:53 or cache:53, at random
SVC_EMPTY = ("10.96.0.30", 80)           # no endpoints: REJECT
SVC_EMPTY_COMMENT = "default/empty:http has no endpoints"


@dataclass(frozen=True)
class Pod:
    name: str            # Kubernetes name, e.g. web-7d9f8c6b5-x2k4q
    namespace: str       # Kubernetes namespace
    netns: str           # CNI-style network namespace name (<prefix>-cni-<uuid>); the node's for hostNetwork
    node: str            # netns name of its node
    ipv4: str
    ipv6: str | None
    host_veth: str | None  # the veth's name in the node namespace
    host_network: bool = False
    container_id: str | None = None   # the sandbox's id, as CNI_CONTAINERID and in its IPAM reservations


# role -> (Kubernetes name, namespace, node index, host part of the IPs, labels)
POD_SPECS = {
    "web": ("web-7d9f8c6b5-x2k4q", "default", 1, 10, {"app": "web", "pod-template-hash": "7d9f8c6b5"}),
    "db": ("db-0", "default", 1, 11, {"app": "db"}),
    "cache": ("cache-6f8b9c7d4-q2w3e", "default", 1, 13, {"app": "cache"}),
    "api": ("api-5c6d7b9f4-m8n2p", "shop", 2, 10, {"app": "api"}),
}
# Like Docker's, cache's sandbox has no /run/netns name: only a process holds it.
UNNAMED_PODS = {"cache"}
NODE_NAMES = {1: "sim-node1", 2: "sim-node2"}


def pod_addresses(i: int, host: int) -> tuple[str, str]:
    """The IPv4 and IPv6 address of pod `host` on node i."""
    return f"10.244.{i}.{host}", f"fd00:10:244:{i}::{host:x}"


def setup_netns(ns: str) -> None:
    """A namespace just made, before anything is put in it."""
    run("ip", "-n", ns, "link", "set", "lo", "up")
    # One ICMP error per dropped packet, as tests count them: the per-host
    # limit (icmp_ratelimit, per namespace; icmpv4_xrlim_allow()) would hold
    # back errors after a burst of six, and which ones depends on earlier tests.
    # No duplicate address detection: the lab's addresses are unique by construction, and an
    # address in DAD is tentative for a second (addrconf_dad_begin(), net/ipv6/addrconf.c),
    # which the bridge plugin waits out for each pod's address and for the bridge's.
    run("sysctl", "-qw", "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0",
        "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0", ns=ns)


def add_addresses(ns: str, dev: str, *addrs: str) -> None:
    for a in addrs:
        extra = ["nodad"] if ":" in a else []
        run("ip", "-n", ns, "addr", "add", a, "dev", dev, *extra)
    run("ip", "-n", ns, "link", "set", dev, "up")


def bridge_mac(i: int) -> str:
    # A fixed address, as newer bridge plugins set one: a bridge otherwise takes
    # its lowest port's MAC (br_stp_recalculate_bridge_id(), net/bridge/br_stp_if.c),
    # which changes when a pod goes, and the other pods' cached gateway address goes stale.
    return f"0e:00:00:00:{i:02x}:02"


def vtep_mac(i: int) -> str:
    return f"0e:00:00:00:{i:02x}:01"


def underlay(node1: str, node2: str, client: str) -> None:
    """The link between the nodes and the one to the outside client, addressed and routed."""
    run("ip", "-n", node1, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", node2)
    run("ip", "-n", node1, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", client)
    add_addresses(node1, "eth0", "192.168.100.1/24")
    add_addresses(node2, "eth0", "192.168.100.2/24")
    add_addresses(node1, "ext0", f"{NODE1_EXT}/24", "fd00:200::1/64")
    add_addresses(client, "eth0", f"{CLIENT_V4}/24", f"{CLIENT_V6}/64")
    run("ip", "-n", client, "route", "add", "10.244.0.0/16", "via", NODE1_EXT)
    run("ip", "-n", client, "-6", "route", "add", "fd00:10:244::/48", "via", "fd00:200::1")


def forwarding(ns: str) -> None:
    for key, val in (("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1")):
        run("sysctl", "-qw", f"{key}={val}", ns=ns)


def bridge(ns: str, i: int) -> None:
    """cni0 on node i, as the bridge plugin makes it with the node's first pod."""
    run("ip", "-n", ns, "link", "add", "cni0", "address", bridge_mac(i), "type", "bridge")
    add_addresses(ns, "cni0", f"10.244.{i}.1/24", f"fd00:10:244:{i}::1/64")


def vxlan(ns: str, i: int) -> None:
    # Like flannel's vxlan backend: one VTEP per node, static ARP and FDB entries.
    run("ip", "-n", ns, "link", "add", "flannel.1", "type", "vxlan", "id", "1",
        "local", f"192.168.100.{i}", "dev", "eth0", "dstport", str(VXLAN_PORT), "nolearning")
    run("ip", "-n", ns, "link", "set", "flannel.1", "address", vtep_mac(i), "mtu", str(OVERLAY_MTU))
    add_addresses(ns, "flannel.1", f"10.244.{i}.0/32")


def overlay_routes(node1: str, node2: str) -> None:
    for here, j in ((node1, 2), (node2, 1)):
        run("ip", "-n", here, "route", "add", f"10.244.{j}.0/24", "via", f"10.244.{j}.0",
            "dev", "flannel.1", "onlink")
        run("ip", "-n", here, "neigh", "add", f"10.244.{j}.0", "lladdr", vtep_mac(j),
            "dev", "flannel.1", "nud", "permanent")
        run("bridge", "-n", here, "fdb", "append", vtep_mac(j), "dev", "flannel.1",
            "dst", f"192.168.100.{j}")


def node3_route(node1: str) -> None:
    """The route to node3's pod CIDR that the misconfigured node lacks."""
    run("ip", "-n", node1, "route", "add", "10.244.3.0/24", "via", "10.244.3.0", "dev", "flannel.1", "onlink")


def client_return_route(node2: str) -> None:
    """node2 returns traffic for the client through node1."""
    run("ip", "-n", node2, "route", "add", "172.16.200.0/24", "via", "192.168.100.1")


def veth_by_hand(node: str, i: int, ns: str, v4: str, v6: str, mtu: int, hairpin: bool) -> str:
    """What the bridge plugin does for a pod (see cni.Plugins.add): a veth from
    node i's cni0 into ns, addressed and routed; returns the host veth's name."""
    veth = "veth" + secrets.token_hex(4)
    run("ip", "-n", node, "link", "add", veth, "mtu", str(mtu), "type", "veth", "peer", "name",
        POD_IFNAME, "netns", ns)
    run("ip", "-n", node, "link", "set", veth, "master", "cni0", "up")
    if hairpin:
        run("ip", "-n", node, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
    run("ip", "-n", ns, "link", "set", POD_IFNAME, "mtu", str(mtu))
    add_addresses(ns, POD_IFNAME, f"{v4}/24", f"{v6}/64")
    run("ip", "-n", ns, "route", "add", "default", "via", f"10.244.{i}.1")
    run("ip", "-n", ns, "-6", "route", "add", "default", "via", f"fd00:10:244:{i}::1")
    return veth


def kube_proxy(node1: str) -> None:
    """node1's iptables as kube-proxy (iptables mode) writes them, for three Services."""
    def ipt(*args: str) -> None:
        run("iptables", *args, ns=node1)

    # Service addresses need a route for the packets to reach FORWARD (a real node has a
    # default route); the outside client plays the upstream for them.
    run("ip", "-n", node1, "route", "add", "10.96.0.0/12", "via", CLIENT_V4)
    db, cache = POD_SPECS["db"][3], POD_SPECS["cache"][3]
    ipt("-N", "KUBE-FORWARD")
    ipt("-A", "KUBE-FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
    ipt("-N", "KUBE-SERVICES")
    ipt("-A", "KUBE-SERVICES", "-d", f"{SVC_EMPTY[0]}/32", "-p", "tcp", "--dport", str(SVC_EMPTY[1]),
        "-m", "comment", "--comment", SVC_EMPTY_COMMENT, "-j", "REJECT",
        "--reject-with", "icmp-port-unreachable")
    ipt("-A", "FORWARD", "-m", "comment", "--comment", "kubernetes forwarding rules", "-j", "KUBE-FORWARD")
    ipt("-A", "FORWARD", "-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment",
        "kubernetes service portals", "-j", "KUBE-SERVICES")
    ipt("-t", "nat", "-N", "KUBE-SERVICES")
    ipt("-t", "nat", "-A", "PREROUTING", "-j", "KUBE-SERVICES")
    ipt("-t", "nat", "-A", "KUBE-SERVICES", "-d", f"{SVC_DB[0]}/32", "-p", "tcp", "--dport",
        str(SVC_DB[1]), "-j", "DNAT", "--to-destination", f"10.244.1.{db}:8080")
    ipt("-t", "nat", "-A", "KUBE-SERVICES", "-d", f"{SVC_DNS[0]}/32", "-p", "udp", "--dport", "53",
        "-m", "statistic", "--mode", "random", "--probability", "0.5",
        "-j", "DNAT", "--to-destination", f"10.244.1.{db}:53")
    ipt("-t", "nat", "-A", "KUBE-SERVICES", "-d", f"{SVC_DNS[0]}/32", "-p", "udp", "--dport", "53",
        "-j", "DNAT", "--to-destination", f"10.244.1.{cache}:53")
