"""netfilter: which rule, policy or conntrack decision dropped a packet.

The kernel reports all of them as NETFILTER_DROP. What tells them apart:
  - the location: nft_do_chain frees the packet itself (nftables and
    iptables-nft); legacy xtables, conntrack and other hooks return NF_DROP
    and nf_hook_slow frees it;
  - the rule and policy counters (iptables-legacy-save -c, iptables-nft-save -c,
    nft -j list ruleset): the drop points whose counters grew in the interval;
  - the packet's conntrack state (no entry at a netfilter drop: INVALID) and
    the namespace's conntrack statistics (/proc/net/stat/nf_conntrack:
    insert_failed, drop, early_drop, invalid, clash_resolve).

Everything here only reads: `iptables-save` and `nft list` inside the
namespace, never a change. The Explainer samples in a background thread, for
the namespaces where netfilter drops were seen, and keeps its latest view.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_SECONDS = 1.0
ACTIVE_SECONDS = 10.0   # rule counters are sampled while netfilter drops were seen this recently
IDLE_SECONDS = 5.0      # and otherwise this often, so that ruleset changes are seen
CT_STATS = ("entries", "clashres", "found", "new", "invalid", "ignore", "delete", "chainlength", "insert",
            "insert_failed", "drop", "early_drop", "icmp_error", "expect_new", "expect_create", "expect_delete",
            "search_restart")
IPTABLES_SAVES = (("iptables-legacy", "ipv4", "iptables-legacy-save"), ("iptables-legacy", "ipv6", "ip6tables-legacy-save"),
                  ("iptables-nft", "ipv4", "iptables-nft-save"), ("iptables-nft", "ipv6", "ip6tables-nft-save"))
DROP_TARGETS = ("DROP", "REJECT")


@dataclass(frozen=True)
class DropPoint:
    """A place in the ruleset that can drop: a DROP/REJECT rule or a chain's DROP policy."""

    backend: str                 # iptables-legacy, iptables-nft, nftables
    family: str                  # ipv4, ipv6, inet, bridge, ...
    table: str
    chain: str
    kind: str                    # "rule" or "policy"
    target: str                  # DROP, REJECT, drop, reject
    rule: str | None = None      # the rule as the tool prints it
    comment: str | None = None
    packets: int | None = None   # None: no counter (an nftables base chain's policy)
    conds: tuple = ()            # its match conditions, parsed once (_ipt_conds, _nft_conds)

    @property
    def key(self) -> tuple:
        return (self.backend, self.family, self.table, self.chain, self.kind, self.rule)

    @property
    def where(self) -> str:
        return f"{self.table}/{self.chain} ({self.backend}, {self.family})"

    def describe(self) -> str:
        if self.kind == "policy":
            return f"the {self.chain} chain's policy {self.target} in table {self.table} ({self.backend})"
        return f"rule `{self.rule}` in {self.table}/{self.chain} ({self.backend})"

    @property
    def no_endpoints_service(self) -> str | None:
        """kube-proxy's rule for a Service without endpoints names it in its comment."""
        m = re.match(r"(\S+/\S+?)(?::\S+)? has no endpoints", self.comment or "")
        return m.group(1) if m else None

    @property
    def drops_invalid(self) -> bool:
        return bool(self.rule and re.search(r"(--ctstate|ct state) (INVALID|invalid)", self.rule))

    def matches(self, drop) -> bool | None:
        """Could this rule have matched the dropped packet? True: every condition
        we can read matches; False: one does not; None: it depends on matches we
        cannot evaluate (or it is a policy)."""
        return self._match(Packet.of(drop))

    def _match(self, pkt: "Packet") -> bool | None:
        if not (self.backend == "nftables" or self.chain not in ("INPUT", "FORWARD", "OUTPUT")
                or self.chain == pkt.chain):
            return False
        if self.kind != "rule":
            return None
        if self.backend == "nftables":
            return _nft_matches(self.conds, pkt.drop)
        return _ipt_matches(self.conds, pkt)


def _ipt_conds(rule: str) -> tuple:
    """An iptables rule's conditions, parsed once: (option, negated, argument);
    ("?", False, None) for a match we do not evaluate (-i, -o, marks, sets ...)."""
    try:
        words = shlex.split(rule)
    except ValueError:
        return (("?", False, None),)
    conds, i = [], 0
    while i < len(words):
        w, arg = words[i], words[i + 1] if i + 1 < len(words) else None
        if w in ("-s", "-d", "-p", "--dport", "--sport", "--ctstate"):
            conds.append((w, i > 0 and words[i - 1] == "!", _parsed(w, arg)))
        elif w in ("-A", "-j", "-m", "--comment", "--reject-with", "--to-destination", "--mode",
                   "--probability", "--to-source"):
            pass
        elif w.startswith("-") and w != "!":
            conds.append(("?", False, None))
        else:
            i += 1
            continue
        i += 2
    return tuple(conds)


def _parsed(opt: str, arg: str | None):
    """Arguments parsed at load, not per packet: networks, port ranges, state sets."""
    import ipaddress

    if arg is None:
        return None
    if opt in ("-s", "-d"):
        try:
            return ipaddress.ip_network(arg, strict=False)
        except ValueError:
            return None
    if opt in ("--dport", "--sport"):
        ranges = []
        for part in arg.split(","):
            lo, _, hi = part.partition(":")
            ranges.append((int(lo or 0), int(hi or lo or 65535)))
        return tuple(ranges)
    if opt == "--ctstate":
        return frozenset(arg.upper().split(","))
    return arg


@dataclass(frozen=True)
class Packet:
    """What rule matching needs of a drop, parsed once per drop, not once per rule."""

    drop: object
    src: object
    dst: object
    chain: str
    ct: str | None

    @classmethod
    def of(cls, drop) -> "Packet":
        import ipaddress

        def ip(a):
            return ipaddress.ip_address(a) if a else None
        return cls(drop, ip(drop.src), ip(drop.dst), path_chain(drop),
                   None if drop.conntrack is None else _CT_NAMES.get(drop.conntrack))


def _all(results) -> bool | None:
    """Three-valued AND of a rule's conditions: False as soon as one fails,
    None if one could not be evaluated, else True."""
    known = True
    for ok in results:
        if ok is False:
            return False
        if ok is None:
            known = False
    return True if known else None


def _ipt_matches(conds: tuple, pkt: Packet) -> bool | None:
    return _all(_ipt_cond(opt, negate, arg, pkt) for opt, negate, arg in conds)


def _ipt_cond(opt: str, negate: bool, arg, pkt: Packet) -> bool | None:
    drop = pkt.drop
    if opt in ("-s", "-d"):
        addr = pkt.src if opt == "-s" else pkt.dst
        ok = None if addr is None or arg is None else (addr.version == arg.version and addr in arg)
    elif opt == "-p":
        ok = None if drop.proto is None else drop.proto == arg
    elif opt in ("--dport", "--sport"):
        port = drop.dport if opt == "--dport" else drop.sport
        ok = None if port is None or arg is None else any(lo <= port <= hi for lo, hi in arg)
    elif opt == "--ctstate":
        ok = None if pkt.ct is None else pkt.ct in arg
    else:
        ok = None
    return ok if ok is None or not negate else not ok


_IPT_POLICY = re.compile(r"^:(\S+) (ACCEPT|DROP) \[(\d+):\d+\]")
_IPT_RULE = re.compile(r"^\[(\d+):\d+\] (-A (\S+) .*)$")


def parse_iptables_save(text: str, backend: str, family: str) -> list[DropPoint]:
    points, table = [], None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            continue
        m = _IPT_POLICY.match(line)
        if m and m.group(2) == "DROP":
            points.append(DropPoint(backend, family, table, m.group(1), "policy", "DROP", packets=int(m.group(3))))
            continue
        m = _IPT_RULE.match(line)
        if not m:
            continue
        try:
            words = shlex.split(m.group(2))
        except ValueError:
            continue
        target = words[words.index("-j") + 1] if "-j" in words[:-1] else None
        if target not in DROP_TARGETS:
            continue
        comment = words[words.index("--comment") + 1] if "--comment" in words[:-1] else None
        points.append(DropPoint(backend, family, table, m.group(3), "rule", target, rule=m.group(2),
                                comment=comment, packets=int(m.group(1)), conds=_ipt_conds(m.group(2))))
    return points


def parse_nft_json(text: str, skip_tables: set[tuple[str, str]] = frozenset()) -> list[DropPoint]:
    """Native nftables drop points; tables iptables-nft already showed are skipped."""
    try:
        items = json.loads(text).get("nftables", [])
    except ValueError:
        return []
    family_name = {"ip": "ipv4", "ip6": "ipv6"}
    points = []
    for item in items:
        chain, rule = item.get("chain"), item.get("rule")
        obj = chain or rule
        if not obj or (obj["family"], obj["table"]) in skip_tables:
            continue
        fam = family_name.get(obj["family"], obj["family"])
        if chain and chain.get("policy") == "drop":
            points.append(DropPoint("nftables", fam, chain["table"], chain["name"], "policy", "drop"))
        elif rule:
            verdicts = [k for e in rule.get("expr", []) for k in e if k in ("drop", "reject")]
            if not verdicts:
                continue
            counter = next((e["counter"] for e in rule["expr"] if "counter" in e), None)
            comment = rule.get("comment")
            points.append(DropPoint("nftables", fam, rule["table"], rule["chain"], "rule", verdicts[0],
                                    rule=f"handle {rule['handle']}: {_nft_rule_text(rule['expr'])}",
                                    comment=comment, packets=counter["packets"] if counter else None,
                                    conds=_nft_conds(rule["expr"])))
    return points


def _nft_conds(expr: list[dict]) -> tuple:
    conds = []
    for e in expr:
        m = e.get("match")
        if not m:
            continue
        left = m["left"]
        if "payload" in left:
            what = f"{left['payload'].get('protocol')} {left['payload'].get('field')}"
        elif "ct" in left:
            what = f"ct {left['ct'].get('key')}"
        else:
            what = "?"
        right = m["right"]
        if isinstance(right, dict) and "set" in right:
            right = tuple(right["set"])
        elif isinstance(right, list):
            right = tuple(right)
        elif isinstance(right, dict):
            right = json.dumps(right, sort_keys=True)   # prefixes, ranges: kept, not evaluated
        conds.append((what, m["op"], right))
    return tuple(conds)


def _nft_matches(conds: tuple, drop) -> bool | None:
    return _all(_nft_cond(what, op, value, drop) for what, op, value in conds)


def _nft_cond(what: str, op: str, value, drop) -> bool | None:
    proto, _, field_ = what.partition(" ")
    values = value if isinstance(value, tuple) else (value,)
    if field_ in ("dport", "sport") and proto in ("udp", "tcp", "th"):
        port = drop.dport if field_ == "dport" else drop.sport
        ok = None if port is None else (proto in ("th", drop.proto) and port in values)
    elif field_ in ("saddr", "daddr") and proto in ("ip", "ip6") and isinstance(value, str):
        addr = drop.src if field_ == "saddr" else drop.dst
        ok = None if addr is None else _in_cidr(addr, value)
    elif what == "ct state":
        ok = None if drop.conntrack is None else (
            {"none": "invalid", "established-reply": "established",
             "related-reply": "related"}.get(drop.conntrack, drop.conntrack) in values)
    else:
        ok = None
    return ok if ok is None or op != "!=" else not ok


def _nft_rule_text(expr: list[dict]) -> str:
    parts = []
    for e in expr:
        if "match" in e:
            m = e["match"]
            left = m["left"]
            what = (f"{left['payload']['protocol']} {left['payload']['field']}" if "payload" in left
                    else f"ct {left['ct']['key']}" if "ct" in left else json.dumps(left))
            parts.append(f"{what} {m['op'] if m['op'] != '==' else ''} {json.dumps(m['right'])}".replace("  ", " "))
        elif "counter" in e:
            parts.append("counter")
        else:
            parts.append(next(iter(e)))
    return " ".join(parts)


def path_chain(drop) -> str:
    """Which filter chain a dropped packet was on its way through: made here
    (no device yet: OUTPUT), forwarded (a route out: FORWARD), or delivered here."""
    if drop.ifname is None and drop.out_ifname:
        return "OUTPUT"
    return "FORWARD" if drop.out_ifname else "INPUT"


def _in_cidr(addr: str | None, cidr: str | None):
    import ipaddress

    if addr is None or cidr is None:
        return None
    try:
        return ipaddress.ip_address(addr) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None


# decode.py's conntrack states as iptables' --ctstate names them
_CT_NAMES = {"none": "INVALID", "new": "NEW", "established": "ESTABLISHED", "established-reply": "ESTABLISHED",
             "related": "RELATED", "related-reply": "RELATED", "untracked": "UNTRACKED"}


def parse_ct_stats(text: str) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack: one row per CPU in hex; 'entries' is per namespace (not summed)."""
    lines = [x.split() for x in text.splitlines() if x.strip()]
    if not lines or lines[0][0] != "entries":
        return {}
    header, rows = lines[0], lines[1:]
    out = {}
    for i, name in enumerate(header):
        vals = [int(r[i], 16) for r in rows if i < len(r)]
        out[name] = vals[0] if name == "entries" and vals else sum(vals)
    out["clash_resolve"] = out.pop("clashres", 0)
    return out


def read_in_netns(path: str | None, *cmd: str, timeout: float = 5) -> str | None:
    """stdout of a read-only command run in a namespace (None: it failed or is missing)."""
    full = (["nsenter", f"--net={path}"] if path else []) + list(cmd)
    try:
        res = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def drop_points(path: str | None) -> list[DropPoint]:
    points, seen_nft_tables = [], set()
    for backend, family, tool in IPTABLES_SAVES:
        out = read_in_netns(path, tool, "-c")
        if out:
            found = parse_iptables_save(out, backend, family)
            points += found
            if backend == "iptables-nft":
                nft_family = "ip" if family == "ipv4" else "ip6"
                seen_nft_tables |= {(nft_family, t[1:].strip()) for t in out.splitlines() if t.startswith("*")}
    out = read_in_netns(path, "nft", "-j", "list", "ruleset")
    if out:
        points += parse_nft_json(out, seen_nft_tables)
    return points


def read_file_in_netns(path: str | None, name: str) -> str | None:
    """A /proc file as a namespace sees it; our own namespace's without a process."""
    if path is None:
        try:
            return Path(name).read_text()
        except OSError:
            return None
    return read_in_netns(path, "cat", name)


def ct_stats(path: str | None) -> dict[str, int] | None:
    out = read_file_in_netns(path, "/proc/net/stat/nf_conntrack")
    return parse_ct_stats(out) if out else None


def namespace_paths() -> dict[int, str | None]:
    """Every namespace we can see -> a path nsenter takes (None for our own)."""
    import os

    from .nodeview import discover_namespaces

    own = os.stat("/proc/self/ns/net").st_ino
    return {ino: None if ino == own else found["path"] for ino, found in discover_namespaces().items()}


@dataclass(frozen=True)
class Context:
    """What classify may know beyond the event itself."""

    view: "NetnsView | None" = None            # the drop's namespace
    bridge_nf_call_iptables: str | None = None  # the node's sysctl, if read


@dataclass
class NetnsView:
    """What the Explainer last learned about one namespace."""

    grown: list[tuple[DropPoint, int]] = field(default_factory=list)   # since the previous sample
    nonzero: list[DropPoint] = field(default_factory=list)             # counters > 0 overall
    points: list[DropPoint] = field(default_factory=list)
    ct: dict[str, int] | None = None
    ct_delta: dict[str, int] = field(default_factory=dict)
    ct_growth: dict[str, int] = field(default_factory=dict)            # summed since the first sample
    sampled_at: float = 0.0
    rules_at: float = 0.0                                              # when the ruleset was last read
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def conntrack_active(self) -> bool:
        return bool(self.ct and (self.ct.get("entries") or self.ct.get("new") or self.ct.get("found")
                                 or self.ct.get("invalid")))

    def likely_points(self, drop=None) -> list[DropPoint]:
        """The drop points that explain a drop: those whose counters grew lately
        and could match it, else those whose conditions match it, else those
        ever used that could match it. Remembered per flow: a node's ruleset has
        thousands of rules, and a storm is one flow many times."""
        key = None if drop is None else (drop.src, drop.dst, drop.proto, drop.sport, drop.dport,
                                         drop.conntrack, drop.ifname is None, drop.out_ifname is None)
        if key in self._memo:
            return self._memo[key]
        if len(self._memo) > 4096:
            self._memo.clear()
        self._memo[key] = found = self._likely(drop)
        return found

    def _likely(self, drop) -> list[DropPoint]:
        pkt = Packet.of(drop) if drop is not None else None
        verdict = {} if pkt is None else {id(p): p._match(pkt) for p in self.points}

        def fits(p):
            return pkt is None or verdict.get(id(p), p._match(pkt)) is not False
        grown = [p for p, _ in self.grown if fits(p)]
        if grown:
            return grown
        certain = [p for p in self.points if verdict.get(id(p)) is True]
        if certain:
            return certain
        return [p for p in self.nonzero if fits(p)]


class Explainer:
    """Samples rule counters and conntrack statistics of the namespaces where
    netfilter drops happen (and of the node's), in a background thread."""

    def __init__(self, paths: dict[int, str | None] | None = None, node_netns: int | None = None,
                 sample=lambda path, rules: (drop_points(path) if rules else None, ct_stats(path)),
                 period: float = SAMPLE_SECONDS):
        self.paths = paths if paths is not None else namespace_paths()   # inode -> path (None: our own)
        self.node_netns = node_netns
        self._sample = sample
        self.period = period
        self.views: dict[int, NetnsView] = {}
        self.notices: dict[int, str] = {}   # netns -> latent risk seen there (clash_resolve)
        self.bridge_nf: str | None = None   # the node's net.bridge.bridge-nf-call-iptables
        self._wanted: set[int] = {node_netns} if node_netns is not None else set()
        self._last_want: dict[int, float] = {}
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None

    def want(self, netns: int) -> None:
        """Called from the event path: cheap, never blocks."""
        self._last_want[netns] = time.monotonic()
        if netns not in self._wanted:
            self._wanted.add(netns)
            self._kick.set()

    def view(self, netns: int) -> NetnsView | None:
        return self.views.get(netns)

    def context(self, netns: int) -> Context:
        return Context(self.views.get(netns), self.bridge_nf)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="netdrop-netfilter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread:
            self._thread.join(timeout=5)

    def sample_now(self) -> None:
        if self._wanted - self.paths.keys():
            self.paths.update(namespace_paths())
        if self.node_netns in self.paths:
            out = read_file_in_netns(self.paths[self.node_netns], "/proc/sys/net/bridge/bridge-nf-call-iptables")
            self.bridge_nf = out.strip() if out else None
        now = time.monotonic()
        for netns in list(self._wanted):
            if netns not in self.paths:
                continue
            old = self.views.get(netns)
            # Reading a ruleset costs (kube-proxy nodes carry thousands of rules): only
            # once, then while netfilter drops are being seen there. Statistics always.
            active = now - self._last_want.get(netns, float("-inf")) < ACTIVE_SECONDS
            stale = old is None or now - old.rules_at >= IDLE_SECONDS
            points, ct = self._sample(self.paths[netns], active or stale)
            rules_at = now if points is not None or old is None else old.rules_at
            if points is None:
                points = old.points
            before = {p.key: p.packets for p in old.points} if old else {}
            grown = [(p, p.packets - before.get(p.key, 0)) for p in points
                     if p.packets is not None and old is not None and p.packets > before.get(p.key, 0)]
            ct_delta = {k: v - old.ct.get(k, 0) for k, v in ct.items()} if ct and old and old.ct else {}
            growth = dict(old.ct_growth) if old else {}
            for k, v in ct_delta.items():
                if v > 0 and k != "entries":
                    growth[k] = growth.get(k, 0) + v
            self.views[netns] = NetnsView(grown, [p for p in points if p.packets], points, ct, ct_delta, growth,
                                          time.monotonic(), rules_at)
            if growth.get("clash_resolve") and netns not in self.notices:
                self.notices[netns] = (f"conntrack resolved insert races (clash_resolve +{growth['clash_resolve']}) "
                                       "without a drop: concurrent packets of one flow (DNS A and AAAA queries "
                                       "from one socket) raced to create the same entry; kernels before 5.x "
                                       "drop the loser (insert_failed), which shows as 5-second DNS timeouts")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_now()
            except Exception:      # a namespace gone mid-sample: next round
                pass
            self._kick.wait(self.period)
            self._kick.clear()
