"""conntrack: a namespace's conntrack statistics, /proc/net/stat/nf_conntrack."""

from __future__ import annotations

import re

from .droppoints import Parsed

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
