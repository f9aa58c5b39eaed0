"""rules: a namespace's rulesets read into drop points, and matched against a dropped packet.

A drop point is a place in a ruleset that can drop: a DROP/REJECT rule or a
chain's DROP policy, with its counter, from `iptables-save -c` (legacy and
nft backends) or `nft -j list ruleset`. Also here: /proc/net/stat/nf_conntrack.

Rulesets are written by parties netdrop does not trust (a pod with NET_ADMIN
writes its own), so every parser here reads what it can, skips the rest, and
says how much it skipped (Parsed); none raises on any input. Nothing here
runs a command: the text comes from the caller (explainer, doctor).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..kernel.decode import Drop

# A namespace's ruleset is its owner's: a pod can write 100,000 DROP rules. Past
# this many drop points per namespace the rest are not used (and that is said):
# parsing, memory and the per-flow match stay bounded.
MAX_DROP_POINTS = 10_000
DROP_TARGETS = ("DROP", "REJECT")

T = TypeVar("T")
# One match condition of a rule, parsed once: iptables (option, negated, argument),
# nftables (what, operator, value); ("?", ..., None) for one we do not evaluate.
Cond = tuple[str, object, object]
# A drop point's identity across samples: backend, family, table, chain, kind, rule.
PointKey = tuple[str, str, str, str, str, str | None]


@dataclass(frozen=True)
class Parsed(Generic[T]):
    """What a parser of node text could read, and what it could not."""

    value: T
    skipped: int = 0      # items it could not read (not used)
    beyond: int = 0       # items past MAX_DROP_POINTS (read, not used)


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
    packets: int | None = None   # None: no counter (an nftables base chain's policy, a named counter)
    conds: tuple[Cond, ...] = ()  # its match conditions, parsed once (_ipt_conds, _nft_conds)

    @property
    def key(self) -> PointKey:
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

    @property
    def fields(self) -> frozenset[str]:
        """The packet fields (Drop attributes) its conditions test."""
        tested: set[str] = set()
        for what, _, _ in self.conds:
            if self.backend == "nftables":
                proto, _, part = what.partition(" ")
                tested |= _NFT_FIELDS.get(part, frozenset()) if proto in _NFT_PROTOS.get(part, ()) else set()
                if what == "ct state":
                    tested.add("conntrack")
            else:
                tested |= _IPT_FIELDS.get(what, frozenset())
        return frozenset(tested)

    def matches(self, drop: Drop) -> bool | None:
        """Could this rule have matched the dropped packet? True: every condition
        we can read matches; False: one does not; None: it depends on matches we
        cannot evaluate (or it is a policy)."""
        return self.matches_packet(Packet.of(drop))

    def matches_packet(self, pkt: Packet) -> bool | None:
        """matches() for a packet parsed once (Packet.of), as the explainer tries it on every rule."""
        if not (self.backend == "nftables" or self.chain not in ("INPUT", "FORWARD", "OUTPUT")
                or self.chain == pkt.chain):
            return False
        if self.kind != "rule":
            return None
        if self.backend == "nftables":
            return _nft_matches(self.conds, pkt.drop)
        return _ipt_matches(self.conds, pkt)


# Which Drop attributes a condition reads (for the per-flow memo's key).
_IPT_FIELDS = {"-s": frozenset({"src"}), "-d": frozenset({"dst"}), "-p": frozenset({"proto"}),
               "--dport": frozenset({"dport"}), "--sport": frozenset({"sport"}), "--ctstate": frozenset({"conntrack"})}
_NFT_FIELDS = {"dport": frozenset({"dport", "proto"}), "sport": frozenset({"sport", "proto"}),
               "saddr": frozenset({"src"}), "daddr": frozenset({"dst"})}
_NFT_PROTOS = {"dport": ("udp", "tcp", "th"), "sport": ("udp", "tcp", "th"),
               "saddr": ("ip", "ip6"), "daddr": ("ip", "ip6")}

# ------------------------------------------------------------------ iptables

# xtables prints a string that needs it in double quotes, escaping `"` and `\`
# with a backslash (xtables_save_string, libxtables/xtables.c). A word is a run
# of plain characters, escapes and quoted parts; anything else (an unterminated
# quote, a trailing backslash) makes the rule unreadable.
_WORD = re.compile(r'\s+|((?:[^\s"\\]|\\.|"(?:[^"\\]|\\.)*")+)|(.)', re.S)
_UNQUOTE = re.compile(r'\\(.)|"', re.S)
_PORTS = re.compile(r"(\d{1,5})?(?::(\d{1,5})?)?")
# Counters are u64: 20 digits at most. Longer numbers are not a counter (and
# int() refuses strings of over 4300 digits).
_IPT_POLICY = re.compile(r"^:(\S+) (ACCEPT|DROP) \[(\d{1,20}):\d{1,20}\]")
_IPT_RULE = re.compile(r"^\[(\d{1,20}):\d{1,20}\] (-A (\S+) .*)$")
_IPT_DROP_POLICY = re.compile(r"^:\S+ DROP\b")
_IPT_DROP_JUMP = re.compile(r" -j (DROP|REJECT)\b")


def _words(rule: str) -> list[str] | None:
    words = []
    for m in _WORD.finditer(rule):
        if m.group(2) is not None:
            return None
        if m.group(1) is not None:
            words.append(_UNQUOTE.sub(lambda u: u.group(1) or "", m.group(1)))
    return words


def _after(words: list[str], option: str) -> str | None:
    """The argument of an option (its last occurrence: iptables keeps the last -j)."""
    for i in range(len(words) - 2, -1, -1):
        if words[i] == option:
            return words[i + 1]
    return None


def _ipt_conds(words: list[str]) -> tuple[Cond, ...]:
    """An iptables rule's conditions, parsed once: (option, negated, argument);
    ("?", False, None) for a match we do not evaluate (-i, -o, marks, sets ...)."""
    conds: list[Cond] = []
    i = 0
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


def _parsed(opt: str, arg: str | None) -> object:
    """Arguments parsed at load, not per packet: networks, port ranges, state
    sets. None: not readable, so the condition is not evaluated."""
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
            m = _PORTS.fullmatch(part)
            if not m or not part:
                return None
            lo, hi = m.group(1), m.group(2)
            ranges.append((int(lo or 0), int(hi or (lo if ":" not in part else 65535))))
        return tuple(ranges)
    if opt == "--ctstate":
        return frozenset(arg.upper().split(","))
    return arg


def parse_iptables_save(text: str, backend: str, family: str,
                        limit: int = MAX_DROP_POINTS) -> Parsed[tuple[DropPoint, ...]]:
    """Drop points of iptables-save -c output. A line that looks like a rule or
    a policy but cannot be read is skipped and counted."""
    points: list[DropPoint] = []
    skipped = beyond = 0
    table: str | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip() or None
            continue
        if line.startswith(":"):
            m = _IPT_POLICY.match(line)
            if m is None:
                skipped += bool(_IPT_DROP_POLICY.match(line))    # a DROP policy whose counters are unreadable
            elif m.group(2) == "DROP":
                if table is None:
                    skipped += 1
                elif len(points) >= limit:
                    beyond += 1
                else:
                    points.append(DropPoint(backend, family, table, m.group(1), "policy", "DROP",
                                            packets=int(m.group(3))))
            continue
        if not line.startswith("["):
            continue
        # Most rules of a node's ruleset jump or accept: only DROP or REJECT ones cost a parse.
        if "DROP" not in line and "REJECT" not in line:
            continue
        if len(points) >= limit:
            beyond += bool(_IPT_DROP_JUMP.search(line))    # counted, not parsed: the cost stays bounded
            continue
        m = _IPT_RULE.match(line)
        words = _words(m.group(2)) if m else None
        if m is None or words is None or table is None:
            skipped += 1
            continue
        target = _after(words, "-j")
        if target not in DROP_TARGETS:
            continue
        points.append(DropPoint(backend, family, table, m.group(3), "rule", target, rule=m.group(2),
                                comment=_after(words, "--comment"), packets=int(m.group(1)),
                                conds=_ipt_conds(words)))
    return Parsed(tuple(points), skipped, beyond)


# ------------------------------------------------------------------ nftables

# Statements that decide nothing about which packets the rule applies to; any
# other expression (xt matches, limits, quotas, ...) is a condition we cannot
# evaluate, so the rule is never taken as certain to match.
_NFT_NOT_FILTERS = frozenset({"counter", "log", "drop", "reject", "accept", "continue", "return", "jump", "goto",
                              "queue", "mangle", "snat", "dnat", "masquerade", "redirect", "notrack", "dup", "fwd",
                              "set", "comment"})
_SCALARS = (str, int, float, bool, type(None))


def _json_text(value: object) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        return "?"


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse_nft_json(text: str, skip_tables: Iterable[tuple[str, str]] = frozenset(),
                   limit: int = MAX_DROP_POINTS) -> Parsed[tuple[DropPoint, ...]]:
    """Native nftables drop points of `nft -j list ruleset`; tables iptables-nft
    already showed are skipped. A chain or rule of an unexpected shape is
    skipped and counted; a whole document that is not JSON counts as one."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return Parsed((), 1)
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return Parsed((), 1)
    skip = set(skip_tables)
    named = _named_counters(items)
    points: list[DropPoint] = []
    skipped = beyond = 0
    for item in items:
        if not isinstance(item, dict):
            skipped += 1
            continue
        chain, rule = item.get("chain"), item.get("rule")
        if chain is None and rule is None:
            continue           # tables, sets, counters, metainfo: not drop points
        obj = chain if chain is not None else rule
        fam = obj.get("family") if isinstance(obj, dict) else None
        table = obj.get("table") if isinstance(obj, dict) else None
        if not isinstance(obj, dict) or not isinstance(fam, str) or not isinstance(table, str):
            skipped += 1
            continue
        if (fam, table) in skip:
            continue
        point = _nft_policy(obj, fam, table) if chain is not None else _nft_rule(obj, fam, table, named)
        if point is None:
            continue
        if isinstance(point, str):      # "?": a chain or rule of a shape we cannot read
            skipped += 1
        elif len(points) >= limit:
            beyond += 1
        else:
            points.append(point)
    return Parsed(tuple(points), skipped, beyond)


_FAMILY_NAME = {"ip": "ipv4", "ip6": "ipv6"}


def _named_counters(items: list[object]) -> dict[tuple[str, str, str], int]:
    """Named counter objects ({"counter": {"family", "table", "name", "packets"}}):
    a rule that says {"counter": "name"} counts there."""
    out: dict[tuple[str, str, str], int] = {}
    for item in items:
        c = item.get("counter") if isinstance(item, dict) else None
        if isinstance(c, dict):
            family, table, name = c.get("family"), c.get("table"), c.get("name")
            packets = _count(c.get("packets"))
            if isinstance(family, str) and isinstance(table, str) and isinstance(name, str) and packets is not None:
                out[(family, table, name)] = packets
    return out


def _nft_policy(chain: dict[str, object], fam: str, table: str) -> DropPoint | str | None:
    if chain.get("policy") != "drop":
        return None
    name = chain.get("name")
    if not isinstance(name, str):
        return "?"
    return DropPoint("nftables", _FAMILY_NAME.get(fam, fam), table, name, "policy", "drop")


def _nft_rule(rule: dict[str, object], fam: str, table: str,
              named: Mapping[tuple[str, str, str], int]) -> DropPoint | str | None:
    """A drop point, None (not one), or "?" (unreadable)."""
    chain, expr = rule.get("chain"), rule.get("expr")
    if not isinstance(chain, str) or not isinstance(expr, list):
        return "?"
    exprs = [e for e in expr if isinstance(e, dict)]
    verdicts = [k for e in exprs for k in e if k in ("drop", "reject")]
    if not verdicts:
        return None
    packets = None
    for e in exprs:
        if "counter" in e:
            c = e["counter"]
            packets = _count(c.get("packets")) if isinstance(c, dict) else named.get((fam, table, c)) \
                if isinstance(c, str) else None
            break
    handle = rule.get("handle")
    comment = rule.get("comment")
    return DropPoint("nftables", _FAMILY_NAME.get(fam, fam), table, chain, "rule", verdicts[0],
                     rule=f"handle {_count(handle) if _count(handle) is not None else '?'}: {_nft_rule_text(expr)}",
                     comment=comment if isinstance(comment, str) else None, packets=packets,
                     conds=_nft_conds(expr))


def _nft_left(left: object) -> str | None:
    """What a match tests, as nft writes it ("udp dport", "ct state"), or None
    for what we do not evaluate (raw payload, meta, ...)."""
    if not isinstance(left, dict):
        return None
    payload, ct = left.get("payload"), left.get("ct")
    if isinstance(payload, dict):
        proto, fld = payload.get("protocol"), payload.get("field")
        return f"{proto} {fld}" if isinstance(proto, str) and isinstance(fld, str) else None
    if isinstance(ct, dict):
        key = ct.get("key")
        return f"ct {key}" if isinstance(key, str) else None
    return None


def _nft_value(right: object) -> object:
    """A match's right side, hashable: scalars as they are, sets and lists as
    tuples, anything else (prefixes, ranges) as its JSON text (kept, not evaluated)."""
    if isinstance(right, dict) and "set" in right:
        right = right["set"]
    if isinstance(right, list):
        return tuple(v if isinstance(v, _SCALARS) else _json_text(v) for v in right)
    return right if isinstance(right, _SCALARS) else _json_text(right)


def _nft_conds(expr: list[object]) -> tuple[Cond, ...]:
    conds: list[Cond] = []
    for e in expr:
        if not isinstance(e, dict) or len(e) != 1:
            conds.append(("?", "==", None))
            continue
        (kind, m), = e.items()
        if kind in _NFT_NOT_FILTERS:
            continue
        if kind != "match" or not isinstance(m, dict):
            conds.append(("?", "==", None))
            continue
        op = m.get("op", "==")     # nft omits an implicit == (libnftables JSON schema)
        conds.append((_nft_left(m.get("left")) or "?", op if isinstance(op, str) else "?", _nft_value(m.get("right"))))
    return tuple(conds)


def _nft_matches(conds: tuple[Cond, ...], drop: Drop) -> bool | None:
    return _all(_nft_cond(what, op, value, drop) for what, op, value in conds)


def _nft_cond(what: str, op: object, value: object, drop: Drop) -> bool | None:
    if op not in ("==", "!=", "in"):
        return None            # <, >, & ...: not evaluated
    proto, _, field_ = what.partition(" ")
    values = value if isinstance(value, tuple) else (value,)
    ok: bool | None
    if field_ in ("dport", "sport") and proto in ("udp", "tcp", "th"):
        port = drop.dport if field_ == "dport" else drop.sport
        ok = None if port is None else (proto in ("th", drop.proto) and port in values)
    elif field_ in ("saddr", "daddr") and proto in ("ip", "ip6") and isinstance(value, str):
        ok = _in_cidr(drop.src if field_ == "saddr" else drop.dst, value)
    elif what == "ct state":
        ok = None if drop.conntrack is None else (
            {"none": "invalid", "established-reply": "established",
             "related-reply": "related"}.get(drop.conntrack, drop.conntrack) in values)
    else:
        ok = None
    return ok if ok is None or op != "!=" else not ok


def _nft_rule_text(expr: list[object]) -> str:
    parts = []
    for e in expr:
        if not isinstance(e, dict) or not e:
            parts.append(_json_text(e))
            continue
        m = e.get("match")
        if isinstance(m, dict):
            what = _nft_left(m.get("left")) or _json_text(m.get("left"))
            op = m.get("op", "==")
            op_text = "" if op == "==" else op if isinstance(op, str) else _json_text(op)
            parts.append(f"{what} {op_text} {_json_text(m.get('right'))}".replace("  ", " "))
        elif "counter" in e:
            parts.append("counter")
        else:
            parts.append(str(next(iter(e))))
    return " ".join(parts)


# ------------------------------------------------------------------ matching

@dataclass(frozen=True)
class Packet:
    """What rule matching needs of a drop, parsed once per drop, not once per rule."""

    drop: Drop
    src: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    chain: str
    ct: str | None

    @classmethod
    def of(cls, drop: Drop) -> Packet:
        def ip(a: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
            try:
                return ipaddress.ip_address(a) if a else None
            except ValueError:
                return None
        return cls(drop, ip(drop.src), ip(drop.dst), path_chain(drop),
                   None if drop.conntrack is None else _CT_NAMES.get(drop.conntrack))


# A rule is indexed by one port only if it names this few (a range of
# thousands stays unindexed: it is tried on every packet).
INDEX_PORTS = 64
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RuleIndex:
    """A ruleset's drop points by what they match, so that a packet is tried
    only on the points that could match it: kube-proxy writes one rule per
    Service port (`-d 10.96.0.30/32 -p tcp --dport 80 -j REJECT`), and a
    node's thousands of them are a few candidates for any one packet.

    Each rule goes under one key it cannot match without: its destination
    address (a condition `-d A/32` or `ip daddr A`, not negated), else its
    destination ports (`--dport`, `th dport`: a few ports, not negated); the
    rest (policies, rules with neither) are tried on every packet. A packet
    with no destination address or port is tried on every point: conditions
    on them cannot be evaluated there, so no point is ruled out."""

    def __init__(self, points: Iterable[DropPoint]) -> None:
        self.points = tuple(points)
        self._ids = frozenset(id(p) for p in self.points)
        self._by_dst: dict[_Address, list[int]] = {}
        self._by_dport: dict[int, list[int]] = {}
        self._rest: list[int] = []
        for i, p in enumerate(self.points):
            addr, ports = _index_keys(p)
            if addr is not None:
                self._by_dst.setdefault(addr, []).append(i)
            elif ports:
                for port in ports:
                    self._by_dport.setdefault(port, []).append(i)
            else:
                self._rest.append(i)

    def holds(self, point: DropPoint) -> bool:
        """Is this very point (not an equal one from another sample) in the index?"""
        return id(point) in self._ids

    def candidates(self, pkt: Packet) -> list[DropPoint]:
        """The points that may match the packet, in ruleset order; every point
        left out would answer False to matches_packet."""
        port = pkt.drop.dport
        if pkt.dst is None or port is None:
            return list(self.points)
        found = self._rest + self._by_dst.get(pkt.dst, []) + self._by_dport.get(port, [])
        # A rule of several ports is listed under each: once is enough.
        return [self.points[i] for i in sorted(set(found))]

    def verdicts(self, pkt: Packet) -> list[tuple[DropPoint, bool | None]]:
        """(point, True) where every condition we can read matches, (point,
        None) where it depends on what we cannot evaluate: matches_packet of
        every point not False, in ruleset order."""
        out: list[tuple[DropPoint, bool | None]] = []
        for p in self.candidates(pkt):
            v = p.matches_packet(pkt)
            if v is not False:
                out.append((p, v))
        return out


def _index_keys(p: DropPoint) -> tuple[_Address | None, tuple[int, ...]]:
    """The destination address a rule cannot match without, else its destination ports; (None, ()) for neither."""
    if p.kind != "rule":
        return None, ()
    ports: tuple[int, ...] = ()
    for what, neg_or_op, arg in p.conds:
        if p.backend == "nftables":
            if neg_or_op not in ("==", "in"):
                continue
            proto, _, field_ = what.partition(" ")
            if field_ == "daddr" and proto in ("ip", "ip6") and isinstance(arg, str):
                addr = _host(arg)
                if addr is not None:
                    return addr, ()
            elif field_ == "dport" and proto in ("udp", "tcp", "th") and not ports:
                ports = _ports(arg if isinstance(arg, tuple) else (arg,))
        elif neg_or_op is False:
            if what == "-d" and isinstance(arg, (ipaddress.IPv4Network, ipaddress.IPv6Network)) \
                    and arg.prefixlen == arg.max_prefixlen:
                return arg.network_address, ()
            if what == "--dport" and isinstance(arg, tuple) and not ports \
                    and sum(max(0, hi - lo + 1) for lo, hi in arg) <= INDEX_PORTS:
                ports = tuple(port for lo, hi in arg for port in range(lo, hi + 1))
    return None, ports


def _host(text: str) -> _Address | None:
    """The one address a network of text holds (as _in_cidr reads it), else None."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return net.network_address if net.prefixlen == net.max_prefixlen else None


def _ports(values: tuple[object, ...]) -> tuple[int, ...]:
    """nft's port values, if all are plain ints and few: only an int equals a
    port here (a float 80.0 would too, so anything else leaves the rule unindexed)."""
    if len(values) > INDEX_PORTS or not all(type(v) is int for v in values):
        return ()
    return tuple(v for v in values if isinstance(v, int))


def _all(results: Iterable[bool | None]) -> bool | None:
    """Three-valued AND of a rule's conditions: False as soon as one fails,
    None if one could not be evaluated, else True."""
    known = True
    for ok in results:
        if ok is False:
            return False
        if ok is None:
            known = False
    return True if known else None


def _ipt_matches(conds: tuple[Cond, ...], pkt: Packet) -> bool | None:
    return _all(_ipt_cond(opt, bool(negate), arg, pkt) for opt, negate, arg in conds)


def _ipt_cond(opt: str, negate: bool, arg: object, pkt: Packet) -> bool | None:
    drop = pkt.drop
    ok: bool | None
    if opt in ("-s", "-d"):
        addr = pkt.src if opt == "-s" else pkt.dst
        ok = None if addr is None or not isinstance(arg, (ipaddress.IPv4Network, ipaddress.IPv6Network)) \
            else (addr.version == arg.version and addr in arg)
    elif opt == "-p":
        ok = None if drop.proto is None else drop.proto == arg
    elif opt in ("--dport", "--sport"):
        port = drop.dport if opt == "--dport" else drop.sport
        ok = None if port is None or not isinstance(arg, tuple) else any(lo <= port <= hi for lo, hi in arg)
    elif opt == "--ctstate":
        ok = None if pkt.ct is None or not isinstance(arg, frozenset) else pkt.ct in arg
    else:
        ok = None
    return ok if ok is None or not negate else not ok


def path_chain(drop: Drop) -> str:
    """Which filter chain a dropped packet was on its way through: made here
    (no device yet: OUTPUT), forwarded (a route out: FORWARD), or delivered here."""
    if drop.ifname is None and drop.out_ifname:
        return "OUTPUT"
    return "FORWARD" if drop.out_ifname else "INPUT"


def _in_cidr(addr: str | None, cidr: str | None) -> bool | None:
    if addr is None or cidr is None:
        return None
    try:
        return ipaddress.ip_address(addr) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None


# decode.py's conntrack states as iptables' --ctstate names them
_CT_NAMES = {"none": "INVALID", "new": "NEW", "established": "ESTABLISHED", "established-reply": "ESTABLISHED",
             "related": "RELATED", "related-reply": "RELATED", "untracked": "UNTRACKED"}

# ------------------------------------------------------------------ conntrack

# The kernel prints each per-CPU value as %08x (ct_cpu_seq_show,
# net/netfilter/nf_conntrack_standalone.c); counters are unsigned ints.
_HEX = re.compile(r"[0-9a-fA-F]{1,16}")


def parse_ct_stats(text: str) -> Parsed[dict[str, int]]:
    """/proc/net/stat/nf_conntrack: one row per CPU in hex; 'entries' is per
    namespace (not summed). A value that is not hex is skipped and counted."""
    lines = [x.split() for x in text.splitlines() if x.strip()]
    if not lines or lines[0][0] != "entries":
        return Parsed({}, 1 if lines else 0)
    header, rows = lines[0], lines[1:]
    skipped = sum(max(len(r) - len(header), 0) for r in rows)
    out: dict[str, int] = {}
    for i, name in enumerate(header):
        vals = []
        for r in rows:
            if i >= len(r):
                continue
            if _HEX.fullmatch(r[i]):
                vals.append(int(r[i], 16))
            else:
                skipped += 1
        out[name] = vals[0] if name == "entries" and vals else sum(vals)
    out["clash_resolve"] = out.pop("clashres", 0)
    return Parsed(out, skipped)
