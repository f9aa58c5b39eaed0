"""Parsers of node text never raise: the golden files, mutated.

Rulesets are written by pods with NET_ADMIN and /proc and tracefs files are
read as they come; whatever they hold, each parser returns what it could read
(and counts what it could not) instead of raising. The unmutated golden files
still give exactly what the other unit tests expect, so robustness lost nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer.explain import conntrack, droppoints, iptables, nft
from tracer.explain.explainer import NetnsView
from tracer.explain.matcher import matches
from tracer.kernel import facts

from .helpers import drop
from .strategies import mutated_lines

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
NF = GOLDEN / "netfilter"
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TEXT_FILES = {name: (NF / name).read_text() for name in
              ("iptables-nft-save.txt", "iptables-legacy-save.txt", "nf_conntrack.stat", "nft-ruleset.json")}
FORMAT = (GOLDEN / "kfree_skb.format").read_text()
KALLSYMS = (GOLDEN / "kallsyms").read_bytes()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def _paths(tree: Any, here: tuple = ()) -> list[tuple]:
    out = [here]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, here + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, here + (i,))
    return out


@st.composite
def mutated_nft(draw: st.DrawFn) -> str:
    """nft -j output with values replaced by JSON of another type, keys deleted,
    and the shapes a pod's ruleset can have (named counters, raw payloads)."""
    tree = json.loads(TEXT_FILES["nft-ruleset.json"])
    # a copy: mutated below
    tree["nftables"] += json.loads(json.dumps(draw(st.lists(st.sampled_from(SHAPES), max_size=3))))
    for _ in range(draw(st.integers(1, 5))):
        path = draw(st.sampled_from(_paths(tree)))
        if not path:
            continue
        parent = tree
        for k in path[:-1]:
            parent = parent[k]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return json.dumps(tree)


SHAPES = [
    {"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 9,
              "expr": [{"counter": "named"}, {"drop": None}]}},
    {"counter": {"family": "inet", "table": "t", "name": "named", "packets": 7, "bytes": 1}},
    {"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 10, "expr": [
        {"match": {"op": "==", "left": {"payload": {"base": "nh", "offset": 0, "len": 8}}, "right": 69}},
        {"drop": None}]}},
    {"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 11, "expr": [
        {"match": {"op": "<", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 1024}},
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": {"set": ["invalid", {"x": 1}]}}},
        [], "drop", {"reject": {"type": "icmpx"}}]}},
    {"chain": ["not", "a", "dict"]},
    {"rule": {"family": ["ip"], "table": {}, "chain": 3}},
]

DROPS = [drop(), drop(proto="tcp", dport=5355, src="10.244.1.10", out_ifname="ext0", conntrack="none"),
         drop(ifname=None, out_ifname="eth0", src=None, dst=None, sport=None, dport=None, proto=None),
         drop(family=6, src="fd00::1", dst="fd00::2", conntrack="new")]


def _explain(points: tuple[droppoints.DropPoint, ...]) -> None:
    """What the parsed points are used for must not raise either."""
    view = NetnsView([(p, 1) for p in points[:2]], [p for p in points if p.packets], list(points))
    for d in DROPS:
        for p in view.likely_points(d):
            p.describe()
            _ = (p.no_endpoints_service, p.drops_invalid, p.key, p.where)


@FAST
@given(st.data())
def test_iptables_save_survives_any_mutation(data: st.DataObject) -> None:
    for name, backend in (("iptables-nft-save.txt", "iptables-nft"), ("iptables-legacy-save.txt", "iptables-legacy")):
        parsed = iptables.parse_iptables_save(data.draw(mutated_lines(TEXT_FILES[name])), backend, "ipv4")
        assert parsed.skipped >= 0 and all(isinstance(p.table, str) for p in parsed.value)
        _explain(parsed.value)


@FAST
@given(mutated_nft())
def test_nft_json_survives_structural_mutation(text: str) -> None:
    for skip in (frozenset(), {("ip", "filter"), ("ip", "nat")}):
        parsed = nft.parse_nft_json(text, skip)
        assert all(isinstance(p.chain, str) and (p.packets is None or p.packets >= 0) for p in parsed.value)
        hash(parsed.value)       # conditions stay hashable whatever the right side held
        _explain(parsed.value)


@FAST
@given(mutated_lines(TEXT_FILES["nft-ruleset.json"]))
def test_nft_json_survives_text_mutation(text: str) -> None:
    _explain(nft.parse_nft_json(text).value)


@FAST
@given(mutated_lines(TEXT_FILES["nf_conntrack.stat"]))
def test_conntrack_stats_survive_any_mutation(text: str) -> None:
    parsed = conntrack.parse_ct_stats(text)
    assert all(isinstance(v, int) and v >= 0 for v in parsed.value.values())


@FAST
@given(mutated_lines(FORMAT))
def test_tracepoint_format_survives_any_mutation(text: str) -> None:
    facts.format_fields(text)
    assert all(isinstance(k, int) for k in facts.reasons_from_format(text))
    facts.reasons_from_btf_dump("enum skb_drop_reason {" + text + "}")


@FAST
@given(st.data())
def test_kallsyms_survives_any_mutation(data: st.DataObject) -> None:
    text = data.draw(mutated_lines(KALLSYMS.decode()))
    raw = text.encode("utf-8", "surrogateescape") + data.draw(st.binary(max_size=40))
    fd, name = tempfile.mkstemp()
    try:
        os.write(fd, raw)
        os.close(fd)
        ks = facts.Kallsyms.load(name)
        ks.lookup(0xffffffff81ff7890)
    finally:
        os.unlink(name)


def test_unreadable_items_are_counted_not_raised() -> None:
    bad = ('*filter\n:FORWARD DROP [' + "1" * 30 + ':0]\n[1:1] -A FORWARD -m comment --comment "open -j DROP\n'
           '[1:1] -A FORWARD -p tcp --dport 80:x -j DROP\n[5:0] -A FORWARD -j ACCEPT\n')
    parsed = iptables.parse_iptables_save(bad, "iptables-nft", "ipv4")
    # The policy's counter and the quoting are unreadable; a port we cannot read only leaves that condition open.
    assert parsed.skipped == 2 and [p.rule for p in parsed.value] == ["-A FORWARD -p tcp --dport 80:x -j DROP"]
    assert matches(parsed.value[0], drop(proto="tcp", dport=80, out_ifname="x")) is None
    assert nft.parse_nft_json("[1]").skipped == 1 and nft.parse_nft_json("{" * 100_000).skipped == 1
    shapes = nft.parse_nft_json(json.dumps({"nftables": SHAPES}))
    assert shapes.skipped == 2        # the chain that is a list, the rule whose names are not strings
    named, raw, lt = shapes.value
    assert named.packets == 7         # a named counter counts where its counter object says
    assert matches(raw, drop()) is None and matches(lt, drop(proto="tcp", dport=80)) is None
    assert conntrack.parse_ct_stats("entries insert_failed\n00000002 zz\n").value == {"entries": 2, "insert_failed": 0,
                                                                            "clash_resolve": 0}


def test_quoting_as_iptables_prints_it() -> None:
    line = r'[3:0] -A INPUT -p udp -m comment --comment "say \"-j ACCEPT\" \\ here" -j DROP'
    (p,) = iptables.parse_iptables_save(f"*filter\n{line}\n", "iptables-nft", "ipv4").value
    assert p.comment == r'say "-j ACCEPT" \ here' and p.target == "DROP" and p.packets == 3


def test_huge_ruleset_is_bounded(tmp_path: Path) -> None:
    rules = "\n".join(f"[{i}:0] -A INPUT -s 10.0.{i % 256}.{i // 256 % 256}/32 -j DROP" for i in range(100_000))
    parsed = iptables.parse_iptables_save(f"*filter\n{rules}\n", "iptables-nft", "ipv4")
    assert len(parsed.value) == droppoints.MAX_DROP_POINTS and parsed.beyond == 100_000 - droppoints.MAX_DROP_POINTS


def test_kallsyms_junk_lines_are_skipped(tmp_path: Path) -> None:
    f = tmp_path / "kallsyms"
    f.write_bytes(b"zzzz T bad\n\xff\xfe binary\nffffffff81ff7890 T ip_forward\n" + b"1" * 40 + b" T long\n"
                  b"ffffffff81ff7990 tT odd\n")
    ks = facts.Kallsyms.load(f)
    assert ks.lookup(0xffffffff81ff7891) == "ip_forward" and ks.skipped == 4
    assert not facts.Kallsyms.load(tmp_path / "missing").usable


def test_format_that_is_not_utf8(tmp_path: Path) -> None:
    d = tmp_path / "events" / "skb" / "kfree_skb"
    d.mkdir(parents=True)
    (d / "format").write_bytes(FORMAT.encode() + b"\n\xff\xfe\n")
    text = facts.tracepoint_format(tmp_path, "skb", "kfree_skb")
    assert text is not None and text.startswith(FORMAT) and "\ufffd" in text
