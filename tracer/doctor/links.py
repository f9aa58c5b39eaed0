"""links: the node's devices and neighbours: the MTU along each pod's path, hairpin, bridge
ports and STP, the VXLAN overlay (and the VNIs other nodes announce), IPsec, addresses,
neighbour entries. The standing states among them are what explain/evidence.py reads for
a drop's hint; here they are checked before any drop."""

from __future__ import annotations

import ipaddress
import json

from ..explain import evidence
from ..jsonvalues import string, sub, u32
from ..pods import apitext
from .findings import Cmd, Finding, fix, plural
from .node import Node, link_kind, links_by_name, pod_label

# Encapsulation overhead of overlay and tunnel devices (outer headers), bytes.
TUNNEL_OVERHEAD = {"vxlan": 50, "geneve": 50, "ipip": 20, "sit": 20, "gre": 24, "gretap": 38, "wireguard": 80}


def check_mtu(node: Node) -> list[Finding]:
    links = links_by_name(node)
    tunnels = {n: link for n, link in links.items() if link_kind(link) in TUNNEL_OVERHEAD}
    out = []
    for name, t in tunnels.items():
        kind = link_kind(t) or ""
        lower = sub(t, "linkinfo", "info_data").get("link")
        if isinstance(lower, str) and lower in links:
            room = links[lower]["mtu"] - TUNNEL_OVERHEAD[kind]
            if t["mtu"] > room:
                out.append(Finding("mtu", "error", f"{name} ({kind}) MTU {t['mtu']} does not fit its underlay: "
                                   f"{lower} MTU {links[lower]['mtu']} - {TUNNEL_OVERHEAD[kind]} bytes of "
                                   f"encapsulation = {room}",
                                   [f"{name} mtu {t['mtu']}", f"{lower} mtu {links[lower]['mtu']}"],
                                   *fix(Cmd(f"ip link set {name} mtu {room}"))))
    smallest = min(tunnels.values(), key=lambda t: t["mtu"]) if tunnels else None
    too_big: dict[tuple[int, int, str], list[str]] = {}   # (pod MTU, path MTU, narrowest hop) -> pods
    fine = []
    for info in node.pods:
        pod_links = links_by_name(node, path=info.path)
        eth = next((link for link in pod_links.values() if link_kind(link) == "veth"), None)
        if eth is None or info.host_veth is None:
            continue
        veth = links.get(info.host_veth.name, {})
        master = veth.get("master")
        bridge = links.get(master, {}) if isinstance(master, str) else {}
        hops = [(f"pod {eth['ifname']}", eth["mtu"]), (f"host {info.host_veth.name}", veth.get("mtu")),
                (f"bridge {bridge.get('ifname')}", bridge.get("mtu"))]
        if smallest is not None:
            hops.append((f"overlay {smallest['ifname']}", smallest["mtu"]))
        hops = [(n, m) for n, m in hops if m]
        limit = min(m for _, m in hops)
        path = " -> ".join(f"{n} {m}" for n, m in hops)
        if eth["mtu"] > limit:
            narrow = next(n for n, m in hops if m == limit)
            too_big.setdefault((eth["mtu"], limit, narrow), []).append(f"{pod_label(node, info)}: {path}")
        else:
            fine.append(f"{pod_label(node, info)}: largest packet {limit}")
    for (mtu, limit, narrow), pods in too_big.items():
        out.append(Finding("mtu", "error",
                           f"{len(pods)} pod{'s' if len(pods) > 1 else ''} with eth0 MTU {mtu}, larger than {narrow} "
                           f"({limit}): packets of {limit + 1}-{mtu} bytes with DF set are dropped (PKT_TOO_BIG at "
                           f"ip_forward); the largest packet that passes is {limit} bytes", pods,
                           *fix(f"set the CNI's MTU to {limit} (for one pod: ", Cmd(f"ip link set eth0 mtu {limit}"),
                                " in its namespace)")))
    if fine:
        out.append(Finding("mtu", "ok", f"{len(fine)} pods: MTU fits the path", fine))
    if not node.pods:
        out.append(Finding("mtu", "unchecked", "no pod sandboxes found (no namespace with a veth to this node)"))
    return out


def check_hairpin(node: Node) -> list[Finding]:
    links = links_by_name(node)
    off = [n for n, link in links.items() if sub(link, "linkinfo").get("info_slave_kind") == "bridge"
           and sub(link, "linkinfo", "info_slave_data").get("hairpin") is False
           and sub(link, "linkinfo").get("info_kind") == "veth"]
    if not off:
        return [Finding("hairpin", "ok", "hairpin mode on for every pod veth on a bridge")]
    return [Finding("hairpin", "warning", f"hairpin mode off on {len(off)} pod veths: a pod that reaches itself "
                    "through its own Service gets no answer", off[:5],
                    *fix(Cmd(f"ip link set {off[0]} type bridge_slave hairpin on"),
                         " (kubelet --hairpin-mode=hairpin-veth, or the bridge CNI's hairpinMode: true)"))]


def check_addresses(node: Node) -> list[Finding]:
    out = []
    for link in node.ip_json("addr", "show"):
        kind = link.get("link_type")
        name = string(link, "ifname")
        if kind != "ether" or name is None or name.startswith(("veth", "cni", "docker", "cali", "lxc", "flannel",
                                                               "cilium")):
            continue
        infos = link.get("addr_info")
        v4 = [a for a in (infos if isinstance(infos, list) else []) if isinstance(a, dict)
              and a.get("family") == "inet" and a.get("scope") == "global" and string(a, "local")
              and u32(a.get("prefixlen")) is not None]
        if len(v4) > 1:
            dynamic = [a for a in v4 if a.get("dynamic")]
            static = [a for a in v4 if not a.get("dynamic")]
            both = bool(dynamic and static)
            drop_this = (dynamic or v4)[-1]     # the (last) DHCP address if there is one
            out.append(Finding("node addresses", "warning",
                               f"{name} has {len(v4)} IPv4 addresses" + (" from static and DHCP configuration"
                                                                        if both else "") +
                               ": the kubelet's node IP, certificates and routes may pick the wrong one",
                               [f"{a['local']}/{a['prefixlen']}" + (" (dynamic, DHCP)" if a.get("dynamic") else
                                                                    " (static)") for a in v4],
                               *fix("keep one: ", Cmd(f"ip addr del {drop_this['local']}/{drop_this['prefixlen']} "
                                                      f"dev {name}"), ", and fix the network configuration")))
    return out or [Finding("node addresses", "ok", "one IPv4 address per node interface")]


def check_neighbours(node: Node) -> list[Finding]:
    out = []
    entries = [e for e in node.ip_json("neigh", "show") if string(e, "dst") and string(e, "dev")]
    failed = [e for e in entries if isinstance(e.get("state"), list) and {"FAILED", "INCOMPLETE"} & set(
        x for x in e["state"] if isinstance(x, str))]
    if failed:
        out.append(Finding("neighbours", "warning", f"{len(failed)} neighbour entries never resolved (ARP/ND "
                           "failed): traffic to them is dropped (NEIGH_FAILED)",
                           [f"{e['dst']} dev {e['dev']} {','.join(x for x in e['state'] if isinstance(x, str))}"
                            for e in failed[:5]],
                           *fix(f"check that {failed[0]['dst']} is up on the segment of {failed[0]['dev']}; ",
                                Cmd(f"ip neigh del {failed[0]['dst']} dev {failed[0]['dev']}"))))
    by_mac: dict[tuple[str, str], list[str]] = {}   # (dev, MAC) -> IPv4 addresses
    for e in entries:
        if string(e, "lladdr") and _ipv4(e["dst"]) is not None:
            by_mac.setdefault((e["dev"], e["lladdr"]), []).append(e["dst"])
    shared = {k: sorted(v, key=ipaddress.IPv4Address) for k, v in by_mac.items() if len(v) > 1}   # all IPv4 (above)
    for (dev, mac), ips in shared.items():
        out.append(Finding("neighbours", "warning", f"{dev}: one MAC {mac} answers for {', '.join(ips)}: a wrong or "
                           "stale ARP entry sends one host's traffic to another (ARP flux: check arp_ignore/"
                           "arp_announce on multi-homed hosts)", [f"{ip} lladdr {mac} dev {dev}" for ip in ips],
                           *fix(Cmd(f"ip neigh del {ips[-1]} dev {dev}"))))
    return out or [Finding("neighbours", "ok", "no failed or conflicting neighbour entries")]


def _ipv4(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def check_bridges(node: Node) -> list[Finding]:
    """Bridge ports up with carrier but not forwarding, and bridges with STP on."""
    devices = node.facts().devices
    bridges = {d.name: d for d in devices if d.kind == "bridge"}
    if not bridges:
        return [Finding("bridge ports", "ok", "no bridge in this namespace")]
    out = []
    # A port without carrier is "disabled" because its peer is down (br_port_carrier_check):
    # no STP problem, and its drops are the veth's (device category).
    stuck = [d for d in devices if d.master in bridges and d.port_state not in (None, evidence.FORWARDING)
             and d.up and d.carrier]
    if stuck:
        out.append(Finding("bridge ports", "error", f"{plural(len(stuck), 'bridge port')} up but not forwarding: "
                           "every frame they receive is dropped (BRIDGE_INGRESS_STP_STATE at br_handle_frame)",
                           [f"{d.name} of {d.master}: {d.port_state}" for d in stuck[:10]],
                           *fix("a pod bridge needs no STP: ", Cmd(f"ip link set {stuck[0].master} type bridge "
                                                                   "stp_state 0"),
                                "; or ", Cmd(f"bridge link set dev {stuck[0].name} state 3"))))
    stp = [b for b in bridges.values() if b.stp]
    if stp:
        out.append(Finding("bridge stp", "warning", f"STP is on for {', '.join(b.name for b in stp[:5])}: each new "
                           "pod's port listens and learns (2 x forward_delay, 30 s by default) before it forwards, "
                           "and STP may block ports", [f"{b.name} stp_state 1" for b in stp[:5]],
                           *fix(Cmd(f"ip link set {stp[0].name} type bridge stp_state 0"))))
    return out or [Finding("bridge ports", "ok", f"every port of {plural(len(bridges), 'bridge')} forwards")]


def flannel_vnis(nodes: object) -> dict[str, int]:
    """Node objects (the API's JSON) -> the VXLAN VNI each node's flannel announces
    (annotation flannel.alpha.coreos.com/backend-data: {"VNI": 1, "VtepMAC": ...}).
    Node objects are anyone's text with node rights: any value reads as nothing."""
    out: dict[str, int] = {}
    for n in nodes if isinstance(nodes, list) else []:
        meta = sub(n, "metadata")
        name, data = string(meta, "name"), sub(meta, "annotations").get("flannel.alpha.coreos.com/backend-data")
        if name is None or not isinstance(data, str) or len(data) > 4096:
            continue
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            continue
        vni = u32(doc.get("VNI")) if isinstance(doc, dict) else None
        if vni is not None:
            out[apitext.safe(name, apitext.DNS_SUBDOMAIN)] = vni
    return out


def check_overlay(node: Node, announced: dict[str, int] | None = None) -> list[Finding]:
    """The VXLAN devices: whether each can send anywhere, and (given what other
    nodes announce) whether their VNI matches this node's."""
    vx = [d for d in node.facts().devices if d.vxlan is not None]
    if not vx:
        return [Finding("overlay", "ok", "no VXLAN device in this namespace")]
    lines = []
    for d in vx:
        v = d.vxlan
        assert v is not None
        fdb = "FDB unread" if v.fdb_entries is None else plural(v.fdb_entries, "FDB entry", "FDB entries")
        remotes = f" ({', '.join(v.fdb_remotes)})" if v.fdb_remotes else ""
        lines.append(f"{d.name}: VNI {v.vni}, UDP port {v.port}, underlay {v.underlay or '-'}, "
                     f"remote {v.remote or '-'}, {fdb}{remotes}")
    out = []
    nowhere = [d for d in vx if d.up and d.vxlan is not None and not d.vxlan.remote and d.vxlan.fdb_entries == 0]
    if nowhere:
        out.append(Finding("overlay", "error", f"{plural(len(nowhere), 'VXLAN device')} with no remote and no FDB "
                           "entry: packets routed to them go nowhere (NO_TX_TARGET at vxlan_xmit)",
                           [x for x in lines if x.split(":")[0] in {d.name for d in nowhere}],
                           *fix("check the CNI agent on this node (flannel, Calico): it writes each other node's "
                                "VTEP into the FDB (", Cmd(f"bridge fdb show dev {nowhere[0].name}"), ")")))
    if announced:
        here = {d.vxlan.vni for d in vx if d.vxlan is not None}
        other = {n: v for n, v in announced.items() if v not in here}
        if other:
            out.append(Finding("overlay", "error", f"{plural(len(other), 'node')} announce a VNI that no VXLAN "
                               f"device here has ({', '.join(str(v) for v in sorted(here, key=str))}): their "
                               "overlay packets are dropped here (VXLAN_VNI_NOT_FOUND at vxlan_rcv)",
                               [f"{n}: VNI {v}" for n, v in sorted(other.items())[:10]] + lines,
                               "make the CNI's VNI equal on every node (flannel net-conf.json Backend.VNI, "
                               "Calico FelixConfiguration vxlanVNI)"))
    # Always listed: VNI and port are compared across nodes by whoever runs doctor on each.
    return out + [Finding("overlay", "info", "VXLAN devices (their VNI and port must be the same on every node: a "
                          "mismatch drops all overlay traffic, as VXLAN_VNI_NOT_FOUND or NO_SOCKET at the port)",
                          lines)]


def check_ipsec(node: Node) -> list[Finding]:
    x = node.facts().xfrm
    if x is None:
        return [Finding("ipsec", "unchecked", "could not read 'ip xfrm policy count' here")]
    total = sum(n for _d, n in x.policies)
    if total and x.states == 0:
        return [Finding("ipsec", "error", f"{plural(total, 'IPsec policy', 'IPsec policies')} and no "
                        "IPsec state: traffic they match is dropped (XFRM_POLICY inbound; outbound a blackhole, "
                        "dst_discard_out)", [f"{d}: {n}" for d, n in x.policies] + ["states: 0"],
                        *fix("check the IPsec agent (Cilium or Calico encryption, strongSwan): it installs the "
                             "states; remove stale policies (", Cmd("ip xfrm policy"), ")"))]
    if total:
        return [Finding("ipsec", "ok", f"IPsec: {total} policies, {x.states} states")]
    return [Finding("ipsec", "ok", "no IPsec policy")]
