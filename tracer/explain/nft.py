"""nft: native nftables drop points of `nft -j list ruleset` (libnftables' JSON schema)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from .droppoints import MAX_DROP_POINTS, Cond, DropPoint, Parsed

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
