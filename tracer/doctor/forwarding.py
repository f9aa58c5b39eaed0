"""forwarding: whether the node passes pod traffic on: ip_forward, br_netfilter, rp_filter,
the FORWARD chain (iptables and nftables), the conntrack table, kube-proxy's rules."""

from __future__ import annotations

import re

from ..explain.explainer import ct_stats, drop_points
from ..jsonvalues import string, sub
from ..node.nsexec import read_in_netns
from .findings import Cmd, Finding, fix
from .node import Node, links_by_name

CONNTRACK_FULL = 0.9


def _sysctl_int(v: str) -> int | None:
    """The number a /proc/sys file holds; None if it holds no number."""
    return int(v) if re.fullmatch(r"\s*-?\d{1,19}\s*", v) else None


def check_sysctls(node: Node) -> list[Finding]:
    out = []
    fwd = node.sysctl("net.ipv4.ip_forward")
    if fwd == "0":
        out.append(Finding("ip_forward", "error", f"{node.label}: net.ipv4.ip_forward=0: the node forwards no pod "
                           "traffic", ["net.ipv4.ip_forward = 0"], *fix(Cmd("sysctl -w net.ipv4.ip_forward=1"))))
    elif fwd is not None:
        out.append(Finding("ip_forward", "ok", "net.ipv4.ip_forward=1", ["net.ipv4.ip_forward = 1"]))
    bridges = [name for link in node.ip_json("-d", "link", "show")
               if sub(link, "linkinfo").get("info_kind") == "bridge" and (name := string(link, "ifname"))]
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
        name = string(link, "ifname")
        # A name is a path component under /proc/sys: one that could leave it is no interface's.
        if name is None or name == "lo" or "/" in name or name in (".", ".."):
            continue
        value = node.sysctl(f"net.ipv4.conf.{name}.rp_filter") or "0"
        if max(_sysctl_int(value) or 0, _sysctl_int(rp_all) or 0) == 1:
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


def check_conntrack(node: Node) -> list[Finding]:
    count, limit = node.sysctl("net.netfilter.nf_conntrack_count"), node.sysctl("net.netfilter.nf_conntrack_max")
    if count is None or limit is None:
        return [Finding("conntrack", "unchecked", "conntrack is not loaded here")]
    if _sysctl_int(count) is None or _sysctl_int(limit) is None:
        return [Finding("conntrack", "unchecked", "conntrack count or limit is not a number",
                        [f"nf_conntrack_count = {count[:40]!r}", f"nf_conntrack_max = {limit[:40]!r}"])]
    out = []
    used = (_sysctl_int(count) or 0) / max(_sysctl_int(limit) or 0, 1)
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


def check_kube_proxy(node: Node) -> list[Finding]:
    points_text = read_in_netns(node.path, "iptables-save", "-t", "nat") or ""
    legacy = read_in_netns(node.path, "iptables-legacy-save", "-t", "nat") or ""
    nft = read_in_netns(node.path, "nft", "list", "tables") or ""
    ipvs = "kube-ipvs0" in links_by_name(node)
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
