"""iptables: drop points of `iptables-save -c` output (the legacy and the nft backend alike)."""

from __future__ import annotations

import ipaddress
import re

from .droppoints import DROP_TARGETS, MAX_DROP_POINTS, Cond, DropPoint, Parsed

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
