"""cases: the drops the demo and the kernel tests provoke on a SimNode, and the player of the demo."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UserError
from .node import SimNode
from .shell import LabError, run
from .topology import CLIENT_V4, HOSTNET_PORT, NODE1_EXT, OVERLAY_MTU, POD_MTU, SVC_DB, SVC_DNS, SVC_EMPTY, \
    UNROUTED_POD


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    play: Callable[[SimNode, int], int]   # (node, packets) -> packets sent


def _mtu(node: SimNode, n: int) -> int:
    # 1472 bytes of UDP payload = a 1500-byte IP packet with DF: fits the pod's
    # eth0 but not flannel.1 (1450), so node1's ip_forward() drops it.
    api = node.pods["api"]
    return node.traffic(node.pods["web"].netns, "udp", "--dst", api.ipv4, "--port", "5000",
                        "--size", str(POD_MTU - 28), "--df", "--count", str(n))


def _forward_drop(node: SimNode, n: int, settle: float = 1.2) -> int:
    # Docker's classic: FORWARD policy DROP on the node cuts pods off from outside.
    # The policy stays a moment before and after the traffic, as it would on a
    # real node, so that a ruleset sampled once a second sees it.
    run("iptables", "-P", "FORWARD", "DROP", ns=node.node1)
    try:
        time.sleep(settle)
        sent = node.traffic(node.pods["web"].netns, "udp", "--dst", CLIENT_V4, "--port", "5353",
                            "--count", str(n))
        time.sleep(settle)
        return sent
    finally:
        run("iptables", "-P", "FORWARD", "ACCEPT", ns=node.node1)


def _udp_closed(node: SimNode, n: int) -> int:
    db = node.pods["db"]
    return node.traffic(node.client, "udp", "--dst", db.ipv4, "--port", "9999", "--count", str(n))


def _udp6_closed(node: SimNode, n: int) -> int:
    db = node.pods["db"]
    assert db.ipv6 is not None      # every pod sandbox is dual-stack (add_pod)
    return node.traffic(node.client, "udp", "--dst", db.ipv6, "--port", "9999", "--count", str(n))


def _tcp_closed(node: SimNode, n: int) -> int:
    db = node.pods["db"]
    return node.traffic(node.client, "tcp", "--dst", db.ipv4, "--port", "8080", "--count", str(n))


def _hostnet_closed(node: SimNode, n: int) -> int:
    # node-exporter (hostNetwork) declares 9100 but is not listening: dropped in the node's namespace.
    return node.traffic(node.client, "udp", "--dst", NODE1_EXT, "--port", str(HOSTNET_PORT),
                        "--count", str(n))


def _invalid(node: SimNode, n: int) -> int:
    # SYN+FIN: conntrack calls it INVALID, and kube-proxy's KUBE-FORWARD rule drops it.
    return node.traffic(node.client, "tcp-flags", "--dst", node.pods["web"].ipv4, "--port", "8080",
                        "--flags", "0x03", "--count", str(n))


def _no_endpoints(node: SimNode, n: int) -> int:
    ip, port = SVC_EMPTY
    return node.traffic(node.pods["web"].netns, "tcp", "--dst", ip, "--port", str(port), "--count", str(n))


def _nat_bypass(node: SimNode, n: int) -> int:
    # The seed case: a Service whose endpoint is on the same bridge, with
    # bridge-nf-call-iptables=0: db's SYN-ACK goes back to web over the bridge
    # untranslated, from db's address; web never connected to that and resets.
    listener = node.serve("db", "listen", "--port", "8080", "--seconds", str(5 + n))
    try:
        run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", ns=node.node1)
        ip, port = SVC_DB
        return node.traffic(node.pods["web"].netns, "tcp", "--dst", ip, "--port", str(port), "--count", str(n))
    finally:
        run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", ns=node.node1, check=False)
        listener.kill()
        listener.wait()


DNS_RACE_SECONDS = 20


def _dns_race(node: SimNode, n: int) -> int:
    # The Service's endpoints, db and cache, answer as a cluster DNS does (a
    # bounded responder, traffic.dns_server), and web waits for both answers
    # before it closes the socket, as a resolver does: only the race shows, not
    # a flood of queries nobody answers (NO_SOCKET).
    ip, port = SVC_DNS
    servers = [node.serve(role, "dns-server", "--port", str(port), "--answer", node.pods["db"].ipv4,
                          "--seconds", str(DNS_RACE_SECONDS + 5)) for role in ("db", "cache")]
    try:
        return node.traffic(node.pods["web"].netns, "udp-race", "--dst", ip, "--port", str(port),
                            "--count", str(n * 100), "--seconds", str(DNS_RACE_SECONDS), "--wait", "0.2")
    finally:
        for server in servers:
            server.kill()
            server.wait()


def _no_route(node: SimNode, n: int) -> int:
    return node.traffic(node.pods["web"].netns, "udp", "--dst", UNROUTED_POD, "--port", "80",
                        "--count", str(n))


CASES = {
    c.name: c for c in (
        Case("mtu", f"pod web -> pod api on node2: 1500-byte DF packets, overlay MTU {OVERLAY_MTU}", _mtu),
        Case("forward-drop", "node1 FORWARD policy DROP: pod web -> outside client", _forward_drop),
        Case("udp-closed", "client -> pod db UDP 9999, nobody listens", _udp_closed),
        Case("udp6-closed", "client -> pod db UDP 9999 over IPv6, nobody listens", _udp6_closed),
        Case("tcp-closed", "client -> pod db TCP 8080, nobody listens", _tcp_closed),
        Case("no-route", "pod web -> 10.244.3.10: node1 has no route to that pod CIDR", _no_route),
        Case("hostnet-closed", "client -> node1 UDP 9100: hostNetwork pod node-exporter not listening",
             _hostnet_closed),
        Case("invalid", "client -> pod web TCP SYN+FIN: conntrack INVALID, kube-proxy's rule drops it", _invalid),
        Case("no-endpoints", "pod web -> Service 10.96.0.30:80 without endpoints: kube-proxy REJECT",
             _no_endpoints),
        Case("nat-bypass", "pod web -> Service 10.96.0.20 -> pod db on the same bridge with "
             "bridge-nf-call-iptables=0: the reply skips un-DNAT", _nat_bypass),
        Case("dns-race", "pod web: two UDP queries at once from one socket to a DNAT'd Service: "
             "conntrack insert races (clash_resolve)", _dns_race),
    )
}


def select_cases(spec: str) -> list[Case]:
    if spec == "all":
        return list(CASES.values())
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise UserError(f"unknown case {', '.join(unknown)} (cases: {', '.join(CASES)})")
    return [CASES[n] for n in names]


class Player:
    """Plays the cases in turn until stopped: a few packets each, a pause between."""

    def __init__(self, node: SimNode, cases: list[Case], packets: int = 5, pause: float = 1.5):
        self.node, self.cases, self.packets, self.pause = node, cases, packets, pause
        self._stop = threading.Event()
        self.sent: dict[str, int] = {}
        self.errors: list[str] = []

    def run(self) -> None:
        while not self._stop.is_set():
            for case in self.cases:
                if self._stop.is_set():
                    return
                try:
                    self.sent[case.name] = self.sent.get(case.name, 0) + case.play(self.node, self.packets)
                except LabError as exc:
                    if self._stop.is_set():   # namespaces already going away
                        return
                    self.errors.append(f"{case.name}: {exc}")
                self._stop.wait(self.pause)

    def stop(self) -> None:
        self._stop.set()
