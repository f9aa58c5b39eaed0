"""doctor: the node misconfigurations that no drop tracer sees, found in seconds.

Each check reads (never changes) the kernel, the node's namespace (or the
one given with --netns, as a simulated node is checked) and the pods' namespaces,
and returns Findings: a severity, what is wrong, the evidence, and the command
that fixes it. A check that cannot look says why instead of guessing.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .explain import evidence
from .explain.explainer import ct_stats, drop_points
from .kernel import facts
from .errors import UserError
from .node.nsexec import read_in_netns
from .pods import apitext
from .pods.kube import DUAL_STACK_POLICIES

if TYPE_CHECKING:
    from .pods.kube import PodInfo, ServiceInfo
    from .node.table import NetnsInfo

SEVERITIES = ("error", "warning", "info", "ok", "unchecked")
# Encapsulation overhead of overlay and tunnel devices (outer headers), bytes.
TUNNEL_OVERHEAD = {"vxlan": 50, "geneve": 50, "ipip": 20, "sit": 20, "gre": 24, "gretap": 38, "wireguard": 80}
CONNTRACK_FULL = 0.9


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    summary: str
    evidence: list[str] = field(default_factory=list)
    fix: str | None = None
    # The commands in fix, each as it appears there: a report keeps each whole on one line.
    commands: tuple[str, ...] = ()


class Cmd(str):
    """A command within a fix's text (what the reader copies)."""


def fix(*parts: str) -> tuple[str, tuple[str, ...]]:
    """A fix's text and its commands (the parts that are Cmd): Finding's last two fields."""
    return "".join(parts), tuple(p for p in parts if isinstance(p, Cmd))


@dataclass
class Node:
    """Where the checks look: the node's namespace (path None: ours) and its pods'."""

    path: str | None
    label: str
    pods: list[NetnsInfo] = field(default_factory=list)   # pod sandboxes (a veth to the node)
    pod_names: dict[int, str] = field(default_factory=dict)  # inode -> pod name, when known
    cni_dir: Path = Path("/var/lib/cni/networks")
    _facts: evidence.Evidence | None = field(default=None, repr=False)

    def facts(self) -> evidence.Evidence:
        """The node namespace's devices, sysctls, VXLAN, xfrm and BPF programs
        (explain/evidence.py: what explains drops there), read once per run."""
        if self._facts is None:
            self._facts = evidence.read_namespace(0, self.path, None, 0.0)
        return self._facts

    # path: where to look; False (the default): the node's namespace, None: ours
    def ip_json(self, *args: str, path: str | None | Literal[False] = False) -> list[dict[str, Any]]:
        """`ip -j ...` objects; what is not a list of objects reads as nothing
        (interface names and neighbour entries are set by pods: never trusted)."""
        out = read_in_netns(self.path if path is False else path, "ip", "-j", *args)
        try:
            doc = json.loads(out) if out else []
        except (ValueError, RecursionError):
            return []
        return [x for x in doc if isinstance(x, dict)] if isinstance(doc, list) else []

    def sysctl(self, name: str, path: str | None | Literal[False] = False) -> str | None:
        out = read_in_netns(self.path if path is False else path, "cat", "/proc/sys/" + name.replace(".", "/"))
        return out.strip() if out is not None else None


def _pod_label(node: Node, info: NetnsInfo) -> str:
    return node.pod_names.get(info.inode) or f"sandbox {info.label}"


def _sub(obj: object, *keys: str) -> dict[str, Any]:
    """obj[k1][k2]... as an object, {} where a level is missing or not an object."""
    for k in keys:
        obj = obj.get(k) if isinstance(obj, dict) else None
    return obj if isinstance(obj, dict) else {}


def _str(obj: dict[str, Any], key: str) -> str | None:
    v = obj.get(key)
    return v if isinstance(v, str) else None


def _int(v: object) -> int | None:
    """An int from JSON or a /proc/sys file; None if it is not one."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and re.fullmatch(r"\s*-?\d{1,19}\s*", v):
        return int(v)
    return None


def _read_small(path: Path, limit: int = 4096) -> str | None:
    """A small regular file in a directory others can write to: never follows a
    link, never blocks on a FIFO, reads at most limit bytes; None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


# ------------------------------------------------------------------ checks

def check_kernel(tracefs_candidates: Sequence[Path] = facts.TRACEFS_CANDIDATES) -> list[Finding]:
    out = []
    btf = facts.BTF_VMLINUX.exists()
    out.append(Finding("kernel: BTF", "ok" if btf else "error",
                       "kernel types available from BTF" if btf else "no BTF: netdrop needs /sys/kernel/btf/vmlinux "
                       "or headers of this kernel", [str(facts.BTF_VMLINUX)],
                       None if btf else "use a kernel built with CONFIG_DEBUG_INFO_BTF=y"))
    try:
        tracefs: Path | None = facts.find_tracefs(tracefs_candidates)
    except UserError:   # not mounted: what find_tracefs raises
        out.append(Finding("kernel: tracefs", "warning", "tracefs is not mounted", [],
                           *fix(Cmd("mount -t tracefs tracefs /sys/kernel/tracing"))))
        tracefs = None
    if tracefs is not None:
        fmt = facts.tracepoint_format(tracefs, *facts.KFREE_SKB)
        reason = fmt is not None and "reason" in facts.format_fields(fmt)
        out.append(Finding("kernel: drop reasons", "ok" if reason else "warning",
                           f"skb:kfree_skb carries drop reasons ({len(facts.reasons_from_format(fmt or ''))} of "
                           f"them, read from this kernel)" if reason else
                           "skb:kfree_skb has no drop reason (kernel before 5.17): drops are classified by "
                           "location", [f"{tracefs}/events/skb/kfree_skb/format"]))
        kprobes = (tracefs / "kprobe_events").exists()
        out.append(Finding("kernel: kprobes", "info" if not kprobes else "ok",
                           "kprobes available" if kprobes else "no kprobes (CONFIG_KPROBES not set): function hooks "
                           "unavailable, tracepoints suffice", [f"{tracefs}/kprobe_events"]))
    lockdown = Path("/sys/kernel/security/lockdown")
    mode = _read_small(lockdown)
    if mode is not None:
        mode = mode.strip()
        out.append(Finding("kernel: lockdown", "info", f"lockdown: {mode}", [str(lockdown)]))
    else:
        out.append(Finding("kernel: lockdown", "unchecked", "securityfs is not mounted: lockdown mode unknown", [],
                           *fix(Cmd("mount -t securityfs securityfs /sys/kernel/security"))))
    return out


def check_attach(ringbuf: str | None, tracepoints: tuple[str, str]) -> list[Finding]:
    """What the kernel answered when asked as netdrop's loader asks (kernel.btfprog):
    the ring buffer (netdrop's floor, Linux 5.8) and the drop tracepoint's form."""
    form, why = tracepoints
    return [
        Finding("kernel: ring buffer", "ok" if ringbuf is None else "error",
                "BPF ring buffer available" if ringbuf is None else ringbuf),
        Finding("kernel: tracepoints", "ok" if form == "tp_btf" else "info",
                "skb:kfree_skb and icmp:icmp_send as BTF-typed tracepoints (tp_btf)" if form == "tp_btf" else
                f"skb:kfree_skb and icmp:icmp_send as classic tracepoints ({why})"),
    ]


def check_hooks(hooks: Sequence[tuple[str, bool, str]]) -> list[Finding]:
    """Per function hook of netdrop (kernel.hooks.support: name, allowed,
    detail): whether this node lets it attach, and what is lost where it does not."""
    if not hooks:
        return [Finding("kernel: function hooks", "info", "no function hook is wanted on this kernel")]
    return [Finding(f"hook: {name}", "ok" if allowed else "info",
                    f"{name}: {detail}" if allowed else f"{name} cannot attach here: {detail}")
            for name, allowed, detail in hooks]


def check_sysctls(node: Node) -> list[Finding]:
    out = []
    fwd = node.sysctl("net.ipv4.ip_forward")
    if fwd == "0":
        out.append(Finding("ip_forward", "error", f"{node.label}: net.ipv4.ip_forward=0: the node forwards no pod "
                           "traffic", ["net.ipv4.ip_forward = 0"], *fix(Cmd("sysctl -w net.ipv4.ip_forward=1"))))
    elif fwd is not None:
        out.append(Finding("ip_forward", "ok", "net.ipv4.ip_forward=1", ["net.ipv4.ip_forward = 1"]))
    bridges = [name for link in node.ip_json("-d", "link", "show")
               if _sub(link, "linkinfo").get("info_kind") == "bridge" and (name := _str(link, "ifname"))]
    for name in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
        value = node.sysctl(f"net.bridge.{name}")
        if value is None:
            out.append(Finding(name, "unchecked" if not bridges else "warning",
                               "br_netfilter is not loaded: bridged pod traffic bypasses iptables and conntrack"
                               if bridges else "br_netfilter is not loaded (no bridge here)",
                               [f"/proc/sys/net/bridge/{name} missing"],
                               *fix(Cmd("modprobe br_netfilter")) if bridges else (None, ())))
        elif value == "0" and bridges:
            out.append(Finding(name, "warning",
                               f"net.bridge.{name}=0 with bridge {', '.join(bridges)}: traffic between pods on one "
                               "bridge skips iptables and conntrack, so a Service's reply to a pod on the same node "
                               "is not translated back and the connection is reset",
                               [f"net.bridge.{name} = 0"], *fix(Cmd(f"sysctl -w net.bridge.{name}=1"))))
        else:
            out.append(Finding(name, "ok", f"net.bridge.{name}={value}", [f"net.bridge.{name} = {value}"]))
    strict = []
    rp_all = node.sysctl("net.ipv4.conf.all.rp_filter") or "0"
    for link in node.ip_json("link", "show"):
        name = _str(link, "ifname")
        # A name is a path component under /proc/sys: one that could leave it is no interface's.
        if name is None or name == "lo" or "/" in name or name in (".", ".."):
            continue
        value = node.sysctl(f"net.ipv4.conf.{name}.rp_filter") or "0"
        if max(_int(value) or 0, _int(rp_all) or 0) == 1:
            strict.append(f"{name}: rp_filter={value} (all={rp_all})")
    if strict:
        out.append(Finding("rp_filter", "warning", "strict reverse-path filtering: packets whose reply would leave "
                           "by another interface are dropped (IP_RPFILTER), a classic with overlays and "
                           "asymmetric routes", strict,
                           *fix(Cmd("sysctl -w net.ipv4.conf.all.rp_filter=2"), " (and per interface)")))
    else:
        out.append(Finding("rp_filter", "ok", f"no strict rp_filter (all={rp_all})"))
    return out


def check_forward(node: Node) -> list[Finding]:
    ruleset = drop_points(node.path)
    points = [p for p in ruleset.points if p.chain.upper() == "FORWARD" or
              (p.kind == "policy" and p.chain == "forward")]
    out = []
    if ruleset.unread:
        out.append(Finding("forward", "unchecked", f"{ruleset.skipped} ruleset entries could not be read: they are "
                           "not checked", [f"{tool}: {n}" for tool, n in ruleset.unread]))
    for p in points:
        if p.kind == "policy":
            count = f", {p.packets} packets dropped so far" if p.packets else ""
            out.append(Finding("forward", "warning",
                               f"{p.describe()}{count}: forwarded pod traffic is dropped unless a rule accepts it "
                               "(Docker sets this)", [p.where],
                               *fix(Cmd("iptables -P FORWARD ACCEPT"), ", or accept the pod CIDR in FORWARD")
                               if p.backend.startswith("iptables") else
                               fix(Cmd(f"nft chain {p.family} {p.table} {p.chain} '{{ policy accept; }}'"))))
        else:
            out.append(Finding("forward", "warning" if p.packets else "info",
                               f"{p.describe()} drops forwarded packets ({p.packets or 0} so far)", [p.where],
                               "check that this rule should match pod traffic"))
    return out if points else out + [Finding("forward", "ok", "no FORWARD policy or rule drops")]


def _links(node: Node, path: str | None | Literal[False] = False) -> dict[str, dict[str, Any]]:
    """Interfaces by name, those with a name and an MTU only."""
    return {name: link for link in node.ip_json("-d", "link", "show", path=path)
            if (name := _str(link, "ifname")) and isinstance(mtu := link.get("mtu"), int)
            and not isinstance(mtu, bool) and mtu > 0}


def _kind(link: dict[str, Any]) -> str | None:
    """Its type (info_kind: veth, bridge, vxlan, ...)."""
    kind = _sub(link, "linkinfo").get("info_kind")
    return kind if isinstance(kind, str) else None


def check_mtu(node: Node) -> list[Finding]:
    links = _links(node)
    tunnels = {n: link for n, link in links.items() if _kind(link) in TUNNEL_OVERHEAD}
    out = []
    for name, t in tunnels.items():
        kind = _kind(t) or ""
        lower = _sub(t, "linkinfo", "info_data").get("link")
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
        pod_links = _links(node, path=info.path)
        eth = next((link for link in pod_links.values() if _kind(link) == "veth"), None)
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
            too_big.setdefault((eth["mtu"], limit, narrow), []).append(f"{_pod_label(node, info)}: {path}")
        else:
            fine.append(f"{_pod_label(node, info)}: largest packet {limit}")
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


def check_conntrack(node: Node) -> list[Finding]:
    count, limit = node.sysctl("net.netfilter.nf_conntrack_count"), node.sysctl("net.netfilter.nf_conntrack_max")
    if count is None or limit is None:
        return [Finding("conntrack", "unchecked", "conntrack is not loaded here")]
    if _int(count) is None or _int(limit) is None:
        return [Finding("conntrack", "unchecked", "conntrack count or limit is not a number",
                        [f"nf_conntrack_count = {count[:40]!r}", f"nf_conntrack_max = {limit[:40]!r}"])]
    out = []
    used = (_int(count) or 0) / max(_int(limit) or 0, 1)
    out.append(Finding("conntrack: table", "warning" if used >= CONNTRACK_FULL else "ok",
                       f"{count} of {limit} conntrack entries ({used:.0%})",
                       [f"nf_conntrack_count = {count}", f"nf_conntrack_max = {limit}"],
                       *fix(Cmd("sysctl -w net.netfilter.nf_conntrack_max=<larger>")) if used >= CONNTRACK_FULL
                       else (None, ())))
    stats = ct_stats(node.path) or {}
    for key, sev, text in (("drop", "warning", "packets dropped because the table was full"),
                           ("early_drop", "warning", "entries evicted early to make room"),
                           ("insert_failed", "warning", "insert races lost (packets dropped)"),
                           ("invalid", "info", "packets conntrack could not track (INVALID)"),
                           ("clash_resolve", "info", "insert races the kernel resolved without a drop: "
                                                     "older kernels drop these (DNS 5 s timeouts)")):
        if stats.get(key):
            out.append(Finding(f"conntrack: {key}", sev, f"conntrack {key} = {stats[key]}: {text}",
                               [f"/proc/net/stat/nf_conntrack {key} = {stats[key]}"],
                               *fix(Cmd("conntrack -S"), "; for DNS: options single-request-reopen, or NodeLocal "
                                    "DNSCache") if key in ("insert_failed", "clash_resolve") else (None, ())))
    return out


def check_ipam(node: Node, live_ips: set[str]) -> list[Finding]:
    if not node.cni_dir.is_dir():
        return [Finding("ipam", "unchecked", f"no host-local IPAM state at {node.cni_dir}")]
    out = []
    # The CNI's state directory: its entries are read, never followed or waited on.
    for net in sorted(p for p in _entries(node.cni_dir) if p.is_dir() and not p.is_symlink()):
        reserved = {}
        for f in _entries(net):
            try:
                ipaddress.ip_address(f.name)
            except ValueError:
                continue
            words = (_read_small(f) or "").split()
            reserved[f.name] = words[0] if words else "?"
        stale = sorted(ip for ip in reserved if ip not in live_ips)
        evidence = [f"{net}: {len(reserved)} addresses reserved, {len(reserved) - len(stale)} in use by live pods"]
        if stale:
            evidence += [f"{ip} held by container {reserved[ip][:12]}" for ip in stale[:5]]
            out.append(Finding("ipam", "warning",
                               f"{len(stale)} of {len(reserved)} IPAM reservations in network {net.name} belong to "
                               "no live pod (dead sandboxes): new pods fail with 'no IP addresses available' once "
                               "the range runs out", evidence,
                               *fix("after checking the containers are gone: ",
                                    Cmd("rm " + " ".join(str(net / ip) for ip in stale[:5])))))
        else:
            out.append(Finding("ipam", "ok", f"network {net.name}: every reservation belongs to a live pod", evidence))
    return out or [Finding("ipam", "unchecked", f"no network directories in {node.cni_dir}")]


def _entries(d: Path) -> list[Path]:
    try:
        return list(d.iterdir())
    except OSError:
        return []


def check_kube_proxy(node: Node) -> list[Finding]:
    points_text = read_in_netns(node.path, "iptables-save", "-t", "nat") or ""
    legacy = read_in_netns(node.path, "iptables-legacy-save", "-t", "nat") or ""
    nft = read_in_netns(node.path, "nft", "list", "tables") or ""
    ipvs = "kube-ipvs0" in _links(node)
    modes = []
    if ":KUBE-SERVICES" in points_text or ":KUBE-SERVICES" in legacy:
        modes.append("iptables")
    if ipvs:
        modes.append("ipvs")
    if "kube-proxy" in nft:
        modes.append("nftables")
    if modes:
        return [Finding("kube-proxy", "ok", f"kube-proxy rules present ({', '.join(modes)} mode)")]
    return [Finding("kube-proxy", "warning", "no kube-proxy rules (no KUBE-SERVICES chain, no kube-ipvs0, no "
                    "kube-proxy nft table): Services do not work on this node unless a replacement handles them",
                    ["iptables-save -t nat: no KUBE-SERVICES"],
                    *fix("check that kube-proxy runs on this node (",
                         Cmd("kubectl -n kube-system get pods -o wide | grep kube-proxy"), ")"))]


def check_hairpin(node: Node) -> list[Finding]:
    links = _links(node)
    off = [n for n, link in links.items() if _sub(link, "linkinfo").get("info_slave_kind") == "bridge"
           and _sub(link, "linkinfo", "info_slave_data").get("hairpin") is False
           and _sub(link, "linkinfo").get("info_kind") == "veth"]
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
        name = _str(link, "ifname")
        if kind != "ether" or name is None or name.startswith(("veth", "cni", "docker", "cali", "lxc", "flannel",
                                                               "cilium")):
            continue
        infos = link.get("addr_info")
        v4 = [a for a in (infos if isinstance(infos, list) else []) if isinstance(a, dict)
              and a.get("family") == "inet" and a.get("scope") == "global" and _str(a, "local")
              and _int(a.get("prefixlen")) is not None]
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
    entries = [e for e in node.ip_json("neigh", "show") if _str(e, "dst") and _str(e, "dev")]
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
        if _str(e, "lladdr") and _ipv4(e["dst"]) is not None:
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


def check_pod_routes(node: Node, pod_cidrs: dict[str, list[str]] | None, this_node: str | None) -> list[Finding]:
    """A route to every other node's pod CIDR (the API's Node.spec.podCIDRs)."""
    if pod_cidrs is None:
        return [Finding("pod routes", "unchecked", "no Kubernetes API: other nodes' pod CIDRs unknown")]
    missing, fine, unreadable = [], [], []
    for name, cidrs in sorted(pod_cidrs.items()):
        if name == this_node:
            continue
        for cidr in cidrs:
            try:
                probe = str(next(iter(ipaddress.ip_network(cidr, strict=False).hosts())))
            except (ValueError, TypeError, StopIteration):
                unreadable.append(f"{name}: {str(cidr)[:60]!r} is not a CIDR")
                continue
            route = node.ip_json("route", "get", probe)
            if route and route[0].get("type", "unicast") == "unicast":
                fine.append(f"{name} {cidr} via {route[0].get('gateway', '-')} dev {route[0].get('dev')}")
            else:
                missing.append(f"{name} {cidr}")
    if missing:
        return [Finding("pod routes", "error", f"no route to the pod CIDR of {len(missing)} node"
                        f"{'s' if len(missing) > 1 else ''}: pods there are unreachable from here (IP_INNOROUTES "
                        "at ip_error)", missing,
                        *fix("check the CNI on this node (flannel/calico routes), e.g. ",
                             Cmd(f"ip route add {missing[0].split()[1]} via <that node's tunnel address>")))]
    if unreadable and not fine:
        return [Finding("pod routes", "unchecked", "the Node objects' pod CIDRs could not be read", unreadable)]
    return [Finding("pod routes", "ok", f"routes to {len(fine)} other nodes' pod CIDRs", fine + unreadable)]


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else many or word + 's'}"


# -- Standing states that drop packets (issue 14): what explain/evidence.py reads for a
# drop's hint, checked here before any drop. -----------------------------------------

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
        out.append(Finding("bridge ports", "error", f"{_plural(len(stuck), 'bridge port')} up but not forwarding: "
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
    return out or [Finding("bridge ports", "ok", f"every port of {_plural(len(bridges), 'bridge')} forwards")]


def flannel_vnis(nodes: object) -> dict[str, int]:
    """Node objects (the API's JSON) -> the VXLAN VNI each node's flannel announces
    (annotation flannel.alpha.coreos.com/backend-data: {"VNI": 1, "VtepMAC": ...}).
    Node objects are anyone's text with node rights: any value reads as nothing."""
    out: dict[str, int] = {}
    for n in nodes if isinstance(nodes, list) else []:
        meta = _sub(n, "metadata")
        name, data = _str(meta, "name"), _sub(meta, "annotations").get("flannel.alpha.coreos.com/backend-data")
        if name is None or not isinstance(data, str) or len(data) > 4096:
            continue
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            continue
        vni = _int(doc.get("VNI")) if isinstance(doc, dict) else None
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
        fdb = "FDB unread" if v.fdb_entries is None else _plural(v.fdb_entries, "FDB entry", "FDB entries")
        remotes = f" ({', '.join(v.fdb_remotes)})" if v.fdb_remotes else ""
        lines.append(f"{d.name}: VNI {v.vni}, UDP port {v.port}, underlay {v.underlay or '-'}, "
                     f"remote {v.remote or '-'}, {fdb}{remotes}")
    out = []
    nowhere = [d for d in vx if d.up and d.vxlan is not None and not d.vxlan.remote and d.vxlan.fdb_entries == 0]
    if nowhere:
        out.append(Finding("overlay", "error", f"{_plural(len(nowhere), 'VXLAN device')} with no remote and no FDB "
                           "entry: packets routed to them go nowhere (NO_TX_TARGET at vxlan_xmit)",
                           [x for x in lines if x.split(":")[0] in {d.name for d in nowhere}],
                           *fix("check the CNI agent on this node (flannel, Calico): it writes each other node's "
                                "VTEP into the FDB (", Cmd(f"bridge fdb show dev {nowhere[0].name}"), ")")))
    if announced:
        here = {d.vxlan.vni for d in vx if d.vxlan is not None}
        other = {n: v for n, v in announced.items() if v not in here}
        if other:
            out.append(Finding("overlay", "error", f"{_plural(len(other), 'node')} announce a VNI that no VXLAN "
                               f"device here has ({', '.join(str(v) for v in sorted(here, key=str))}): their "
                               "overlay packets are dropped here (VXLAN_VNI_NOT_FOUND at vxlan_rcv)",
                               [f"{n}: VNI {v}" for n, v in sorted(other.items())[:10]] + lines,
                               "make the CNI's VNI equal on every node (flannel net-conf.json Backend.VNI, "
                               "Calico FelixConfiguration vxlanVNI)"))
    # Always listed: VNI and port are compared across nodes by whoever runs doctor on each.
    return out + [Finding("overlay", "info", "VXLAN devices (their VNI and port must be the same on every node: a "
                          "mismatch drops all overlay traffic, as VXLAN_VNI_NOT_FOUND or NO_SOCKET at the port)",
                          lines)]


@dataclass(frozen=True)
class ApiFacts:
    """What the Kubernetes API said, for the checks that compare it with the node."""

    services: tuple[ServiceInfo, ...] | None = None     # None: not read; `unread` says why
    pods: dict[int, PodInfo] = field(default_factory=dict)   # the API's pod of each sandbox (netns inode)
    unread: str = "no Kubernetes API (--kubeconfig)"


NO_API = ApiFacts()
# A Kubernetes object name (DNS-1123 subdomain): only such a name goes into a command we print.
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
SHOWN_SERVICES = 3      # per pod in the evidence, the rest counted


def pods_ipv6_off(node: Node) -> dict[int, list[str]]:
    """Per pod sandbox (netns inode): its devices other than lo with disable_ipv6=1.
    ip6_rcv_core() drops IPv6 arriving on such a device (IPV6DISABLED)."""
    off = {}
    for info in node.pods:
        sysctls = evidence.parse_sysctls(read_in_netns(info.path, *evidence.SYSCTL_CMD))
        devs = sorted(dev for (dev, name), on in sysctls.items()
                      if name == "disable_ipv6" and on and dev not in ("lo", "all", "default"))
        if devs:
            off[info.inode] = devs
    return off


def check_pod_ipv6(node: Node, api: ApiFacts = NO_API) -> list[Finding]:
    """IPv6 disabled in pods behind dual-stack Services (IPV6DISABLED)."""
    return pod_ipv6_findings(node, pods_ipv6_off(node), api)


def pod_ipv6_findings(node: Node, off: dict[int, list[str]], api: ApiFacts) -> list[Finding]:
    """The IPv6 check from what was read: `off` (pods_ipv6_off) and the API's
    Services and pods. A pod with IPv6 off is a problem where a Service sends it
    IPv6: kube-proxy DNATs the Service's IPv6 clusterIP to the pod's IPv6 address,
    and the pod's eth0 drops it. Without the Services, the node-level guess: some
    pod here has an IPv6 address, so IPv6 is in use."""
    labels = {info.inode: _pod_label(node, info) for info in node.pods}
    lines = {inode: f"{labels.get(inode, inode)}: {', '.join(devs[:4])} disable_ipv6=1"
             for inode, devs in sorted(off.items(), key=lambda kv: str(labels.get(kv[0], kv[0])))}
    enable = "enable IPv6 in the pod (net.ipv6.conf.eth0.disable_ipv6=0: the pod's or the runtime's sysctls)"
    if api.services is None:
        unread = f"Services not read ({api.unread})"
        if not any(":" in ip for p in node.pods for ip in p.ips):
            return [Finding("pod ipv6", "ok", f"no pod has an IPv6 address: a single-stack node; {unread}")]
        if lines:
            return [Finding("pod ipv6", "warning", f"IPv6 is disabled in {_plural(len(lines), 'pod')} of a "
                            "dual-stack node: IPv6 from dual-stack Services and peers is dropped there "
                            f"(IPV6DISABLED at ip6_rcv_core); {unread}: which Services reach them is unknown",
                            list(lines.values())[:10], f"{enable}, or make the Services that reach it SingleStack")]
        return [Finding("pod ipv6", "ok", f"IPv6 enabled in every pod ({_plural(len(node.pods), 'pod')}); {unread}")]
    v6 = [s for s in api.services if s.ipv6]
    behind: dict[int, list[ServiceInfo]] = {}
    unknown = []
    for inode in lines:
        pod = api.pods.get(inode)
        if pod is None:
            unknown.append(inode)
        elif chosen := [s for s in v6 if s.selects(pod)]:
            behind[inode] = chosen
    counted = f"{_plural(len(api.services), 'Service')} read, {len(v6)} with IPv6"
    if behind:
        evidence_lines = [f"{lines[inode]}; behind {_services_phrase(svcs)}" for inode, svcs in behind.items()]
        first = next(iter(behind.values()))[0]
        if first.primary_family == "IPv6":    # SingleStack keeps the primary family: IPv6 alone
            remedy = fix(f"{enable}: {first.key}'s primary family is IPv6, the pod must take IPv6")
        elif _K8S_NAME.fullmatch(first.namespace) and _K8S_NAME.fullmatch(first.name):
            remedy = fix(f"{enable}; or, if the Service needs no IPv6, make it SingleStack (it keeps its IPv4 "
                         "clusterIP): ", Cmd(f"kubectl -n {first.namespace} patch service {first.name} -p "
                                             """'{"spec":{"ipFamilyPolicy":"SingleStack"}}'"""))
        else:
            remedy = fix(f"{enable}; or, if the Service needs no IPv6, set its spec.ipFamilyPolicy to SingleStack")
        dual = all(s.ip_family_policy in DUAL_STACK_POLICIES for svcs in behind.values() for s in svcs)
        return [Finding("pod ipv6", "warning", f"IPv6 is disabled in {_plural(len(behind), 'pod')} behind "
                        f"{'dual-stack' if dual else 'IPv6'} Services: the IPv6 the Services send them is dropped "
                        "there (IPV6DISABLED at ip6_rcv_core), "
                        f"and clients of the Services' IPv6 address time out ({counted})",
                        evidence_lines[:10], *remedy)]
    if lines:
        rest = [lines[i] + ("; not a pod the API names: its Services unknown" if i in unknown else
                            "; no IPv6 Service selects it") for i in lines]
        return [Finding("pod ipv6", "info", f"IPv6 is disabled in {_plural(len(lines), 'pod')}, but no dual-stack "
                        f"Service selects {'it' if len(lines) == 1 else 'them'} ({counted}): only IPv6 sent to "
                        "their addresses directly is dropped (IPV6DISABLED)", rest[:10],
                        f"before making a Service that selects {'it' if len(lines) == 1 else 'them'} dual-stack: "
                        f"{enable}")]
    return [Finding("pod ipv6", "ok", f"IPv6 enabled in every pod ({_plural(len(node.pods), 'pod')}; {counted})")]


def _services_phrase(services: list[ServiceInfo]) -> str:
    """'dual-stack Service default/db-svc (RequireDualStack)', several named, the rest counted."""
    dual = all(s.ip_family_policy in DUAL_STACK_POLICIES for s in services)
    kind = "dual-stack Service" if dual else "IPv6 Service"
    named = ", ".join(f"{s.key} ({s.ipv6})" for s in services[:SHOWN_SERVICES])
    more = f" and {len(services) - SHOWN_SERVICES} more" if len(services) > SHOWN_SERVICES else ""
    return f"{kind}{'s' if len(services) > 1 else ''} {named}{more}"


def check_ipsec(node: Node) -> list[Finding]:
    x = node.facts().xfrm
    if x is None:
        return [Finding("ipsec", "unchecked", "could not read 'ip xfrm policy count' here")]
    total = sum(n for _d, n in x.policies)
    if total and x.states == 0:
        return [Finding("ipsec", "error", f"{_plural(total, 'IPsec policy', 'IPsec policies')} and no "
                        "IPsec state: traffic they match is dropped (XFRM_POLICY inbound; outbound a blackhole, "
                        "dst_discard_out)", [f"{d}: {n}" for d, n in x.policies] + ["states: 0"],
                        *fix("check the IPsec agent (Cilium or Calico encryption, strongSwan): it installs the "
                             "states; remove stale policies (", Cmd("ip xfrm policy"), ")"))]
    if total:
        return [Finding("ipsec", "ok", f"IPsec: {total} policies, {x.states} states")]
    return [Finding("ipsec", "ok", "no IPsec policy")]


def check_cgroup_programs(node: Node) -> list[Finding]:
    """BPF programs filtering packets on cgroups (the whole node's, whatever --netns says)."""
    progs = evidence.read_node().cgroup_programs
    if progs is None:
        return [Finding("cgroup bpf", "unchecked", "bpftool could not list cgroup programs (bpftool missing, or "
                        "no cgroup2 mount)")]
    skb = [p for p in progs if p.hook in ("cgroup_inet_ingress", "cgroup_inet_egress")]
    if not skb:
        return [Finding("cgroup bpf", "ok", "no BPF program filters packets on a cgroup")]
    pods = [p for p in skb if "kubepods" in p.where]
    return [Finding("cgroup bpf", "info", f"BPF programs filter packets on {_plural(len(skb), 'cgroup hook')} "
                    f"({len(pods)} of pods): what they drop shows as BPF_CGROUP_EGRESS or SOCKET_FILTER, "
                    "with the program named", [str(p) for p in skb[:10]],
                    *fix(Cmd("bpftool cgroup tree"), "; ", Cmd("bpftool prog show id N"),
                         " (its holder: the CNI or security agent)"))]


def run_all(node: Node, live_ips: set[str], *, api: ApiFacts = NO_API) -> list[Finding]:
    """Every node check; `api`: what the Kubernetes API said (Services, the pods
    of the sandboxes), for the checks that compare it with the node."""
    findings = check_kernel()
    for check in (check_sysctls, check_forward, check_mtu, check_conntrack, check_kube_proxy, check_hairpin,
                  check_addresses, check_neighbours, check_bridges, check_overlay,
                  functools.partial(check_pod_ipv6, api=api), check_ipsec, check_cgroup_programs):
        try:
            findings += check(node)
        # A check that cannot look says so and the others still run: doctor is run during
        # incidents, on node text nothing vouches for, and one surprise must not cost every answer.
        except Exception as exc:  # noqa: BLE001
            name = str(getattr(getattr(check, "func", check), "__name__", "check"))
            findings.append(Finding(name.removeprefix("check_"), "unchecked",
                                    f"could not check: {type(exc).__name__}: {exc}"))
    findings += check_ipam(node, live_ips)
    return findings


def problems(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity in ("error", "warning")]


def to_json(findings: list[Finding], node: Node) -> str:
    return json.dumps({"node": node.label, "findings": [asdict(f) for f in findings],
                       "problems": len(problems(findings))}, indent=2) + "\n"
