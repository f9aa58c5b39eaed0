"""report: one node's NetdropCaptureReport, built from its summary, written and read back.

An agent writes one report per capture it takes part in (docs/captures.md).
Its size is bounded whatever the node saw (lists capped, strings cut), so the
API server's objects never grow with drops, flows or the number of nodes:
each node has its own report, and the capture object none of their data.
parse_report() reads any JSON value (the plugin reads what agents wrote; the
API server only checked the CRD's schema, if that).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

from ..sinks.summary.schema import Summary
from .spec import API_VERSION, GROUP, KIND, MAX_NAME, Capture

REPORT_KIND = "NetdropCaptureReport"
REPORT_PLURAL = "netdropcapturereports"
CAPTURE_LABEL = f"{GROUP}/capture"
NODE_LABEL = f"{GROUP}/node"

State = Literal["Recording", "Done", "Failed"]
STATES: tuple[State, ...] = ("Recording", "Done", "Failed")
FINAL: frozenset[str] = frozenset({"Done", "Failed"})

MAX_PODS = 20
MAX_GROUPS = 20
MAX_FLOWS = 10
MAX_FILES = 8
MAX_SHORT = 128         # reasons, locations, categories
MAX_VERDICT = 128       # the registry's verdicts are one short sentence (60 characters at most)
MAX_HINT = 512
MAX_MESSAGE = 1024
MAX_URL = 512
MAX_LABEL = 63          # a label value, a namespace's name (and a name segment kept whole)
MAX_POD = MAX_LABEL + 1 + MAX_NAME      # namespace/name
MAX_ADDRESS = 45        # an IPv6 address as text, the longest an address is
REPORT_SECONDS = 10.0   # a running capture's report is written at most this often per node
RECORDING_GROUPS = 5    # groups a Recording report carries, without hints (what `kubectl netdrop get` shows)
# The most a report's object (report_object, compact JSON) can be: every list full, every string at its
# limit (tests/unit/captures/test_report.py builds it). etcd takes 1.5 MiB per object.
MAX_REPORT_BYTES = 52 << 10


def cut(text: object, n: int) -> str:
    """text as a string of at most n characters (an ellipsis marks the cut)."""
    s = text if isinstance(text, str) else "" if text is None else str(text)
    return s if len(s) <= n else s[:n - 1] + "…"


def _hashed(text: str, n: int) -> str:
    """text if it fits in n characters, else its start and a hash (distinct texts stay distinct)."""
    if len(text) <= n:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return text[:n - 11].rstrip(".-") + "-" + digest


def label_value(text: str) -> str:
    """A label value for a name (at most 63 characters, starting and ending alphanumeric)."""
    return _hashed(text, MAX_LABEL).strip(".-_") or "x"


def report_name(capture: str, node: str) -> str:
    """<capture>.<node>, both DNS names; shortened with a hash to a name's 253 characters."""
    return _hashed(f"{capture}.{node}", MAX_NAME)


@dataclass(frozen=True)
class FileEntry:
    name: str
    bytes: int


@dataclass(frozen=True)
class PodCount:
    namespace: str
    name: str
    packets: int


@dataclass(frozen=True)
class GroupRow:
    pod: str | None             # namespace/name, None: no pod (the node's own drops)
    category: str
    reason: str | None
    location: str | None
    packets: int
    verdict: str
    hint: str


@dataclass(frozen=True)
class FlowRow:
    proto: str | None
    src: str | None
    sport: int | None
    dst: str | None
    dport: int | None
    pod: str | None
    category: str
    events: int


@dataclass(frozen=True)
class Report:
    capture: str
    capture_uid: str
    node: str
    state: State
    message: str = ""
    window_from: str | None = None      # RFC 3339
    window_to: str | None = None
    updated: str | None = None
    endpoint: str = ""
    cert_sha256: str = ""
    files: tuple[FileEntry, ...] = ()
    packets: int = 0                    # exact, the kernel's counters
    events_seen: int = 0
    events_lost: int = 0
    pods: tuple[PodCount, ...] = ()
    pods_omitted: int = 0
    groups: tuple[GroupRow, ...] = ()
    groups_omitted: int = 0
    flows: tuple[FlowRow, ...] = field(default=())

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def to_json(self) -> dict[str, Any]:
        return {
            "capture": {"name": self.capture, "uid": self.capture_uid},
            "node": self.node, "state": self.state, "message": cut(self.message, MAX_MESSAGE),
            # Times only once known: the CRD's schema types them as strings, not nullable.
            **{k: v for k, v in (("from", self.window_from), ("to", self.window_to), ("updated", self.updated))
               if v is not None},
            "endpoint": cut(self.endpoint, MAX_URL), "certSHA256": self.cert_sha256,
            "files": [{"name": f.name, "bytes": f.bytes} for f in self.files[:MAX_FILES]],
            "total": {"packets": self.packets},
            "events": {"seen": self.events_seen, "lost": self.events_lost},
            "pods": [{"namespace": p.namespace, "name": p.name, "packets": p.packets} for p in self.pods[:MAX_PODS]],
            "podsOmitted": self.pods_omitted,
            "groups": [_known({"pod": g.pod, "category": g.category, "reason": g.reason, "location": g.location,
                               "packets": g.packets, "verdict": g.verdict, "hint": g.hint})
                       for g in self.groups[:MAX_GROUPS]],
            "groupsOmitted": self.groups_omitted,
            "flows": [_known({"proto": f.proto, "src": f.src, "sport": f.sport, "dst": f.dst, "dport": f.dport,
                              "pod": f.pod, "category": f.category, "events": f.events})
                      for f in self.flows[:MAX_FLOWS]],
        }


def _known(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its unknown fields: the CRD's schema types them as strings and
    integers, not null (a node's own drops have no pod, an unnamed location none)."""
    return {k: v for k, v in row.items() if v is not None}


def report_object(capture: Capture, report: Report) -> dict[str, Any]:
    """The whole NetdropCaptureReport object to create or replace: owned by its capture."""
    return {
        "apiVersion": API_VERSION, "kind": REPORT_KIND,
        "metadata": {
            "name": report_name(capture.name, report.node), "namespace": capture.namespace,
            "labels": {CAPTURE_LABEL: label_value(capture.name), NODE_LABEL: label_value(report.node)},
            # Deleting the capture deletes its reports (the garbage collector follows
            # ownerReferences). Not blockOwnerDeletion: that needs delete on the owner.
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": KIND, "name": capture.name,
                                 "uid": capture.uid}],
        },
        "report": report.to_json(),
    }


def recording(report: Report) -> Report:
    """What a Recording report carries: the totals, the state and the top
    RECORDING_GROUPS groups without their hints; the pods, every group with its
    hint and the flows come once, in the final report. A capture writes a
    Recording report every REPORT_SECONDS per node while it runs and one final
    report per node: this keeps most writes, and every watch event they make for
    the plugin, about 1 KiB rather than up to MAX_REPORT_BYTES."""
    return replace(report, pods=(), pods_omitted=report.pods_omitted + len(report.pods),
                   groups=tuple(replace(g, hint="") for g in report.groups[:RECORDING_GROUPS]),
                   groups_omitted=report.groups_omitted + max(0, len(report.groups) - RECORDING_GROUPS), flows=())


# -- from a node's summary.json --

def from_summary(base: Report, summary: Summary, files: tuple[FileEntry, ...]) -> Report:
    """base with the counts, pods, groups and flows of the node's summary (tracer/sinks/summary/build.py)."""
    totals = summary.get("totals", {})
    groups = sorted(summary.get("groups", []), key=lambda g: -int(g.get("count", 0)))
    verdict_of = {v.get("category"): v for v in summary.get("verdicts", [])}
    pods: dict[tuple[str, str], int] = {}
    rows = []
    for g in groups:
        pod = g.get("pod") or {}
        ns, name = pod.get("namespace"), pod.get("name")
        label = f"{cut(ns, MAX_LABEL)}/{cut(name, MAX_NAME)}" if ns and name else None
        if ns and name:
            pods[(ns, name)] = pods.get((ns, name), 0) + int(g.get("count", 0))
        v = verdict_of.get(g.get("category")) or {}
        rows.append(GroupRow(label, cut(g.get("category"), MAX_SHORT), _opt(g.get("reason")),
                             _opt(g.get("location")), int(g.get("count", 0)), cut(v.get("verdict"), MAX_VERDICT),
                             cut(g.get("hint") or v.get("hint"), MAX_HINT)))
    ranked_pods = sorted(pods.items(), key=lambda kv: (-kv[1], kv[0]))
    flows = [FlowRow(_opt(f.get("proto"), 16), _opt(f.get("src"), MAX_ADDRESS), f.get("sport"),
                     _opt(f.get("dst"), MAX_ADDRESS), f.get("dport"), _opt(f.get("pod"), MAX_POD),
                     cut(f.get("category"), MAX_SHORT), int(f.get("events", 0)))
             for f in summary.get("top_flows", [])[:MAX_FLOWS]]
    return replace(base, files=files[:MAX_FILES], packets=int(totals.get("drops", 0)),
                   events_seen=int(totals.get("events_delivered", 0)), events_lost=int(totals.get("events_lost", 0)),
                   pods=tuple(PodCount(cut(ns, MAX_LABEL), cut(n, MAX_NAME), c)
                              for (ns, n), c in ranked_pods[:MAX_PODS]),
                   pods_omitted=max(0, len(ranked_pods) - MAX_PODS),
                   groups=tuple(rows[:MAX_GROUPS]), groups_omitted=max(0, len(rows) - MAX_GROUPS),
                   flows=tuple(flows))


def _opt(v: object, n: int = MAX_SHORT) -> str | None:
    return None if v is None else cut(v, n)


# -- read back (untrusted) --

def _int(v: object) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 63 else 0


def _str(v: object, n: int) -> str:
    return cut(v, n) if isinstance(v, str) else ""


def _ostr(v: object, n: int) -> str | None:
    return cut(v, n) if isinstance(v, str) else None


def _oint(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 65535 else None


def _dict(v: object) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: object, n: int) -> list[dict[str, Any]]:
    return [x for x in v[:n] if isinstance(x, dict)] if isinstance(v, list) else []


def parse_report(obj: object) -> Report | None:
    """A NetdropCaptureReport object -> Report; None if it is not one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("report"), dict):
        return None
    r: dict[str, Any] = obj["report"]
    cap = _dict(r.get("capture"))
    state = r.get("state")
    node = _str(r.get("node"), MAX_NAME)
    if state not in STATES or not node:
        return None
    total, events = _dict(r.get("total")), _dict(r.get("events"))
    return Report(
        capture=_str(cap.get("name"), MAX_NAME), capture_uid=_str(cap.get("uid"), MAX_NAME), node=node,
        state=cast(State, state), message=_str(r.get("message"), MAX_MESSAGE),
        window_from=_ostr(r.get("from"), 40), window_to=_ostr(r.get("to"), 40), updated=_ostr(r.get("updated"), 40),
        endpoint=_str(r.get("endpoint"), MAX_URL), cert_sha256=_str(r.get("certSHA256"), 64),
        files=tuple(FileEntry(_str(f.get("name"), MAX_SHORT), _int(f.get("bytes")))
                    for f in _list(r.get("files"), MAX_FILES)),
        packets=_int(total.get("packets")), events_seen=_int(events.get("seen")), events_lost=_int(events.get("lost")),
        pods=tuple(PodCount(_str(p.get("namespace"), MAX_LABEL), _str(p.get("name"), MAX_NAME), _int(p.get("packets")))
                   for p in _list(r.get("pods"), MAX_PODS)),
        pods_omitted=_int(r.get("podsOmitted")),
        groups=tuple(GroupRow(_ostr(g.get("pod"), MAX_POD), _str(g.get("category"), MAX_SHORT),
                              _ostr(g.get("reason"), MAX_SHORT), _ostr(g.get("location"), MAX_SHORT),
                              _int(g.get("packets")), _str(g.get("verdict"), MAX_VERDICT),
                              _str(g.get("hint"), MAX_HINT))
                     for g in _list(r.get("groups"), MAX_GROUPS)),
        groups_omitted=_int(r.get("groupsOmitted")),
        flows=tuple(FlowRow(_ostr(f.get("proto"), 16), _ostr(f.get("src"), MAX_ADDRESS), _oint(f.get("sport")),
                            _ostr(f.get("dst"), MAX_ADDRESS), _oint(f.get("dport")), _ostr(f.get("pod"), MAX_POD),
                            _str(f.get("category"), MAX_SHORT), _int(f.get("events")))
                    for f in _list(r.get("flows"), MAX_FLOWS)),
    )
