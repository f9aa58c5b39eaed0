"""What several unit tests build alike: a Drop, the golden events grouped, a
capture's summary, main() run with StringIO streams, an HTTP request, golden records for the
pipeline. Hypothesis strategies are in strategies.py."""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tracer import cli
from tracer.env import Environment
from tracer.explain.classify import classify
from tracer.groups import Group, Groups
from tracer.kernel import decode, event, facts, pktfacts
from tracer.kernel.decode import Drop
from tracer.kernel.loader import Hook, Stats
from tracer.pods.attribute import NO_POD, Attribution, PodRef
from tracer.sinks import capture, console
from tracer.sinks.summary import build

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def drop(**kw: Any) -> Drop:
    """A Drop of plain UDP 10.0.0.1:1234 -> 10.0.0.2:53, kw changed."""
    base: dict[str, Any] = dict(
        time=datetime(2026, 1, 1, tzinfo=UTC), reason="NOT_SPECIFIED", reason_raw=2,
        location="somewhere", location_raw=1, netns=4026531840, ifindex=2, ifname="eth0",
        dev_mtu=1500, out_ifindex=None, out_ifname=None, mtu=None, family=4, proto="udp",
        src="10.0.0.1", dst="10.0.0.2", sport=1234, dport=53, len=100, df=False, fragment=False,
        icmp_sent=None)
    base.update(kw)
    return Drop(**base)


# ---------------------------------------------------------------- the golden events, grouped

def golden_groups() -> Groups:
    """tests/golden/events.jsonl decoded and grouped, the n-th event's group counted 10 * (n + 1)."""
    reasons = facts.reasons_from_format((GOLDEN / "kfree_skb.format").read_text())
    dec = decode.Decoder(reasons, facts.Kallsyms.load(GOLDEN / "kallsyms"), mono_to_wall=0.0)
    groups = Groups(dec)
    counts = {}
    for n, line in enumerate((GOLDEN / "events.jsonl").read_text().splitlines()):
        raw = event.NdEvent.from_buffer_copy(bytes.fromhex(json.loads(line)["raw_hex"]))
        d = dec.decode(raw)
        groups.add_event(d, classify(d))
        counts[(raw.netns, raw.reason_raw, raw.location_raw, raw.pod_raw, raw.facts)] = 10 * (n + 1)
    groups.update_counts({k: 0 for k in counts}, now=0.0)
    groups.update_counts(counts, now=2.0)
    return groups


def golden_drops() -> tuple[Groups, list[Drop]]:
    groups = golden_groups()
    return groups, [g.latest for g in groups.groups.values()]


def render_text(groups: Groups, view: Any, width: int = 200, height: int | None = None, state: Any = None) -> str:
    """What a file or pipe gets (height None), or a terminal of width x height."""
    con = Console(record=True, width=width, height=height or 25, color_system=None, file=io.StringIO())
    con.print(console.render(groups, view, state, fill=height is not None))
    return con.export_text()


# ---------------------------------------------------------------- a capture's summary.json

WEB = PodRef("default", "web-0", "uid-web", "node-a")
DB = PodRef("default", "db-0", "uid-db", "node-a")
LONG_HINT = "the hint of a group that goes on and on " * 40
NETLINK = pktfacts.make(pktfacts.PACKET_HOST, event.ND_DST_NOT_IP)           # a netlink socket's queue


def built_summary(tmp_path: Path) -> dict[str, Any]:
    """summary.json of a capture of the golden events (210 drops, 6 events) into tmp_path."""
    groups, drops = golden_drops()
    rec = capture.Recorder(capture.prepare_output(str(tmp_path)), pcap_snaplen=128)
    for d in drops:
        rec.emit(d, classify(d), NO_POD)
    rec.tick(groups, datetime(2026, 11, 21, 6, 38, 5, tzinfo=UTC))
    rec.close()
    return build.build(groups, rec, ended=datetime(2026, 11, 21, 6, 40, tzinfo=UTC),
                       reason_ended="duration reached", stats=Stats(210, 6, 0, 204, 0),
                       hooks=[Hook("tracepoint skb:kfree_skb", True)], filters=["netns node1"], pods=None,
                       node="node-a", names={4026532177: "node1"})


def summary_with_benign(tmp_path: Path, peer_direction: str = "to-pod") -> dict[str, Any]:
    """The golden groups, the MTU group from web to db with a very long hint, plus two benign
    groups no event reached (counts only): 300 queue purges and 12 IPv6 multicast drops."""
    groups, drops = golden_drops()
    mtu = next(g for g in groups.groups.values() if g.category == "mtu")
    mtu.attribution = Attribution(WEB, "from-pod", DB, peer_direction)
    mtu.hint = LONG_HINT
    groups.groups[(4026532177, 104, 1, 0, True)] = Group(4026532177, "QUEUE_PURGE", "skb_queue_purge_reason",
                                                         "other", count=300, benign=True)
    groups.groups[(4026532177, 2, 2, 0, True)] = Group(4026532177, "NOT_SPECIFIED", "ip6_mc_input", "other", count=12,
                                                       benign=True)
    rec = capture.Recorder(capture.prepare_output(str(tmp_path / "cap")))
    purge = dataclasses.replace(drops[0], reason="QUEUE_PURGE", location="skb_queue_purge_reason", sport=1,
                                facts=NETLINK)
    for d in [*drops, purge]:                       # the purge's event makes a benign top flow
        rec.emit(d, classify(d), NO_POD)
    rec.tick(groups, datetime(2026, 11, 21, 6, 38, 5, tzinfo=UTC))
    rec.close()
    return build.build(groups, rec, ended=datetime(2026, 11, 21, 6, 40, tzinfo=UTC),
                       reason_ended="duration reached", stats=Stats(522, 6, 0, 0, 0),
                       hooks=[Hook("tracepoint skb:kfree_skb", True)], filters=[], pods=None, node="node-a",
                       names={})


# ---------------------------------------------------------------- main() as a user meets it

def only_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """For tests that run main() on the process's own streams."""
    return only_line(capsys.readouterr().err)


class Run:
    """main(argv, env) with StringIO streams: the exit status and what a user saw."""

    def __init__(self, argv: list[str], **env: object) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        self.env = Environment(stdout=self.out, stderr=self.err, **env)  # type: ignore[arg-type]
        self.status = cli.main(argv, self.env)

    @property
    def error(self) -> str:
        assert self.out.getvalue() == ""
        return only_line(self.err.getvalue())


def request(port: int, path: str, method: str = "GET", timeout: float = 10.0,
            **headers: str) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to 127.0.0.1:port: the status, the headers and the body."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, headers=headers)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def wait_for(condition: Any, seconds: float = 10.0) -> bool:
    """True once condition() is; False after seconds (a bound for a broken test, not a timing claim)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---------------------------------------------------------------- golden records for the event pipeline

REASONS = facts.reasons_from_format((GOLDEN / "kfree_skb.format").read_text())
KALLSYMS = facts.Kallsyms.load(GOLDEN / "kallsyms")
RECORDS = [bytes.fromhex(json.loads(line)["raw_hex"]) for line in (GOLDEN / "events.jsonl").read_text().splitlines()]
NETNS = 4026532999


class Collect:
    """A sink that keeps what it was given: (drop, verdict, attribution)."""

    def __init__(self) -> None:
        self.got: list[tuple[object, ...]] = []

    def emit(self, drop: object, verdict: object, who: object) -> None:
        self.got.append((drop, verdict, who))

    def flush(self) -> None:
        pass


def record(base: int, ts: int, sport: int | None, pod: int) -> bytes:
    """Golden record number base, in namespace NETNS, at ts, with this pod tag (and source port)."""
    raw = event.NdEvent.from_buffer_copy(RECORDS[base])
    raw.ts_ns_raw = ts
    raw.pod_raw = pod
    raw.netns = NETNS
    if sport is not None:
        raw.sport = sport
    return bytes(raw)
