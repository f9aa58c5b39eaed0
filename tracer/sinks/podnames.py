"""podnames: pod names as short as a column needs, never two pods alike.

A pod's generated name says its workload, then what sets the pod apart:
`web-7d9f8c6b5-x2k4q` is Deployment web's ReplicaSet hash and the pod's own
suffix. Cut at its end, as a column cuts text, every pod of a Deployment reads
"web-7d9f8c6b5-…": exactly the part that tells them apart is gone. So a name
too long for its width becomes, among the pods on the screen:

- its workload's name ("web"), when no other pod shown belongs to that workload
  (a pod without a controller is its own workload: it goes on to the cut);
- else the middle cut: its start, "…", and its end, where the pod's own suffix is
  ("we…x2k4q");
- and where two pods would still read alike, a number after the cut ("we…4q#2").

A name that fits stays whole. Two different names never get the same text, at any
of the widths asked for (a row names a pod alone or beside its peer: two widths).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

CUT = "…"
MIN_WIDTH = 6     # below it a name says nothing anyway; widths are raised to it


@dataclass(frozen=True)
class Name:
    """A pod's name, its workload's name if known, and a prefix both keep whole
    when cut ("default/": the namespace, where the column shows it)."""

    name: str
    workload: str | None = None
    prefix: str = ""

    @property
    def full(self) -> str:
        return self.prefix + self.name

    def cut(self, width: int, tag: str = "") -> str:
        """The middle cut, then tag; the prefix kept while the name keeps MIN_WIDTH, else left out."""
        room = width - len(tag) - len(self.prefix)
        if room >= MIN_WIDTH:
            return self.prefix + middle_cut(self.name, room) + tag
        return middle_cut(self.name, max(2, width - len(tag))) + tag


def end_cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + CUT


def middle_cut(text: str, width: int) -> str:
    """The start and the end, a third and two thirds: a generated name's end tells pods apart."""
    if len(text) <= width:
        return text
    head = (width - 1) // 3
    tail = width - 1 - head
    return text[:head] + CUT + (text[-tail:] if tail else "")


def _at(pods: Mapping[K, Name], width: int) -> dict[K, str]:
    """Each pod's text at one width (stages 1 and 2 of the module's docstring)."""
    members: dict[str, int] = {}
    for n in pods.values():
        if n.workload:
            members[n.prefix + n.workload] = members.get(n.prefix + n.workload, 0) + 1
    fulls = {n.full for n in pods.values()}
    out: dict[K, str] = {}
    for key, n in pods.items():
        # A pod without a controller is its own workload: its name is all there is to cut.
        workload = n.prefix + n.workload if n.workload and n.workload != n.name else None
        if len(n.full) <= width:
            out[key] = n.full
        elif workload and members[workload] == 1 and workload not in fulls - {n.full}:
            room = width - len(n.prefix)
            out[key] = n.prefix + end_cut(n.workload or "", room) if room >= MIN_WIDTH else end_cut(workload, width)
        else:
            out[key] = n.cut(width)
    return out


def short_names(pods: Mapping[K, Name], widths: Iterable[int]) -> dict[tuple[K, int], str]:
    """(pod, width) -> its text, at most width long (MIN_WIDTH at least). Two pods
    with different full texts never share a text, whichever widths they are shown at."""
    asked = tuple(widths)
    found: dict[tuple[K, int], str] = {}
    for width in sorted({max(MIN_WIDTH, w) for w in asked}):
        found.update({(key, width): text for key, text in _at(pods, width).items()})
    # Who a text names: the first pod (in a stable order) that got it; the others get numbered cuts.
    owner: dict[str, str] = {}
    clashes: list[tuple[K, int]] = []
    for (key, width), text in sorted(found.items(), key=lambda kv: (pods[kv[0][0]].full, kv[0][1])):
        if owner.setdefault(text, pods[key].full) != pods[key].full:
            clashes.append((key, width))
    for key, width in clashes:
        full, n = pods[key].full, 2
        while True:
            text = pods[key].cut(width, f"#{n}")
            if owner.setdefault(text, full) == full:
                break
            n += 1
        found[(key, width)] = text
    return {(key, width): found[(key, max(MIN_WIDTH, width))] for key in pods for width in asked}
