"""droppoints: what the ruleset parsers produce: drop points, and how much they could not read.

A drop point is a place in a ruleset that can drop: a DROP/REJECT rule or a
chain's DROP policy, with its counter, from `iptables-save -c` (legacy and nft
backends; iptables.py) or `nft -j list ruleset` (nft.py). Rulesets are written
by parties netdrop does not trust (a pod with NET_ADMIN writes its own), so
every parser reads what it can, skips the rest, and says how much it skipped
(Parsed); none raises on any input. Nothing here runs a command: the text comes
from the caller (explainer, doctor).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

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
    conds: tuple[Cond, ...] = ()  # its match conditions, parsed once by its parser

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
