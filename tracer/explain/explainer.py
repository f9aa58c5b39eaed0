"""explainer: samples rule counters and conntrack statistics of the namespaces where netfilter drops happen.

The kernel reports rule drops, policy drops and conntrack's refusals all as
NETFILTER_DROP. What tells them apart lives outside the event: which rule or
policy counter grew, and the namespace's conntrack statistics. The Explainer
reads them in a background thread (never from the event path), for the
namespaces where netfilter drops were seen and the node's, and keeps its
latest view of each (NetnsView); classify gets it as a Context.

Everything here only reads: `iptables-save -c` and `nft -j list ruleset`
inside the namespace (nsexec), never a change.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..kernel.decode import Drop
from ..node.nsexec import read_file_in_netns, read_in_netns
from ..node.namespaces import discover_namespaces
from .conntrack import parse_ct_stats
from .droppoints import MAX_DROP_POINTS, DropPoint, Parsed
from .iptables import parse_iptables_save
from .matcher import Packet, RuleIndex, matches_packet, path_chain, tested_fields
from .nft import parse_nft_json

SAMPLE_SECONDS = 1.0
ACTIVE_SECONDS = 10.0   # rule counters are sampled while netfilter drops were seen this recently
IDLE_SECONDS = 5.0      # and otherwise this often, so that ruleset changes are seen
MAX_WANTED = 4096       # namespaces asked for from the event path, at most
MEMO_FLOWS = 4096       # per-flow answers remembered per namespace view, at most
# (backend, family, the tool that prints its ruleset with counters)
IPTABLES_SAVES = (("iptables-legacy", "ipv4", "iptables-legacy-save"),
                  ("iptables-legacy", "ipv6", "ip6tables-legacy-save"),
                  ("iptables-nft", "ipv4", "iptables-nft-save"), ("iptables-nft", "ipv6", "ip6tables-nft-save"))


@dataclass(frozen=True)
class Ruleset:
    """A namespace's drop points from every tool, and what could not be used."""

    points: tuple[DropPoint, ...] = ()
    unread: tuple[tuple[str, int], ...] = ()   # (tool, items it printed that could not be read)
    beyond: int = 0                            # drop points past MAX_DROP_POINTS, not used

    @property
    def skipped(self) -> int:
        return sum(n for _, n in self.unread)


def drop_points(path: str | None) -> Ruleset:
    """The drop points of the namespace at path (None: ours) from every tool
    present: iptables-save -c of both backends and families, then the native
    nftables tables (those iptables-nft did not already show)."""
    points: list[DropPoint] = []
    unread: list[tuple[str, int]] = []
    beyond = 0
    seen_nft_tables: set[tuple[str, str]] = set()
    for backend, family, tool in IPTABLES_SAVES:
        out = read_in_netns(path, tool, "-c")
        if out:
            found = parse_iptables_save(out, backend, family, MAX_DROP_POINTS - len(points))
            points += found.value
            beyond += found.beyond
            if found.skipped:
                unread.append((tool, found.skipped))
            if backend == "iptables-nft":
                nft_family = "ip" if family == "ipv4" else "ip6"
                seen_nft_tables |= {(nft_family, t[1:].strip()) for t in out.splitlines() if t.startswith("*")}
    out = read_in_netns(path, "nft", "-j", "list", "ruleset")
    if out:
        nft = parse_nft_json(out, seen_nft_tables, MAX_DROP_POINTS - len(points))
        points += nft.value
        beyond += nft.beyond
        if nft.skipped:
            unread.append(("nft -j list ruleset", nft.skipped))
    return Ruleset(tuple(points), tuple(unread), beyond)


def ct_stats(path: str | None) -> dict[str, int] | None:
    """The namespace's conntrack statistics; None if conntrack is not loaded there."""
    out = read_file_in_netns(path, "/proc/net/stat/nf_conntrack")
    return parse_ct_stats(out).value if out else None


def namespace_paths() -> dict[int, str | None]:
    """Every namespace we can see -> a path nsenter takes (None for our own)."""
    own = os.stat("/proc/self/ns/net").st_ino
    return {ino: None if ino == own else found["path"] for ino, found in discover_namespaces().items()}


WALK_SECONDS = 5.0      # /proc is walked for a wanted namespace not found yet at most this often


class WantedPaths:
    """The paths of the namespaces the Explainer wants, found without walking
    /proc every round (on a node of 250 pods that walk, every second, would be
    most of netdrop's idle cost). A path found once is checked each round
    with one stat (still that inode: kept; else it is gone or reused, and
    dropped); /proc and /run/netns are walked when a namespace is wanted for
    the first time, and while one has no path yet at most every WALK_SECONDS."""

    def __init__(self, wanted: Callable[[], set[int]], walk: Callable[[], Mapping[int, str | None]] = namespace_paths,
                 clock: Callable[[], float] = time.monotonic):
        self._wanted = wanted
        self._walk = walk
        self._clock = clock
        self._known: dict[int, str | None] = {}
        self._walked = float("-inf")
        self._looked: set[int] = set()      # wanted namespaces already looked for

    @staticmethod
    def _still(ino: int, path: str | None) -> bool:
        try:
            return os.stat(path or "/proc/self/ns/net").st_ino == ino
        except OSError:
            return False

    def __call__(self) -> dict[int, str | None]:
        self._known = {ino: p for ino, p in self._known.items() if self._still(ino, p)}
        wanted = self._wanted()
        missing = wanted - self._known.keys()
        self._looked &= wanted
        now = self._clock()
        # A namespace wanted for the first time is looked for at once (its drops are being
        # explained now); one not found then, again at most every WALK_SECONDS.
        if missing - self._looked or (missing and now - self._walked >= WALK_SECONDS):
            self._walked = now
            self._looked |= missing
            found = self._walk()
            self._known.update({ino: found[ino] for ino in missing if ino in found and self._still(ino, found[ino])})
        return dict(self._known)


def sample_netns(path: str | None, rules: bool) -> tuple[Ruleset | None, Parsed[dict[str, int]] | None]:
    """The Explainer's reading of one namespace: its ruleset (when asked) and conntrack statistics."""
    out = read_file_in_netns(path, "/proc/net/stat/nf_conntrack")
    return (drop_points(path) if rules else None), (parse_ct_stats(out) if out else None)


# ------------------------------------------------------------------ the explainer

@dataclass(frozen=True)
class Context:
    """What classify may know beyond the event itself."""

    view: NetnsView | None = None              # the drop's namespace
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
    rules_at: float = 0.0                                              # when the ruleset was last read
    _memo: dict[tuple[object, ...] | None, list[DropPoint]] = field(default_factory=dict, repr=False,
                                                                    compare=False)
    _fields: tuple[str, ...] | None = field(default=None, repr=False, compare=False)
    _index: RuleIndex | None = field(default=None, repr=False, compare=False)

    @property
    def conntrack_active(self) -> bool:
        return bool(self.ct and (self.ct.get("entries") or self.ct.get("new") or self.ct.get("found")
                                 or self.ct.get("invalid")))

    def flow_key(self, drop: Drop) -> tuple[object, ...]:
        """What of a drop the answer depends on: its chain and the fields some
        rule here tests. A storm from ever-new source ports is one key unless a
        rule tests the source port."""
        if self._fields is None:
            tested: frozenset[str] = frozenset()
            for p in (*self.points, *self.nonzero, *(p for p, _ in self.grown)):
                tested |= tested_fields(p)
            self._fields = tuple(sorted(tested))
        return (path_chain(drop), *(getattr(drop, f) for f in self._fields))

    def likely_points(self, drop: Drop | None = None) -> list[DropPoint]:
        """The drop points that explain a drop: those whose counters grew lately
        and could match it, else those whose conditions match it, else those
        ever used that could match it. Remembered per flow: a node's ruleset has
        thousands of rules, and a storm is one flow many times."""
        key = None if drop is None else self.flow_key(drop)
        found = self._memo.get(key)
        if found is not None:
            return found
        if len(self._memo) >= MEMO_FLOWS:
            self._memo.clear()
        self._memo[key] = found = self._likely(drop)
        return found

    def _likely(self, drop: Drop | None) -> list[DropPoint]:
        pkt = Packet.of(drop) if drop is not None else None
        if self._index is None:
            self._index = RuleIndex(self.points)
        index = self._index
        # Only the points that could match are tried (matcher.RuleIndex): a node's thousands
        # of kube-proxy rules are a few candidates for one packet. Absent: False.
        found = [] if pkt is None else index.verdicts(pkt)
        verdict = {id(p): v for p, v in found}

        def fits(p: DropPoint) -> bool:
            if pkt is None:
                return True
            if index.holds(p):
                return id(p) in verdict
            return matches_packet(p, pkt) is not False
        grown = [p for p, _ in self.grown if fits(p)]
        if grown:
            return grown
        certain = [p for p, v in found if v is True]
        if certain:
            return certain
        return [p for p in self.nonzero if fits(p)]


Sampler = Callable[[str | None, bool], tuple[Ruleset | None, Parsed[dict[str, int]] | None]]


def _netns_label(netns: int, path: str | None) -> str:
    """netns 4026532177 (cni-...), (pid 1234) or (netdrop's own)."""
    if path is None:
        return f"netns {netns} (netdrop's own)"
    m = re.fullmatch(r"/proc/(\d+)/ns/net", path)
    return f"netns {netns} ({f'pid {m.group(1)}' if m else Path(path).name})"


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


class Explainer:
    """Samples rule counters and conntrack statistics of the namespaces where
    netfilter drops happen (and of the node's), in a background thread.

    Namespaces come and go: one that is no longer discovered is forgotten
    (view, notices, wants, warnings), and one whose inode now opens by another
    path is taken for a new namespace that reuses a freed inode (nsfs inodes
    are recycled) and starts fresh. What cannot be read is said once per
    namespace and kind through warn, never from the event path."""

    def __init__(self, paths: Mapping[int, str | None] | None = None, node_netns: int | None = None,
                 sample: Sampler = sample_netns, period: float = SAMPLE_SECONDS, *,
                 discover: Callable[[], Mapping[int, str | None]] | None = None,
                 warn: Callable[[str], None] = lambda msg: None):
        # inode -> path (None: our own); discovered again every round
        if discover is None:
            fixed = dict(paths) if paths is not None else None
            discover = (lambda: fixed) if fixed is not None else WantedPaths(lambda: set(self._wanted))
        self._discover = discover
        self.paths: dict[int, str | None] = dict(paths) if paths is not None else {}
        self.node_netns = node_netns
        self._sample = sample
        self._warn = warn
        self.period = period
        self.views: dict[int, NetnsView] = {}
        self.notices: dict[int, str] = {}   # netns -> latent risk seen there (clash_resolve)
        self.bridge_nf: str | None = None   # the node's net.bridge.bridge-nf-call-iptables
        self._wanted: set[int] = {node_netns} if node_netns is not None else set()
        self._last_want: dict[int, float] = {}
        self._warned: set[tuple[int, str]] = set()
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None

    def want(self, netns: int) -> None:
        """Called from the event path: cheap, never blocks. Bounded: past
        MAX_WANTED namespaces a new one waits until old ones are forgotten."""
        if netns not in self._wanted:
            if len(self._wanted) >= MAX_WANTED:
                return
            self._wanted.add(netns)
            self._kick.set()
        self._last_want[netns] = time.monotonic()

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
        """One round. Never raises: it runs at start-up before tracing, and one
        namespace that cannot be read must not stop the others."""
        # Every catch-all below is on purpose: this runs in a background thread and at
        # start-up, and no failure of one reading may stop the others or the trace.
        try:
            found = dict(self._discover())
        except Exception as exc:  # noqa: BLE001
            self._warn_once(0, "discover", f"network namespaces could not be listed ({_why(exc)}): rule "
                            "counters are read in the ones known before")
            found = dict(self.paths)
        self._track(found)
        now = time.monotonic()
        try:
            if self.node_netns in self.paths:
                out = read_file_in_netns(self.paths[self.node_netns], "/proc/sys/net/bridge/bridge-nf-call-iptables")
                self.bridge_nf = out.strip() if out else None
        except Exception as exc:  # noqa: BLE001
            self._warn_once(0, "bridge-nf", f"net.bridge.bridge-nf-call-iptables could not be read ({_why(exc)})")
        for netns in list(self._wanted):
            if netns not in self.paths:
                continue
            try:
                self._sample_one(netns, self.paths[netns], now)
            except Exception as exc:  # noqa: BLE001
                self._warn_once(netns, "failed", f"{_netns_label(netns, self.paths.get(netns))}: its rule counters "
                                f"and conntrack statistics could not be read ({_why(exc)}); its netfilter drops "
                                "are explained without them")

    def _track(self, found: dict[int, str | None]) -> None:
        """Forget the namespaces that are gone, and those whose inode now names
        another namespace (entered by another path)."""
        for netns, path in list(self.paths.items()):
            if netns not in found:
                self._forget(netns)
            elif found[netns] != path:
                # Wants came from drops seen by inode, most likely the new namespace's: kept.
                self._forget(netns, wants=False)
        self.paths = found
        # Wants for namespaces never discovered (held only by a mount elsewhere,
        # or gone already) last while drops keep coming from them.
        stale = time.monotonic() - ACTIVE_SECONDS
        for netns in list(self._wanted):
            if netns not in found and netns != self.node_netns and self._last_want.get(netns, 0.0) < stale:
                self._wanted.discard(netns)
                self._last_want.pop(netns, None)

    def _forget(self, netns: int, wants: bool = True) -> None:
        self.views.pop(netns, None)
        self.notices.pop(netns, None)
        if wants and netns != self.node_netns:
            self._wanted.discard(netns)
            self._last_want.pop(netns, None)
        self._warned = {w for w in self._warned if w[0] != netns}

    def _warn_once(self, netns: int, kind: str, msg: str) -> None:
        if (netns, kind) in self._warned:
            return
        self._warned.add((netns, kind))
        # A warning that cannot be shown must not stop the sampling.
        with contextlib.suppress(Exception):
            self._warn(msg)

    def _sample_one(self, netns: int, path: str | None, now: float) -> None:
        old = self.views.get(netns)
        # Reading a ruleset costs (kube-proxy nodes carry thousands of rules): only
        # once, then while netfilter drops are being seen there. Statistics always.
        active = now - self._last_want.get(netns, float("-inf")) < ACTIVE_SECONDS
        stale = old is None or now - old.rules_at >= IDLE_SECONDS
        rules, parsed_ct = self._sample(path, active or stale)
        label = _netns_label(netns, path)
        if rules is not None and rules.unread:
            tools = ", ".join(f"{n} from {tool}" for tool, n in rules.unread)
            self._warn_once(netns, "rules", f"{label}: {rules.skipped} ruleset entries could not be read ({tools}); "
                            "they are not used to explain drops")
        if rules is not None and rules.beyond:
            self._warn_once(netns, "beyond", f"{label}: its ruleset has more than {MAX_DROP_POINTS} drop rules and "
                            f"policies; {rules.beyond} more are not used to explain drops")
        if parsed_ct is not None and parsed_ct.skipped:
            self._warn_once(netns, "conntrack", f"{label}: {parsed_ct.skipped} conntrack statistics could not be "
                            "read (/proc/net/stat/nf_conntrack); they are not used")
        ct = parsed_ct.value if parsed_ct is not None else None
        rules_at = now if rules is not None or old is None else old.rules_at
        points = list(rules.points) if rules is not None else (old.points if old else [])
        before = {p.key: p.packets for p in old.points} if old else {}
        grown = [(p, p.packets - (before.get(p.key) or 0)) for p in points
                 if p.packets is not None and old is not None and p.packets > (before.get(p.key) or 0)]
        ct_delta = {k: v - old.ct.get(k, 0) for k, v in ct.items()} if ct and old and old.ct else {}
        growth = dict(old.ct_growth) if old else {}
        for k, v in ct_delta.items():
            if v > 0 and k != "entries":
                growth[k] = growth.get(k, 0) + v
        self.views[netns] = NetnsView(grown, [p for p in points if p.packets], points, ct, ct_delta, growth,
                                      rules_at)
        if growth.get("clash_resolve") and netns not in self.notices:
            self.notices[netns] = (f"conntrack resolved insert races (clash_resolve +{growth['clash_resolve']}) "
                                   "without a drop: concurrent packets of one flow (DNS A and AAAA queries "
                                   "from one socket) raced to create the same entry; kernels before 5.x "
                                   "drop the loser (insert_failed), which shows as 5-second DNS timeouts")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample_now()          # never raises: each namespace is read in its own try
            self._kick.wait(self.period)
            self._kick.clear()
