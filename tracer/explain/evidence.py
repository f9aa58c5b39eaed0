"""evidence: the node's facts behind a drop, read off the event path and cached.

A drop reason says what the kernel decided; the node's state says why. For
the categories whose cause is a standing state of the node (a veth whose peer
is down, a bridge port not forwarding, IPv6 disabled on a pod's eth0, an IPsec
policy without its state, a VXLAN device on another VNI or port, a BPF
program that drops, memory pressure), the hint quotes that state.

Everything here is read from the namespace of the drop, by host binaries
(`ip`, `bridge`, `bpftool`, `cat`) run under `nsenter --net` (nsexec): a few
commands per namespace, at most once per TTL seconds, in a background
thread. The event path only reads the cache (a dict lookup): EvidenceCache
is called with a drop and returns what it knows, or None while nothing is
known yet (it then asks its thread to look); a hint without evidence says what
the event alone tells, never a guess. A group's first events are held until
their namespace has been read (explain/holding.py): ask() puts that read first
in the thread's queue, answered() says when it is done.

Every parser takes node text, which pods and local users can shape (interface
names, bpftool's program names): each survives any input (Hypothesis
tests in tests/unit/explain/test_evidence.py), keeps only typed values, and is
bounded (MAX_* below) whatever the node holds.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..jsonvalues import u32
from ..kernel.decode import Drop
from ..node.nsexec import read_file_in_netns, read_many_in_netns
from .explainer import WantedPaths
from .xfrm import Xfrm, parse_policies, parse_states
from .xfrm import parse_counts as parse_xfrm

TTL_SECONDS = 5.0          # a namespace's facts are read again when a drop asks and they are older
MAX_NAMESPACES = 256       # namespaces whose facts are kept (least recently asked forgotten first)
MAX_DEVICES = 4096         # devices kept per namespace
MAX_PROGRAMS = 64          # BPF attachments kept per namespace, and node-wide on cgroups
MAX_NAMES = 8              # remote addresses of an FDB, LSM names, owners of a program
MAX_TEXT = 1 << 22         # node text longer than this is not parsed (4 MiB)
NAME_MAX = 64              # any name kept is cut to this (IFNAMSIZ is 16; cgroup paths are longer)
READ_GAP_SECONDS = 0.1     # between two namespaces' reads: at most ~10 namespaces a second
COMMAND_TIMEOUT = 2.0      # each command, seconds: a hung `ip` never holds the thread long
NOT_WAITED = float("-inf")   # ask()'s since when nothing waits for the read

# Bridge port states (include/uapi/linux/if_bridge.h BR_STATE_*), as `ip -d -j` names them.
FORWARDING = "forwarding"
# Known encapsulation ports: IANA VXLAN, Linux's/flannel's default VXLAN (drivers/net/vxlan: 8472), Geneve.
OVERLAY_PORTS = (4789, 8472, 6081)


@dataclass(frozen=True)
class Vxlan:
    vni: int | None
    port: int | None
    local: str | None
    remote: str | None
    underlay: str | None            # the device its packets leave by ("link")
    fdb_entries: int | None = None  # None: not read
    fdb_remotes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Device:
    ifindex: int
    name: str
    kind: str | None                # veth, bridge, vxlan, ... (rtnetlink IFLA_INFO_KIND)
    up: bool                        # administratively (IFF_UP)
    carrier: bool                   # IFF_LOWER_UP: for a veth, its peer is up too (drivers/net/veth.c veth_open)
    oper: str | None                # IF_OPER_* name: UP, DOWN, LOWERLAYERDOWN, ...
    mtu: int | None = None
    master: str | None = None
    port_state: str | None = None   # its state as a bridge port: forwarding, blocking, disabled, ...
    peer_ifindex: int | None = None   # a veth's peer
    peer_netns: str | None = None     # the peer's namespace, by name when this namespace has one for it
    disable_ipv6: bool | None = None
    route_localnet: bool | None = None
    vxlan: Vxlan | None = None
    stp: bool | None = None         # a bridge: STP on (its ports listen and learn before they forward)

    @property
    def state(self) -> str:
        """"DOWN", "UP, no carrier", "UP": as `ip link` shows it."""
        if not self.up:
            return "DOWN"
        return "UP" if self.carrier else "UP, no carrier"


@dataclass(frozen=True)
class Program:
    where: str            # device name or cgroup path
    hook: str             # "tc ingress", "tc egress", "xdp", "cgroup_inet_egress", ...
    prog_id: int | None
    name: str
    owners: tuple[str, ...] = ()   # "comm(pid)" of the processes holding it (bpftool's pids)

    def __str__(self) -> str:
        by = f" held by {', '.join(self.owners)}" if self.owners else ""
        ident = f" id {self.prog_id}" if self.prog_id is not None else ""
        return f"{self.hook} program '{self.name}'{ident} on {self.where}{by}"


@dataclass(frozen=True)
class Memory:
    total_kb: int | None
    available_kb: int | None
    psi_some_avg10: float | None    # /proc/pressure/memory: % of time some task stalled on memory

    def __str__(self) -> str:
        parts = []
        if self.total_kb and self.available_kb is not None:
            parts.append(f"{self.available_kb // 1024} MiB of {self.total_kb // 1024} MiB available")
        if self.psi_some_avg10 is not None:
            parts.append(f"memory pressure {self.psi_some_avg10:.1f}% (PSI some avg10)")
        return ", ".join(parts) or "memory state unknown"


@dataclass(frozen=True)
class NodeFacts:
    """Facts of the whole node, not of one namespace."""
    cgroup_programs: tuple[Program, ...] | None   # None: bpftool or cgroup2 unavailable
    lsm: tuple[str, ...] | None
    memory: Memory | None


# eq=False: compared and hashed by identity, so the Classifier can key its
# memo on "what the evidence said" cheaply: a refresh makes a new object.
@dataclass(frozen=True, eq=False)
class Evidence:
    """What netdrop knew of a drop's namespace (and of the node) when it was read."""
    netns: int
    devices: tuple[Device, ...]
    xfrm: Xfrm | None
    programs: tuple[Program, ...] | None      # tc and XDP programs of this namespace's devices
    node: NodeFacts | None
    read_at: float = 0.0                      # monotonic seconds

    def device(self, ifindex: int | None, name: str | None = None) -> Device | None:
        for d in self.devices:
            if ifindex is not None and d.ifindex == ifindex:
                return d
        if ifindex is None and name is not None:
            return next((d for d in self.devices if d.name == name), None)
        return None

    def vxlans(self) -> list[Device]:
        return [d for d in self.devices if d.vxlan is not None]

    def programs_on(self, name: str | None, hook_prefix: str) -> list[Program]:
        return [p for p in self.programs or () if p.hook.startswith(hook_prefix) and (name is None or p.where == name)]


# -- parsers of node text: any input, typed and bounded output ----------------

def _load_json(text: str | None) -> Any:
    if not text or len(text) > MAX_TEXT:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _objects(doc: object) -> list[dict[str, Any]]:
    return [x for x in doc if isinstance(x, dict)] if isinstance(doc, list) else []


def _name(v: object) -> str | None:
    return v[:NAME_MAX] if isinstance(v, str) and v else None


def _dict(v: object) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def parse_links(text: str | None) -> list[Device]:
    """`ip -d -j link show` -> devices (the sysctls and FDB filled in later)."""
    out: list[Device] = []
    for link in _objects(_load_json(text))[:MAX_DEVICES]:
        ifindex, name = u32(link.get("ifindex")), _name(link.get("ifname"))
        if ifindex is None or name is None:
            continue
        flags = link.get("flags")
        flags = {f for f in flags if isinstance(f, str)} if isinstance(flags, list) else set()
        info = _dict(link.get("linkinfo"))
        kind = _name(info.get("info_kind"))
        port_state = _name(_dict(info.get("info_slave_data")).get("state")) \
            if info.get("info_slave_kind") == "bridge" else None
        vxlan, stp = None, None
        if kind == "bridge":
            state = _dict(info.get("info_data")).get("stp_state")
            stp = bool(state) if isinstance(state, int) else None
        if kind == "vxlan":
            data = _dict(info.get("info_data"))
            vxlan = Vxlan(u32(data.get("id")), u32(data.get("port")), _name(data.get("local")),
                          _name(data.get("remote")), _name(data.get("link")))
        out.append(Device(
            ifindex, name, kind, up="UP" in flags, carrier="LOWER_UP" in flags,
            oper=_name(link.get("operstate")), mtu=u32(link.get("mtu")), master=_name(link.get("master")),
            port_state=port_state,
            peer_ifindex=u32(link.get("link_index")) if kind == "veth" else None,
            vxlan=vxlan, stp=stp))
    return out


def parse_netns_ids(text: str | None) -> dict[int, str]:
    """`ip -j netns list-id` -> nsid -> name (named namespaces only)."""
    out: dict[int, str] = {}
    for x in _objects(_load_json(text))[:MAX_DEVICES]:
        nsid, name = u32(x.get("nsid")), _name(x.get("name"))
        if nsid is not None and name is not None:
            out[nsid] = name
    return out


def peer_netnsids(text: str | None) -> dict[int, int]:
    """`ip -d -j link show` -> ifindex -> the peer's namespace id, for veths whose peer is elsewhere."""
    out: dict[int, int] = {}
    for link in _objects(_load_json(text))[:MAX_DEVICES]:
        ifindex, nsid = u32(link.get("ifindex")), u32(link.get("link_netnsid"))
        if ifindex is not None and nsid is not None:
            out[ifindex] = nsid
    return out


_SYSCTL_RE = re.compile(r"/proc/sys/net/ipv[46]/conf/(.{1,64})/(disable_ipv6|route_localnet):([01])")


def parse_sysctls(text: str | None) -> dict[tuple[str, str], bool]:
    """`grep -H . .../conf/*/disable_ipv6 .../conf/*/route_localnet` -> (device, name) -> set?"""
    out: dict[tuple[str, str], bool] = {}
    if not text or len(text) > MAX_TEXT:
        return out
    for line in text.splitlines()[:4 * MAX_DEVICES]:
        m = _SYSCTL_RE.fullmatch(line.strip())
        if m:
            out[(m.group(1), m.group(2))] = m.group(3) == "1"
    return out


def parse_fdb(text: str | None) -> tuple[int, tuple[str, ...]] | None:
    """`bridge -j fdb show dev VXLAN` -> (entries, first remote addresses)."""
    doc = _load_json(text)
    if not isinstance(doc, list):
        return None
    entries = _objects(doc)
    remotes: list[str] = []
    for e in entries:
        dst = _name(e.get("dst"))
        if dst and dst not in remotes and len(remotes) < MAX_NAMES:
            remotes.append(dst)
    return len(entries), tuple(remotes)


def _owners(prog: dict[str, Any]) -> tuple[str, ...]:
    pids = prog.get("pids")
    out = []
    for p in _objects(pids)[:MAX_NAMES]:
        comm, pid = _name(p.get("comm")), u32(p.get("pid"))
        if comm:
            out.append(f"{comm}({pid})" if pid is not None else comm)
    return tuple(out)


def parse_bpftool_net(text: str | None) -> list[Program] | None:
    """`bpftool -j net show` (tc and XDP programs of a namespace's devices); None if unreadable."""
    doc = _load_json(text)
    if not isinstance(doc, list):
        return None
    out: list[Program] = []
    for section in _objects(doc):
        for x in _objects(section.get("xdp")):
            dev = _name(x.get("devname"))
            for mode in ("generic", "drv", "offload", "skb"):
                m = x.get(mode)
                if isinstance(m, dict) and dev:
                    out.append(Program(dev, "xdp", u32(m.get("id")), _name(m.get("name")) or "?"))
            if dev and isinstance(x.get("id"), int):
                out.append(Program(dev, "xdp", u32(x.get("id")), _name(x.get("name")) or "?"))
        for x in _objects(section.get("tc")):
            dev = _name(x.get("devname"))
            kind = _name(x.get("kind")) or ""
            hook = "tc egress" if "egress" in kind else "tc ingress"
            if dev:
                out.append(Program(dev, hook, u32(x.get("id")), _name(x.get("name")) or "?"))
        if len(out) >= MAX_PROGRAMS:
            break
    return out[:MAX_PROGRAMS]


def parse_bpftool_cgroup(text: str | None) -> list[Program] | None:
    """`bpftool -j cgroup tree ROOT` -> programs attached to cgroups; None if unreadable."""
    doc = _load_json(text)
    if not isinstance(doc, list):
        return None
    out: list[Program] = []
    for cg in _objects(doc):
        path = cg.get("cgroup")
        if not isinstance(path, str):
            continue
        for p in _objects(cg.get("programs")):
            hook = _name(p.get("attach_type"))
            if hook:
                out.append(Program(path[-NAME_MAX:], hook, u32(p.get("id")), _name(p.get("name")) or "?",
                                   _owners(p)))
            if len(out) >= MAX_PROGRAMS:
                return out
    return out


def parse_bpftool_owners(text: str | None) -> dict[int, tuple[str, ...]]:
    """`bpftool -j prog show` -> program id -> its holders."""
    out: dict[int, tuple[str, ...]] = {}
    for p in _objects(_load_json(text)):
        pid = u32(p.get("id"))
        owners = _owners(p)
        if pid is not None and owners:
            out[pid] = owners
        if len(out) >= 16 * MAX_PROGRAMS:
            break
    return out


_MEMINFO_RE = re.compile(r"(MemTotal|MemAvailable):\s+(\d{1,15}) kB")
_PSI_RE = re.compile(r"some avg10=(\d{1,3}(?:\.\d{1,3})?)")


def parse_memory(meminfo: str | None, psi: str | None) -> Memory | None:
    found: dict[str, int] = {}
    for m in _MEMINFO_RE.finditer((meminfo or "")[:65536]):
        found.setdefault(m.group(1), int(m.group(2)))
    p = _PSI_RE.search((psi or "")[:4096])
    if not found and p is None:
        return None
    return Memory(found.get("MemTotal"), found.get("MemAvailable"), float(p.group(1)) if p else None)


def parse_lsm(text: str | None) -> tuple[str, ...] | None:
    """/sys/kernel/security/lsm: "lockdown,capability,yama,apparmor,bpf"."""
    if text is None:
        return None
    names = [n for n in text[:4096].strip().split(",") if re.fullmatch(r"[a-z0-9_]{1,32}", n)]
    return tuple(names[:MAX_NAMES * 2])


# -- reading a namespace -------------------------------------------------------

SYSCTL_CMD = ("sh", "-c", "grep -H . /proc/sys/net/ipv6/conf/*/disable_ipv6 /proc/sys/net/ipv4/conf/*/route_localnet")




# What read_namespace runs in every namespace it reads, all at once (a drop's
# first events wait for them: explain/holding.py).
NAMESPACE_CMDS: tuple[tuple[str, ...], ...] = (
    ("ip", "-d", "-j", "link", "show"), SYSCTL_CMD, ("ip", "-j", "netns", "list-id"),
    ("ip", "xfrm", "policy", "count"), ("ip", "xfrm", "state", "count"), ("bpftool", "-j", "net", "show"))


# And where the namespace has inbound IPsec policies: which refuses what (explain/xfrm.py).
# nokeys: `ip` prints no key of a state, so none ever reaches this process.
XFRM_CMDS: tuple[tuple[str, ...], ...] = (("ip", "xfrm", "policy", "list", "dir", "in"),
                                          ("ip", "xfrm", "state", "list", "nokeys"))


def read_namespace(netns: int, path: str | None, node: NodeFacts | None, now: float,
                   stop: threading.Event | None = None) -> Evidence:
    """The facts of the namespace at path (None: ours): a handful of commands in
    it, started together, then `bridge fdb` for each VXLAN device found. Once
    stop is set, the commands still running are killed and read as failed."""
    links, sysctl_text, nsid_text, policy_count, state_count, bpf_net = read_many_in_netns(
        path, NAMESPACE_CMDS, timeout=COMMAND_TIMEOUT, stop=stop)
    devices = parse_links(links)
    sysctls = parse_sysctls(sysctl_text)
    nsids = parse_netns_ids(nsid_text)
    peer_ns = peer_netnsids(links)
    full: list[Device] = []
    for d in devices:
        vx = d.vxlan
        if vx is not None:
            fdb = parse_fdb(read_many_in_netns(path, [("bridge", "-j", "fdb", "show", "dev", d.name)],
                                               timeout=COMMAND_TIMEOUT, stop=stop)[0])
            if fdb is not None:
                vx = Vxlan(vx.vni, vx.port, vx.local, vx.remote, vx.underlay, fdb[0], fdb[1])
        nsid = peer_ns.get(d.ifindex)
        full.append(Device(
            d.ifindex, d.name, d.kind, d.up, d.carrier, d.oper, d.mtu, d.master, d.port_state, d.peer_ifindex,
            nsids.get(nsid) if nsid is not None else None,
            sysctls.get((d.name, "disable_ipv6")), sysctls.get((d.name, "route_localnet")), vx, d.stp))
    xfrm = parse_xfrm(policy_count, state_count)
    if xfrm is not None and xfrm.count("in"):       # which inbound policy refuses what (explain/xfrm.py)
        policies, states = read_many_in_netns(path, XFRM_CMDS, timeout=COMMAND_TIMEOUT, stop=stop)
        xfrm = Xfrm(xfrm.policies, xfrm.states, parse_policies(policies), parse_states(states))
    programs = parse_bpftool_net(bpf_net)
    return Evidence(netns, tuple(full), xfrm, tuple(programs) if programs is not None else None, node, now)


CGROUP2_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")


def read_node(cgroup_roots: Iterable[str] = CGROUP2_ROOTS, stop: threading.Event | None = None) -> NodeFacts:
    """Node-wide facts: BPF programs on cgroups (with their holders), the LSMs, memory.
    Once stop is set, a command still running is killed and read as failed."""
    def run(*cmd: str) -> str | None:
        return read_many_in_netns(None, [cmd], timeout=COMMAND_TIMEOUT, stop=stop)[0]

    cgroup: list[Program] | None = None
    for root in cgroup_roots:
        found = parse_bpftool_cgroup(run("bpftool", "-j", "cgroup", "tree", root))
        if found is not None:
            cgroup = found
            break
    if cgroup:
        owners = parse_bpftool_owners(run("bpftool", "-j", "prog", "show"))
        cgroup = [Program(p.where, p.hook, p.prog_id, p.name, p.owners or owners.get(p.prog_id or -1, ()))
                  for p in cgroup]
    return NodeFacts(tuple(cgroup) if cgroup is not None else None,
                     parse_lsm(read_file_in_netns(None, "/sys/kernel/security/lsm")),
                     parse_memory(read_file_in_netns(None, "/proc/meminfo"),
                                  read_file_in_netns(None, "/proc/pressure/memory")))


class _Paths:
    """Where the namespaces asked for are: explainer.WantedPaths (a path found
    once is checked with one stat; /proc and /run/netns are walked only for a
    namespace not found yet), not a walk for every namespace read."""

    def __init__(self) -> None:
        self._asked: set[int] = set()
        self._find = WantedPaths(lambda: self._asked)

    def __call__(self, wanted: set[int]) -> Mapping[int, str | None]:
        self._asked = wanted
        known = self._find()
        return {ino: known[ino] for ino in wanted if ino in known}


class EvidenceCache:
    """Evidence per namespace for the event path: lookup is a dict read; a
    namespace not known yet or older than ttl is read again by the cache's
    own thread (start()), or at once by refresh(). ask(netns, since) wants a
    read begun at or after since, before any plain request (something waits
    for it: explain/holding.py); answered(netns, since) says it was made.

    Bounded: at most max_namespaces are kept, the least recently asked
    forgotten first (by when they were read); the wanted set is bounded the same way."""

    def __init__(self, paths: Callable[[set[int]], Mapping[int, str | None]] | None = None,
                 read: Callable[[int, str | None, NodeFacts | None, float, threading.Event], Evidence]
                 = read_namespace,
                 node: Callable[..., NodeFacts] = read_node, ttl: float = TTL_SECONDS,
                 max_namespaces: int = MAX_NAMESPACES, clock: Callable[[], float] = time.monotonic) -> None:
        self._paths = paths if paths is not None else _Paths()
        self._read = read
        self._node = node
        self.ttl = ttl
        self.max_namespaces = max_namespaces
        self._clock = clock
        self._known: OrderedDict[int, Evidence] = OrderedDict()
        # netns -> a read begun at or after this is wanted (NOT_WAITED: any read within the TTL will do).
        self._wanted: OrderedDict[int, float] = OrderedDict()
        self._tried: OrderedDict[int, float] = OrderedDict()    # netns -> when its latest read began
        self._node_facts: NodeFacts | None = None
        self._node_at = float("-inf")
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, drop: Drop) -> Evidence | None:
        """The evidence of the drop's namespace, as known now (never waits)."""
        ev = self._known.get(drop.netns)
        # Asked once per refresh: a storm before the thread has read it takes no lock per event.
        if (ev is None or self._clock() - ev.read_at >= self.ttl) and drop.netns not in self._wanted:
            self.ask(drop.netns, NOT_WAITED)
        return ev

    def ask(self, netns: int, since: float) -> None:
        """Read netns (again) unless its evidence is younger than the TTL and
        was read at or after since; asks with a since are read first."""
        with self._lock:
            self._wanted[netns] = max(since, self._wanted.get(netns, NOT_WAITED))
            while len(self._wanted) > self.max_namespaces:
                self._wanted.popitem(last=False)
        self._wake.set()

    def answered(self, netns: int, since: float) -> bool:
        """Whether a read of netns began at or after since (whatever it found:
        a namespace gone has no evidence to wait for)."""
        return self._tried.get(netns, NOT_WAITED) >= since

    def node_facts(self) -> NodeFacts:
        now = self._clock()
        if self._node_facts is None or now - self._node_at >= self.ttl:
            self._node_facts, self._node_at = self._node(stop=self._stop), now
        return self._node_facts

    def refresh(self, netns: int) -> Evidence | None:
        """Read the namespace now (the caller waits: tests, doctor); None if it is gone."""
        began = self._clock()       # what it reads is the state from here on: a drop before is explained by it
        try:
            path = self._paths({netns})
            if netns not in path:
                with self._lock:
                    self._known.pop(netns, None)
                return None
            ev = self._read(netns, path[netns], self.node_facts(), began, self._stop)
            with self._lock:
                self._known[netns] = ev
                self._known.move_to_end(netns)
                while len(self._known) > self.max_namespaces:
                    self._known.popitem(last=False)
            return ev
        finally:
            with self._lock:
                self._tried[netns] = began
                self._tried.move_to_end(netns)
                while len(self._tried) > self.max_namespaces:
                    self._tried.popitem(last=False)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="netdrop-evidence", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            # The commands of a read in flight are killed at once (read_namespace's and
            # read_node's stop): the join is a bound, never the wait.
            self._thread.join(COMMAND_TIMEOUT)

    def _next(self) -> tuple[int, float] | None:
        """The next namespace to read: the oldest one something waits for, else the oldest asked."""
        with self._lock:
            netns = next((n for n, since in self._wanted.items() if since > NOT_WAITED), None)
            if netns is not None:
                return netns, self._wanted.pop(netns)
            return self._wanted.popitem(last=False) if self._wanted else None

    def _loop(self) -> None:
        while not self._stop.is_set():
            picked = self._next()
            if picked is None:
                # A request made after _next() sets _wake first: the wait returns at once.
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            netns, since = picked
            ev = self._known.get(netns)
            if ev is not None and self._clock() - ev.read_at < self.ttl and ev.read_at >= since:
                continue
            with contextlib.suppress(OSError):   # a namespace gone meanwhile: asked again by its next drop
                self.refresh(netns)
            # Each read runs a few commands: a storm across many namespaces is read at
            # a bounded pace (the hints of drops before their read say what the event shows).
            if self._stop.wait(READ_GAP_SECONDS):
                return
