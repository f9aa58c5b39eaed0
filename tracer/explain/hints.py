"""hints: each category's hint, one line: the likely cause of a drop, with the event's and the node's evidence.

One function per category, `hint(drop, evidence) -> str`, named by the
category's entry in the registry (categories.REGISTRY). A hint starts from the
facts that decide (a device's state, an MTU, a policy found) and falls back on
what the drop's reason or place means (causes.cause).
"""

from __future__ import annotations

from ..kernel.decode import Drop
from . import xfrm
from .causes import CAUSES, cause, given_reason
from .evidence import OVERLAY_PORTS, Device, Evidence, Program
from .verdict import ICMP_FRAG_NEEDED, ICMP_PORT_UNREACH, destination, name_matches, on_device


def _dev(d: Drop, ev: Evidence | None) -> Device | None:
    return ev.device(d.ifindex, d.ifname) if ev is not None else None


def _state(dev: Device) -> str:
    """"veth1 is UP, no carrier (LOWERLAYERDOWN; its peer, ifindex 2 in ns-b, is down)"."""
    oper = f"{dev.oper}" if dev.oper else ""
    peer = ""
    if dev.kind == "veth" and dev.up and not dev.carrier:
        where = f" in {dev.peer_netns}" if dev.peer_netns else ""
        idx = f", ifindex {dev.peer_ifindex}{where}," if dev.peer_ifindex is not None else ""
        peer = f"its peer{idx} is down"
    detail = "; ".join(x for x in (oper, peer) if x)
    return f"{dev.name} is {dev.state}" + (f" ({detail})" if detail else "")


def _no_carrier(dev: Device | None) -> bool:
    return dev is not None and not (dev.up and dev.carrier)


def _teardown(dev: Device) -> str:
    if dev.kind == "veth" and dev.up:
        return ": the pod at its other end is being torn down or failed (its sandbox's eth0 is down)"
    return ": bring it up, or find what took it down ('ip link show', the CNI's log)"


def mtu(d: Drop, ev: Evidence | None = None) -> str:
    if d.reason and d.reason.startswith(("FRAG_", "DUP_FRAG")):
        return (f"IP fragments of {d.flow} were never reassembled ({d.reason}): fragments get "
                f"lost on the way; make the MTUs along the path agree so nothing fragments")
    df = " with DF set" if d.df else ""
    if d.mtu:
        icmp = "; ICMP 'fragmentation needed' went back to the sender" if d.icmp_sent == ICMP_FRAG_NEEDED else ""
        return (f"{d.len}-byte packet{df} is larger than the MTU {d.mtu} of {d.out_ifname or 'the egress device'} "
                f"(egress of its route){icmp}: the sender's MTU is too big for this path, lower it "
                f"to {d.mtu} (pod/veth MTU must fit the overlay) or let PMTU discovery work")
    return (f"{d.len}-byte packet{df} does not fit the path MTU: compare the MTUs of the "
            f"devices along the path (pod eth0, veth, bridge, overlay, node NIC)")


def netfilter(d: Drop, ev: Evidence | None = None) -> str:
    return (f"a firewall rule or a chain's DROP policy discarded it in {d.location or 'netfilter'}"
            f"{on_device(d)}: check 'iptables -S' and 'nft list ruleset' in this namespace "
            f"(e.g. FORWARD policy DROP)")


def conntrack(d: Drop, ev: Evidence | None = None) -> str:
    return (f"connection tracking refused it at {d.location}: check 'conntrack -S' (insert_failed, "
            f"drop, invalid) and nf_conntrack_count against nf_conntrack_max")


def no_socket(d: Drop, ev: Evidence | None = None) -> str:
    if (refused := xfrm.before_socket(d, ev.xfrm if ev is not None else None)) is not None:
        return refused
    proto = (d.proto or "").upper() or "the"
    icmp = " (ICMP port unreachable sent back)" if d.icmp_sent == ICMP_PORT_UNREACH else ""
    if d.proto == "udp" and d.dport in OVERLAY_PORTS and ev is not None:
        # An overlay packet nobody takes: the VXLAN port differs between the nodes.
        others = [x for x in ev.vxlans() if x.vxlan is not None and x.vxlan.port != d.dport]
        if others:
            return (f"VXLAN/Geneve packet to UDP port {d.dport} from {d.src or '?'}{icmp}, but {_vxlan_list(ev)}: "
                    f"the nodes disagree on the overlay port: make them equal")
    return (f"nothing listens on {proto} {destination(d)}{icmp}: the server is not running, "
            f"not ready, or bound to another address or port")


def no_route(d: Drop, ev: Evidence | None = None) -> str:
    if name_matches(d.location, ("dst_discard*",)):
        x = ev.xfrm if ev is not None else None
        if x is not None and x.count("out") and x.states == 0:
            n = x.count("out")
            return (f"{d.flow} met a blackhole: this namespace has {n} outbound IPsec "
                    f"{'policy' if n == 1 else 'policies'} and no IPsec state: a policy without its state (SA) "
                    f"discards what it matches (xfrm_larval_drop); the IPsec agent has not installed its keys")
        return f"{d.flow}: {cause(d)}: check 'ip route get {d.dst or 'DST'}' and 'ip xfrm policy'"
    return (f"no route to {d.dst or 'the destination'}{on_device(d)} ({given_reason(d)}): add the route for its "
            f"network, e.g. the missing pod CIDR route to another node, or a default route")


def neighbor(d: Drop, ev: Evidence | None = None) -> str:
    return (f"the next hop{on_device(d)} did not answer ARP/ND ({given_reason(d)}): the neighbour is down or on "
            f"another L2 segment; check 'ip neigh show'")


def rp_filter(d: Drop, ev: Evidence | None = None) -> str:
    return (f"source {d.src or '?'} failed the reverse-path/source check{on_device(d)} ({given_reason(d)}): the route "
            f"back to it leaves by another interface; check rp_filter and the routes to {d.src or 'it'}")


def tcp(d: Drop, ev: Evidence | None = None) -> str:
    return (f"TCP discarded a segment of {d.flow} ({given_reason(d)}): a stale, out-of-window or "
            f"unexpected segment, usually after a reset or lost connection state")


def socket_buffer(d: Drop, ev: Evidence | None = None) -> str:
    return (f"the receiving socket for {destination(d)} is full ({given_reason(d)}): the application reads too "
            f"slowly; raise its receive buffer or backlog, or give it more CPU")


def qdisc(d: Drop, ev: Evidence | None = None) -> str:
    dev = _dev(d, ev)
    if _no_carrier(dev):
        assert dev is not None
        # A device without carrier has the noop qdisc (net/sched/sch_generic.c dev_deactivate):
        # every packet sent to it is a QDISC_DROP, not an overload.
        return f"{_state(dev)}: packets sent to it are dropped{_teardown(dev)}"
    return (f"a queue or traffic-control rule dropped it{on_device(d)} ({given_reason(d)}): the device is "
            f"overloaded or a tc filter drops; check 'tc -s qdisc show'")


def malformed(d: Drop, ev: Evidence | None = None) -> str:
    return f"bad packet ({given_reason(d)}): truncated, bad header or checksum; check the sender or NIC offloads"


def other(d: Drop, ev: Evidence | None = None) -> str:
    found = cause(d)
    why = f": {found}" if found != given_reason(d) else ""
    return f"dropped in {d.location or 'an unknown function'} ({given_reason(d)}){why}"


def _vxlan_list(ev: Evidence) -> str:
    vx = ev.vxlans()
    if not vx:
        return "no VXLAN device here"
    return "VXLAN here: " + ", ".join(
        f"{d.name} VNI {d.vxlan.vni if d.vxlan and d.vxlan.vni is not None else '?'} port "
        f"{d.vxlan.port if d.vxlan and d.vxlan.port is not None else '?'}" for d in vx[:4])


def overlay(d: Drop, ev: Evidence | None = None) -> str:
    if d.reason == "VXLAN_VNI_NOT_FOUND":
        known = f" ({_vxlan_list(ev)})" if ev is not None else ""
        return (f"a VXLAN packet from {d.src or '?'}{on_device(d)} carries a VNI no VXLAN device here has{known}: "
                f"the nodes disagree on the overlay's VNI (flannel's VNI, Calico's vxlanVNI): make them equal")
    if d.reason == "NO_TX_TARGET" or (d.reason in (None, "NOT_SPECIFIED") and d.location == "vxlan_xmit"):
        dev = _dev(d, ev)
        vx = dev.vxlan if dev is not None else None
        fdb = ""
        if dev is not None and vx is not None:
            fdb = (f": {dev.name} (VNI {vx.vni}) has no default remote and "
                   f"{vx.fdb_entries if vx.fdb_entries is not None else '?'} FDB entries"
                   + (f" ({', '.join(vx.fdb_remotes)})" if vx.fdb_remotes else ""))
        return (f"the overlay had no remote node for {d.dst or 'the packet'}{on_device(d)}{fdb}: the CNI has not "
                f"programmed the FDB/neighbour entry for the other node's VTEP ('bridge fdb show dev DEV')")
    return f"the overlay dropped it{on_device(d)}: {cause(d)} ({given_reason(d)} in {d.location or '?'})"


def device(d: Drop, ev: Evidence | None = None) -> str:
    dev = _dev(d, ev)
    if d.reason == "BRIDGE_INGRESS_STP_STATE":
        if dev is not None and dev.port_state:
            return (f"bridge port {dev.name} of {dev.master or 'its bridge'} is {dev.port_state}, not forwarding: "
                    f"STP holds it (blocking, listening, learning) or the port is disabled; a pod bridge wants "
                    f"STP off ('bridge link show')")
        return f"a bridge port{on_device(d)} is not forwarding (STP state): check 'bridge link show'"
    if d.reason == "IPV6DISABLED":
        if dev is not None and dev.disable_ipv6:
            return (f"IPv6 is disabled on {dev.name} (net.ipv6.conf.{dev.name}.disable_ipv6=1), and "
                    f"{d.src or 'a peer'} sent it IPv6: a dual-stack Service or peer reaches a single-stack pod; "
                    f"make the Service SingleStack or enable IPv6 there")
        return f"IPv6 arrived{on_device(d)} where IPv6 is disabled (disable_ipv6): a dual-stack peer, single-stack pod"
    if d.reason == "IP_LOCALNET":
        what = (f"{d.dst} (127.0.0.0/8) came in from outside" if d.dst and d.dst.startswith("127.")
                else f"a packet from {d.src or '?'} (127.0.0.0/8) came in from outside")
        if dev is not None and dev.route_localnet is False:
            return (f"{what} on {dev.name}, where route_localnet is 0 (net.ipv4.conf.{dev.name}.route_localnet): "
                    f"a NodePort or hostPort on localhost is reached from outside only with route_localnet=1 "
                    f"(kube-proxy sets it for --nodeport-addresses 127.0.0.1); else nothing should send to 127/8")
        return f"{what}{on_device(d)}: 127.0.0.0/8 is refused unless route_localnet is set"
    if dev is not None and _no_carrier(dev):
        return f"{_state(dev)}: {cause(d)}{_teardown(dev)}"
    if d.reason in (None, "NOT_SPECIFIED") and dev is not None and dev.kind == "veth" and dev.mtu \
            and d.len > dev.mtu:
        return f"{d.len}-byte packet is larger than {dev.name}'s MTU {dev.mtu}: {cause(d)}"
    state = f" ({dev.name} is {dev.state})" if dev is not None else ""
    return f"{cause(d)}{on_device(d)}{state}"


def _programs(found: list[Program], none: str) -> str:
    if not found:
        return none
    more = f" and {len(found) - 2} more" if len(found) > 2 else ""
    return "; ".join(str(p) for p in found[:2]) + more


def bpf_program(d: Drop, ev: Evidence | None = None) -> str:
    reason = d.reason or ""
    node = ev.node if ev is not None else None
    if reason in ("BPF_CGROUP_EGRESS", "SOCKET_FILTER"):
        hook = "egress" if reason == "BPF_CGROUP_EGRESS" else "ingress"
        seen = ""
        if node is not None and node.cgroup_programs is not None:
            seen = ": " + _programs([p for p in node.cgroup_programs if hook in p.hook],
                                    f"no cgroup {hook} program visible to bpftool now")
        return f"{cause(d)}, flow {d.flow}{seen} (a CNI's policy, or a security agent's program)"
    if reason in ("TC_INGRESS", "TC_EGRESS", "XDP"):
        hook = "xdp" if reason == "XDP" else ("tc ingress" if reason == "TC_INGRESS" else "tc egress")
        seen = ""
        if ev is not None and ev.programs is not None:
            seen = ": " + _programs(ev.programs_on(d.ifname, hook), f"no BPF program at {hook} of "
                                    f"{d.ifname or 'the device'}: a tc filter action (drop, police) did "
                                    f"('tc filter show dev {d.ifname or 'DEV'} {hook.split()[-1]}')")
        return f"{cause(d)}{on_device(d)}{seen}"
    if reason == "SECURITY_HOOK":
        lsm = f" (active: {', '.join(node.lsm)})" if node is not None and node.lsm else ""
        return f"{cause(d)}{lsm}: flow {d.flow}; check the audit log and the security agent's policies"
    return f"{cause(d)}{on_device(d)}"


def ipsec(d: Drop, ev: Evidence | None = None) -> str:
    # UDP's no-socket path says NOT_SPECIFIED for the refusal (classify.event_category).
    return xfrm.hint(d, ev.xfrm if ev is not None else None,
                     CAUSES["XFRM_POLICY"] if d.reason == "NOT_SPECIFIED" else cause(d))


def memory(d: Drop, ev: Evidence | None = None) -> str:
    mem = ev.node.memory if ev is not None and ev.node is not None else None
    now = f": {mem}" if mem is not None else ""
    return (f"{cause(d)}{on_device(d)}{now}; check the node's memory (free -m, /proc/pressure/memory) and "
            f"which pods use it")
