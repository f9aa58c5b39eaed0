"""node: a simulated Kubernetes node built of network namespaces only.

    client ──ext0── node1 ──eth0 (underlay 192.168.100.0/24)── node2
                    │ cni0 10.244.1.1/24                        │ cni0 10.244.2.1/24
                    │ flannel.1 (VXLAN, MTU 1450) ═════════════ │ flannel.1
                    ├─ veth… ── pod web 10.244.1.10             └─ veth… ── pod api 10.244.2.10
                    ├─ veth… ── pod db  10.244.1.11
                    └─ veth… ── pod cache 10.244.1.13 (sandbox held by a process, no name)

The pods keep the default MTU 1500 while the overlay has 1450: the classic
flannel misconfiguration. node1 has no route to 10.244.3.0/24 (a third node
whose route is missing). Pods live in namespaces named like a CNI plugin
names them, behind the lab's prefix (<prefix>-cni-<uuid>), on host veths named
veth<hex>, except cache, whose namespace only a process holds (as Docker
leaves them); a Kubernetes API for them is served on 127.0.0.1 by api.py.
node-exporter is a hostNetwork pod on node1 declaring port 9100.

Every command runs inside the lab's own namespaces (`ip -n`, `ip netns
exec`): the host's namespace is never touched.

When Debian's containernetworking-plugins are installed (/usr/lib/cni), the
pods are made as flannel makes them on a real node: the `bridge` plugin with
`host-local` IPAM (ADD when a pod starts, DEL when it goes), run inside the
simulated node's namespace, with host-local's state in the lab's private
directory (never the host's /var/lib/cni). Without them, or with
NETDROP_LAB_CNI=0, the lab does by hand what they do.

The lab runs as root on nodes whose other namespaces (real pod sandboxes,
`cni-<uuid>`) are not its own, so it removes only what it made: each namespace
it makes is recorded with its identity (inode and netns cookie; before Linux
5.14, a random stamp the lab writes as its loopback's alias) in a state file
under /run/netdrop (mode 0700, root's), and removed only while the namespace
at that name is still that one. destroy() removes a lab's namespaces and holder
processes; cleanup_leftovers() removes what the state file of a killed run with
the same prefix records, never anything found by name alone.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..node.nsexec import socket_in
from ..node import rtnl
from ..trust import check_tree, why_untrusted, write_private
from . import api as labapi

NETNS_DIR = Path("/run/netns")
STATE_DIR = Path("/run/netdrop")
HOLDER = ("sleep", "infinity")
HOLDER_CMDLINE = b"sleep\0infinity\0"
OVERLAY_MTU = 1450
POD_MTU = 1500
VXLAN_PORT = 8472

# A prefix begins every namespace the lab makes (<prefix>-node1, <prefix>-cni-<uuid>)
# and the names of its files in STATE_DIR: lowercase letters, digits and '-',
# starting with a letter, so it can hold no '/', '..', space, glob or control
# character; at most 15 characters (IFNAMSIZ - 1, include/uapi/linux/if.h), so
# that it would still fit an interface name.
PREFIX_RE = re.compile(r"[a-z][a-z0-9-]{0,14}")
HOLDER_PATH_RE = re.compile(r"/proc/([1-9][0-9]{0,9})/ns/net")
MAX_STATE_BYTES = 1 << 20

SO_NETNS_COOKIE = 71           # include/uapi/asm-generic/socket.h, since Linux 5.14
ALIAS = frozenset({"IFLA_IFALIAS"})    # IFLA_IFALIAS, include/uapi/linux/if_link.h
LOOPBACK_IFINDEX = 1           # include/net/flow.h: lo is the first device of every namespace
STAMP_RE = re.compile(r"netdrop-lab-[0-9a-f]{32}")

# Debian's containernetworking-plugins. The network is flannel's: "cbr0", on
# bridge cni0, host-local IPAM (flannel's CNI plugin delegates to these two).
CNI_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local")
CNI_NETWORK = "cbr0"
CNI_IFNAME = "eth0"
CNI_ENV = "NETDROP_LAB_CNI"            # "0": pods by hand even when the plugins are installed
CNI_DEL_BUDGET = 0.5                   # seconds destroy() spends on DELs (signals end a run within 2 s)


class LabError(UserError):
    pass


def check_prefix(prefix: str) -> str:
    """prefix if it is a valid lab prefix, else LabError (one line)."""
    if not PREFIX_RE.fullmatch(prefix):
        raise LabError(f"invalid prefix {prefix!r}: 1 to 15 lowercase letters, digits or '-', "
                       f"starting with a letter (it names the demo's namespaces and files)")
    return prefix


def in_netns(ns: str) -> list[str]:
    """The command prefix that enters ns: a /run/netns name, or a path such as
    /proc/PID/ns/net for a namespace that only a process holds."""
    return ["nsenter", f"--net={ns}"] if ns.startswith("/") else ["ip", "netns", "exec", ns]


def cni_plugins(cni_dir: Path | None = None) -> Path | None:
    """cni_dir when the bridge and host-local plugins are installed there, None when
    not. Root runs them: each must be a regular file that only root can change,
    in directories only root can change, else LabError (never run, never skipped
    in silence)."""
    cni_dir = CNI_DIR if cni_dir is None else cni_dir
    if not all(os.path.lexists(cni_dir / p) for p in CNI_PLUGINS):
        return None
    for name in CNI_PLUGINS:
        path = cni_dir / name
        try:
            check_tree(path, "the CNI plugin", owners={0})
        except UserError as exc:
            raise LabError(f"{exc} (remove it, or run the demo with {CNI_ENV}=0)") from None
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise LabError(f"cannot use the CNI plugin {path}: it is not a regular file")
    return cni_dir


def cni_wanted(choice: bool | None) -> Path | None:
    """The plugins' directory when the lab is to use them: choice=None lets
    NETDROP_LAB_CNI=0 or their absence decide; True requires them."""
    if choice is None:
        if os.environ.get(CNI_ENV, "").strip() == "0":
            return None
        return cni_plugins()
    if not choice:
        return None
    found = cni_plugins()
    if found is None:
        raise LabError(f"the CNI plugins {', '.join(CNI_PLUGINS)} are not installed in {CNI_DIR} "
                       f"(run scripts/setup)")
    return found


def run(*cmd: str, ns: str | None = None, check: bool = True, timeout: float = 30) -> str:
    """Run a command, inside namespace `ns` if given. Never in the host namespace
    for anything that changes state: callers always pass ns or use `ip -n`."""
    full = (in_netns(ns) if ns else []) + list(cmd)
    try:
        res = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise LabError(f"{full[0]} is not installed (run scripts/setup)") from None
    if check and res.returncode != 0:
        raise LabError(f"{' '.join(full)} failed: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


@functools.cache
def netns_cookies() -> bool:
    """Whether this kernel tells a namespace's cookie: SO_NETNS_COOKIE came in Linux
    5.14 (sock_getsockopt(), net/core/sock.c); older kernels refuse the option
    (ENOPROTOOPT, its default case). Asked once, of a socket in our own namespace."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class NetnsId:
    """Which namespace a path leads to. The inode alone does not tell: the kernel
    gives a freed namespace's inode number to the next one made (proc_alloc_inum(),
    an IDA, fs/proc/generic.c), so a namespace deleted and re-made by someone else
    under the same name may show the same inode. With it, one of:

    - cookie: the netns cookie (SO_NETNS_COOKIE), a 64-bit id the kernel never reuses;
    - stamp: on kernels without the cookie, a random token (STAMP_RE, 128 bits) the
      lab writes as the namespace's loopback alias (IFLA_IFALIAS) right after making
      it. A namespace someone else makes has no alias, or one of theirs: it cannot
      carry the stamp unless they copied it from the lab's state file (root's alone)
      or from inside the lab's namespace. The alias lives and dies with the
      namespace: its lo can be neither deleted (no rtnl_link_ops: rtnl_dellink(),
      net/core/rtnetlink.c) nor moved out (NETIF_F_NETNS_LOCAL, gen_lo_setup(),
      drivers/net/loopback.c). An alias changed inside only makes the lab leave it."""

    inode: int
    cookie: int | None = None
    stamp: str | None = None

    def __post_init__(self) -> None:
        if (self.cookie is None) == (self.stamp is None):
            raise ValueError("a namespace's identity is its inode with a cookie or a stamp")

    def is_at(self, path: str) -> bool:
        """Whether the namespace at path is this one; False when that cannot be told."""
        return netns_id(path, cookie=self.cookie is not None) == self

    def as_json(self) -> dict[str, int | str]:
        """As the state file records it (parse_netns_id reads it)."""
        out: dict[str, int | str] = {"inode": self.inode}
        if self.cookie is not None:
            out["cookie"] = self.cookie
        if self.stamp is not None:
            out["stamp"] = self.stamp
        return out


def new_stamp() -> str | None:
    """A stamp for a namespace about to be made, where the kernel has no cookie (else None)."""
    return None if netns_cookies() else f"netdrop-lab-{secrets.token_hex(16)}"


def netns_id(path: str, cookie: bool | None = None) -> NetnsId | None:
    """The namespace at path (a /run/netns file or /proc/PID/ns/net), None if there is
    none or it cannot be told: with its cookie (cookie=True), its stamp (False), or
    the cookie where this kernel has it (None). Both are read in the namespace,
    through a socket made inside it (nsexec.socket_in)."""
    try:
        inode = os.stat(path).st_ino
    except OSError:
        return None
    if cookie is None:
        cookie = netns_cookies()
    if not cookie:
        stamp = read_stamp(path)
        return NetnsId(inode, stamp=stamp) if stamp is not None else None
    sock = socket_in(path, socket.AF_UNIX, socket.SOCK_DGRAM)
    if sock is None:
        return None
    with sock:
        try:
            value = int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), sys.byteorder)
        except OSError:
            return None
    return NetnsId(inode, cookie=value)


def read_stamp(path: str) -> str | None:
    """The lab's stamp on the namespace at path: its lo's alias, asked of rtnetlink
    inside it (RTM_GETLINK of LOOPBACK_IFINDEX); None if it has none, or cannot be asked."""
    try:
        with rtnl.Rtnl(path) as rt:
            msg = rt.link(LOOPBACK_IFINDEX)
    except OSError:         # no such namespace
        return None
    return stamp_of(msg) if msg is not None else None


def parse_stamp(reply: bytes) -> str | None:
    """The stamp in an answer to read_stamp's request (its first RTM_NEWLINK of lo); None for
    anything else. Any input, never raises."""
    for msg in rtnl.decode(reply):
        if rtnl.kind(msg) == rtnl.RTM_NEWLINK and rtnl.link_index(msg) == LOOPBACK_IFINDEX:
            return stamp_of(msg)
    return None


def stamp_of(msg: rtnl.Message) -> str | None:
    """IFLA_IFALIAS of lo's RTM_NEWLINK, if it is one the lab writes (STAMP_RE)."""
    if rtnl.link_index(msg) != LOOPBACK_IFINDEX:
        return None
    alias = rtnl.text((rtnl.link_attrs(msg, ALIAS) or {}).get("IFLA_IFALIAS")) or ""
    return alias if STAMP_RE.fullmatch(alias) else None


def kill_holder(pid: int, ident: NetnsId) -> None:
    """SIGKILL pid if it is still a holder of ours: `sleep infinity` inside the
    namespace ident. Through a pidfd (pidfd_open(2)), so that the checks and the
    signal concern one process: if it died and its pid went to another, the
    signal fails (ESRCH) instead of reaching that one. Waits (at most 1 s) until
    it has exited, so that its namespace goes with it."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        try:
            ours = Path(f"/proc/{pid}/cmdline").read_bytes() == HOLDER_CMDLINE
        except OSError:
            return
        if not ours or not ident.is_at(f"/proc/{pid}/ns/net"):
            return
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            return
        select.select([pidfd], [], [], 1.0)     # a pidfd is readable once its process has exited
    finally:
        os.close(pidfd)


@dataclass(frozen=True)
class Made:
    """A namespace a lab made: its /run/netns name, or /proc/PID/ns/net of the
    process holding it, and which namespace that was."""

    entry: str
    netns: NetnsId

    @property
    def holder_pid(self) -> int | None:
        m = HOLDER_PATH_RE.fullmatch(self.entry)
        return int(m.group(1)) if m else None


@dataclass(frozen=True)
class LabState:
    """A lab's state file: what it made, oldest first."""

    made: tuple[Made, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"namespaces": [m.entry for m in self.made],
                           "ids": {m.entry: m.netns.as_json() for m in self.made}})


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1 << 64 else None


def parse_netns_id(value: object) -> NetnsId | None:
    """An identity as NetnsId.as_json writes it ({"inode", "cookie"} or {"inode",
    "stamp"}, nothing else), None for anything else."""
    if not isinstance(value, dict) or set(value) not in ({"inode", "cookie"}, {"inode", "stamp"}):
        return None
    inode, cookie, stamp = _positive_int(value["inode"]), _positive_int(value.get("cookie")), value.get("stamp")
    stamp = stamp if isinstance(stamp, str) and STAMP_RE.fullmatch(stamp) else None
    if inode is None or (cookie is None) == (stamp is None):
        return None
    return NetnsId(inode, cookie, stamp)


def parse_state(text: str, prefix: str) -> LabState:
    """A state file's text, as LabState; LabError for anything else. Only entries a
    lab with this prefix can have made are accepted: a name `<prefix>-...` of
    lowercase letters, digits and '-', or a holder's /proc/PID/ns/net."""
    def bad(why: str) -> LabError:
        return LabError(f"lab state file for prefix {prefix} is damaged ({why}): check and remove it")

    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise bad("not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("namespaces"), list) \
            or not isinstance(data.get("ids"), dict):
        raise bad("no namespaces and ids")
    name_re = re.compile(re.escape(prefix) + r"-[a-z0-9-]{1,100}")
    made: list[Made] = []
    for entry in data["namespaces"]:
        if not isinstance(entry, str) or not (name_re.fullmatch(entry) or HOLDER_PATH_RE.fullmatch(entry)):
            raise bad(f"a namespace {entry!r} this lab cannot have made")
        ident = parse_netns_id(data["ids"].get(entry))
        if ident is None:
            raise bad(f"no identity for {entry!r}")
        made.append(Made(entry, ident))
    return LabState(tuple(made))


def _private_state_dir() -> Path:
    """STATE_DIR, made mode 0700 if missing. One that exists must be a directory of
    root's that nobody else can write, not a link: others could otherwise plant
    links or files where root writes the lab's state and the API's token."""
    check_tree(STATE_DIR.parent, "the lab's state directory")
    try:
        os.mkdir(STATE_DIR, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise LabError(f"cannot create the lab's state directory {STATE_DIR}: {exc.strerror}") from None
    st = os.lstat(STATE_DIR)
    if stat.S_ISLNK(st.st_mode):
        why: str | None = "it is a symbolic link"
    elif not stat.S_ISDIR(st.st_mode):
        why = "it is not a directory"
    else:
        why = why_untrusted(st, {0})
    if why is not None:
        raise LabError(f"refusing the lab's state directory {STATE_DIR}: {why}; remove it, netdrop makes it "
                       f"again (root's, mode 0700)")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(STATE_DIR, 0o700, follow_symlinks=False)    # one an older netdrop made 0755
    return STATE_DIR


@dataclass(frozen=True)
class Pod:
    name: str            # Kubernetes name, e.g. web-7d9f8c6b5-x2k4q
    namespace: str       # Kubernetes namespace
    netns: str           # CNI-style network namespace name (<prefix>-cni-<uuid>); the node's for hostNetwork
    node: str            # netns name of its node
    ipv4: str
    ipv6: str | None
    host_veth: str | None  # the veth's name in the node namespace
    host_network: bool = False
    container_id: str | None = None   # the sandbox's id, as CNI_CONTAINERID and in its IPAM reservations


# role -> (Kubernetes name, namespace, node index, host part of the IPs, labels)
POD_SPECS = {
    "web": ("web-7d9f8c6b5-x2k4q", "default", 1, 10, {"app": "web", "pod-template-hash": "7d9f8c6b5"}),
    "db": ("db-0", "default", 1, 11, {"app": "db"}),
    "cache": ("cache-6f8b9c7d4-q2w3e", "default", 1, 13, {"app": "cache"}),
    "api": ("api-5c6d7b9f4-m8n2p", "shop", 2, 10, {"app": "api"}),
}
# Like Docker's, cache's sandbox has no /run/netns name: only a process holds it.
UNNAMED_PODS = {"cache"}
NODE_NAMES = {1: "sim-node1", 2: "sim-node2"}


@dataclass
class SimNode:
    prefix: str
    node1: str
    node2: str
    client: str
    pods: dict[str, Pod] = field(default_factory=dict)
    made: dict[str, NetnsId] = field(default_factory=dict)     # entry (see Made) -> identity, oldest first
    holders: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)   # /proc path -> holding process
    api: labapi.KubeAPI | None = None
    kubeconfig: Path | None = None
    _files_checked: bool = field(default=False, init=False, repr=False)   # STATE_DIR found private
    _bridges: set[int] = field(default_factory=set, init=False, repr=False)  # nodes whose cni0 is pinned

    CLIENT_V4 = "172.16.200.2"
    CLIENT_V6 = "fd00:200::2"
    NODE1_EXT = "172.16.200.1"
    UNROUTED_POD = "10.244.3.10"   # a pod on a third node whose route node1 lacks
    HOSTNET_PORT = 9100

    pod_mtu: int = POD_MTU
    hairpin: bool = False
    healthy: bool = False
    cni_dir: Path | None = None      # the CNI plugins make the pods; None: by hand

    def __post_init__(self) -> None:
        check_prefix(self.prefix)     # before any name or path is made of it

    @classmethod
    def create(cls, prefix: str | None = None, with_api: bool = True, healthy: bool = False,
               cni: bool | None = None) -> SimNode:
        """healthy=True: pods at the overlay's MTU, hairpin on, a route to node3's pod CIDR: a node
        netdrop doctor finds nothing wrong with (the seed cases' misconfigurations are absent).
        cni: pods made by the CNI plugins (True), by hand (False), or by the plugins when they are
        installed and NETDROP_LAB_CNI is not 0 (None)."""
        prefix = prefix if prefix is not None else f"ndt{os.getpid()}"
        node = cls(prefix, f"{prefix}-node1", f"{prefix}-node2", f"{prefix}-client",
                   pod_mtu=OVERLAY_MTU if healthy else POD_MTU, hairpin=healthy, healthy=healthy,
                   cni_dir=cni_wanted(cni))
        node.cleanup_leftovers()
        try:
            node._build()
            if with_api:
                node._start_api()
            node.wait_ready()
        except BaseException:
            node.destroy()
            raise
        return node

    @property
    def _state_file(self) -> Path:
        return STATE_DIR / f"lab-{self.prefix}.json"

    @property
    def _kubeconfig_file(self) -> Path:
        return STATE_DIR / f"lab-{self.prefix}.kubeconfig"

    @property
    def _lab_dir(self) -> Path:
        return STATE_DIR / f"lab-{self.prefix}"

    def _save_state(self) -> None:
        # A new file (0600 from its first byte) renamed over the old one: never written through a link.
        state = LabState(tuple(Made(entry, ident) for entry, ident in self.made.items()))
        write_private(STATE_DIR, self._state_file.name, state.to_json())

    def _read_state(self) -> LabState:
        try:
            fd = os.open(self._state_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return LabState()
        except OSError as exc:      # ELOOP: a link, which netdrop never makes
            raise LabError(f"cannot read the lab's state file {self._state_file}: {exc.strerror}; "
                           f"check and remove it") from None
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_STATE_BYTES)
        return parse_state(data.decode("utf-8", "replace"), self.prefix)

    def cleanup_leftovers(self) -> None:
        """What an earlier run with this prefix left (a killed demo), as its state
        file records it: each namespace removed only if the one there is still the
        one it made, each holder killed only if it still is one of ours in it."""
        _private_state_dir()
        self._files_checked = True
        for made in reversed(self._read_state().made):
            self._remove(made.entry, made.netns)
        self._remove_files()

    def _remove_files(self) -> None:
        # unlink() removes a link itself, never its target; rmtree() does not follow links.
        self._kubeconfig_file.unlink(missing_ok=True)
        shutil.rmtree(self._lab_dir, ignore_errors=True)
        self._state_file.unlink(missing_ok=True)

    def _netns(self, name: str) -> None:
        """Make namespace `name`, recorded as ours before anything is put in it. A
        name that exists is someone else's (ours went in cleanup_leftovers): refused."""
        if os.path.lexists(NETNS_DIR / name):
            raise LabError(f"network namespace {name} exists and this lab did not make it: netdrop removes "
                           f"only what it made; choose another --prefix")
        stamp = new_stamp()
        try:
            run("ip", "netns", "add", name)
        except LabError:
            raise                # not made (`ip netns add` refuses a name that exists)
        except BaseException:
            # Interrupted while `ip netns add` ran: the name did not exist a moment
            # ago, so a namespace there now is the one it made.
            self._claim(name, stamp)
            raise
        if not self._claim(name, stamp):
            raise LabError(f"network namespace {name} vanished as it was made")
        run("ip", "-n", name, "link", "set", "lo", "up")
        # One ICMP error per dropped packet, as tests count them: the per-host
        # limit (icmp_ratelimit, per namespace; icmpv4_xrlim_allow()) would hold
        # back errors after a burst of six, and which ones depends on earlier tests.
        # No duplicate address detection: the lab's addresses are unique by construction, and an
        # address in DAD is tentative for a second (addrconf_dad_begin(), net/ipv6/addrconf.c),
        # which the bridge plugin waits out for each pod's address and for the bridge's.
        run("sysctl", "-qw", "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0",
            "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0", ns=name)

    def _claim(self, name: str, stamp: str | None) -> bool:
        """Record the namespace just made under name as ours, stamped first where the
        kernel has no cookie (see NetnsId); False if there is none to record."""
        if stamp is not None:
            run("ip", "-n", name, "link", "set", "lo", "alias", stamp, check=False)
        ident = netns_id(str(NETNS_DIR / name), cookie=stamp is None)
        if ident is None or ident.stamp != stamp:
            return False
        self._record(name, ident)
        return True

    def _record(self, entry: str, ident: NetnsId) -> None:
        self.made[entry] = ident
        self._save_state()

    def _remove(self, entry: str, ident: NetnsId) -> None:
        """Remove a namespace this lab made, if the one at entry still is that one."""
        if entry in self.holders:
            self._release(entry)
            return
        if not ident.is_at(entry if entry.startswith("/") else str(NETNS_DIR / entry)):
            return                   # gone, someone else's now, or cannot be told
        pid = Made(entry, ident).holder_pid
        if pid is not None:
            kill_holder(pid, ident)
        else:
            run("ip", "netns", "del", entry, check=False)

    def _build(self) -> None:
        for ns in (self.node1, self.node2, self.client):
            self._netns(ns)
        # Underlay between the nodes and the link to the outside client.
        run("ip", "-n", self.node1, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", self.node2)
        run("ip", "-n", self.node1, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0",
            "netns", self.client)
        self._addr(self.node1, "eth0", "192.168.100.1/24")
        self._addr(self.node2, "eth0", "192.168.100.2/24")
        self._addr(self.node1, "ext0", f"{self.NODE1_EXT}/24", "fd00:200::1/64")
        self._addr(self.client, "eth0", f"{self.CLIENT_V4}/24", f"{self.CLIENT_V6}/64")
        run("ip", "-n", self.client, "route", "add", "10.244.0.0/16", "via", self.NODE1_EXT)
        run("ip", "-n", self.client, "-6", "route", "add", "fd00:10:244::/48", "via", "fd00:200::1")
        for i, ns in ((1, self.node1), (2, self.node2)):
            for key, val in (("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1")):
                run("sysctl", "-qw", f"{key}={val}", ns=ns)
            if self.cni_dir is None:     # else the bridge plugin makes it with the node's first pod
                run("ip", "-n", ns, "link", "add", "cni0", "address", self._bridge_mac(i), "type", "bridge")
                self._addr(ns, "cni0", f"10.244.{i}.1/24", f"fd00:10:244:{i}::1/64")
            self._vxlan(ns, i)
        self._overlay_routes()
        if self.healthy:    # node3 is only in the API; its route is what matters here
            run("ip", "-n", self.node1, "route", "add", "10.244.3.0/24", "via", "10.244.3.0", "dev", "flannel.1",
                "onlink")
        for role in POD_SPECS:
            self.add_pod(role)
        self.pods["node-exporter"] = Pod("node-exporter-4kq9z", "monitoring", self.node1, self.node1,
                                         self.NODE1_EXT, None, None, host_network=True)
        # node2 returns traffic for the client through node1.
        run("ip", "-n", self.node2, "route", "add", "172.16.200.0/24", "via", "192.168.100.1")
        self._kube_proxy()

    SVC_DB = ("10.96.0.20", 8080)            # -> db:8080
    SVC_DNS = ("10.96.0.10", 53)             # -> db:53 or cache:53, at random
    SVC_EMPTY = ("10.96.0.30", 80)           # no endpoints: REJECT
    SVC_EMPTY_COMMENT = "default/empty:http has no endpoints"

    def _kube_proxy(self) -> None:
        """node1's iptables as kube-proxy (iptables mode) writes them, for three Services."""
        def ipt(*args: str) -> None:
            run("iptables", *args, ns=self.node1)

        # Service addresses need a route for the packets to reach FORWARD (a real node has a
        # default route); the outside client plays the upstream for them.
        run("ip", "-n", self.node1, "route", "add", "10.96.0.0/12", "via", self.CLIENT_V4)
        db, cache = POD_SPECS["db"][3], POD_SPECS["cache"][3]
        ipt("-N", "KUBE-FORWARD")
        ipt("-A", "KUBE-FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
        ipt("-N", "KUBE-SERVICES")
        ipt("-A", "KUBE-SERVICES", "-d", f"{self.SVC_EMPTY[0]}/32", "-p", "tcp", "--dport", str(self.SVC_EMPTY[1]),
            "-m", "comment", "--comment", self.SVC_EMPTY_COMMENT, "-j", "REJECT",
            "--reject-with", "icmp-port-unreachable")
        ipt("-A", "FORWARD", "-m", "comment", "--comment", "kubernetes forwarding rules", "-j", "KUBE-FORWARD")
        ipt("-A", "FORWARD", "-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment",
            "kubernetes service portals", "-j", "KUBE-SERVICES")
        ipt("-t", "nat", "-N", "KUBE-SERVICES")
        ipt("-t", "nat", "-A", "PREROUTING", "-j", "KUBE-SERVICES")
        ipt("-t", "nat", "-A", "KUBE-SERVICES", "-d", f"{self.SVC_DB[0]}/32", "-p", "tcp", "--dport",
            str(self.SVC_DB[1]), "-j", "DNAT", "--to-destination", f"10.244.1.{db}:8080")
        ipt("-t", "nat", "-A", "KUBE-SERVICES", "-d", f"{self.SVC_DNS[0]}/32", "-p", "udp", "--dport", "53",
            "-m", "statistic", "--mode", "random", "--probability", "0.5",
            "-j", "DNAT", "--to-destination", f"10.244.1.{db}:53")
        ipt("-t", "nat", "-A", "KUBE-SERVICES", "-d", f"{self.SVC_DNS[0]}/32", "-p", "udp", "--dport", "53",
            "-j", "DNAT", "--to-destination", f"10.244.1.{cache}:53")

    def _node_of(self, i: int) -> str:
        return self.node1 if i == 1 else self.node2

    def _start_api(self) -> None:
        self.api = labapi.KubeAPI()
        self.api.start()
        # As flannel's vxlan backend annotates each node: its VNI and VTEP MAC.
        for i in (1, 2):
            backend = json.dumps({"VNI": 1, "VtepMAC": self._vtep_mac(i)})
            self.api.add_node(labapi.node_object(NODE_NAMES[i], [f"192.168.100.{i}"], f"10.244.{i}.0/24",
                                                 {"flannel.alpha.coreos.com/backend-data": backend}))
        # A third node, whose pod CIDR node1 has no route to (the no-route case).
        self.api.add_node(labapi.node_object("sim-node3", ["192.168.100.3"], "10.244.3.0/24"))
        for pod in self.pods.values():
            self.api.put_pod(self.pod_object(pod))
        try:
            self.kubeconfig = self.api.write_kubeconfig(self._kubeconfig_file)
        except OSError as exc:
            raise LabError(f"cannot write the lab's kubeconfig {self._kubeconfig_file}: {exc.strerror}") from None

    def node_name(self, pod: Pod) -> str:
        return NODE_NAMES[1 if pod.node == self.node1 else 2]

    def pod_object(self, pod: Pod) -> labapi.Obj:
        if pod.host_network:
            return labapi.pod_object(pod.name, pod.namespace, NODE_NAMES[1], [self.NODE1_EXT], self.NODE1_EXT,
                                     labels={"app": "node-exporter"}, host_network=True,
                                     ports=[self.HOSTNET_PORT])
        role = next(r for r, spec in POD_SPECS.items() if spec[0] == pod.name)
        host_ip = "192.168.100.1" if pod.node == self.node1 else "192.168.100.2"
        ips = [ip for ip in (pod.ipv4, pod.ipv6) if ip is not None]
        return labapi.pod_object(pod.name, pod.namespace, self.node_name(pod), ips, host_ip,
                                 labels=POD_SPECS[role][4], ports=[8080],
                                 owner=pod.name.rsplit("-", 1)[0] if pod.name.count("-") >= 2 else None)

    def wait_ready(self, seconds: float = 10.0) -> None:
        """Until the client reaches every node1 pod over IPv4 and IPv6: neighbour
        discovery must be done, or the first packets of a case wait in (and may
        be purged from) the neighbour queue instead of meeting their drop."""
        deadline = time.monotonic() + seconds
        targets = [a for p in self.pods.values() if p.node == self.node1 and not p.host_network
                   for a in (p.ipv4, p.ipv6) if a is not None]
        targets.append(self.pods["api"].ipv4)
        for addr in targets:
            while subprocess.run(["ip", "netns", "exec", self.client, "ping", "-c1", "-W1", addr],
                                 capture_output=True, timeout=5).returncode != 0:
                if time.monotonic() >= deadline:
                    raise LabError(f"simulated node not ready: client cannot reach {addr}")
                time.sleep(0.1)

    def _addr(self, ns: str, dev: str, *addrs: str) -> None:
        for a in addrs:
            extra = ["nodad"] if ":" in a else []
            run("ip", "-n", ns, "addr", "add", a, "dev", dev, *extra)
        run("ip", "-n", ns, "link", "set", dev, "up")

    @staticmethod
    def _bridge_mac(i: int) -> str:
        # A fixed address, as newer bridge plugins set one: a bridge otherwise takes
        # its lowest port's MAC (br_stp_recalculate_bridge_id(), net/bridge/br_stp_if.c),
        # which changes when a pod goes, and the other pods' cached gateway address goes stale.
        return f"0e:00:00:00:{i:02x}:02"

    @staticmethod
    def _vtep_mac(i: int) -> str:
        return f"0e:00:00:00:{i:02x}:01"

    def _vxlan(self, ns: str, i: int) -> None:
        # Like flannel's vxlan backend: one VTEP per node, static ARP and FDB entries.
        run("ip", "-n", ns, "link", "add", "flannel.1", "type", "vxlan", "id", "1",
            "local", f"192.168.100.{i}", "dev", "eth0", "dstport", str(VXLAN_PORT), "nolearning")
        run("ip", "-n", ns, "link", "set", "flannel.1", "address", self._vtep_mac(i), "mtu", str(OVERLAY_MTU))
        self._addr(ns, "flannel.1", f"10.244.{i}.0/32")

    def _overlay_routes(self) -> None:
        for here, _there, j in ((self.node1, self.node2, 2), (self.node2, self.node1, 1)):
            run("ip", "-n", here, "route", "add", f"10.244.{j}.0/24", "via", f"10.244.{j}.0",
                "dev", "flannel.1", "onlink")
            run("ip", "-n", here, "neigh", "add", f"10.244.{j}.0", "lladdr", self._vtep_mac(j),
                "dev", "flannel.1", "nud", "permanent")
            run("bridge", "-n", here, "fdb", "append", self._vtep_mac(j), "dev", "flannel.1",
                "dst", f"192.168.100.{j}")

    def add_pod(self, role: str, host: int | None = None) -> Pod:
        """A pod sandbox as a CNI plugin makes it, behind the lab's prefix: netns
        <prefix>-cni-<uuid>, veth<hex> on cni0; made by the plugins themselves
        when the lab has them (cni_dir), else by hand."""
        name, namespace, i, default_host, _labels = POD_SPECS[role]
        host = host or default_host
        node = self._node_of(i)
        ns = f"{self.prefix}-cni-{uuid.uuid4()}"
        container_id = secrets.token_hex(32)      # as containerd names a sandbox
        self._netns(ns)
        v4, v6 = f"10.244.{i}.{host}", f"fd00:10:244:{i}::{host:x}"
        if self.cni_dir is not None:
            veth = self._cni_add(i, ns, container_id, v4, v6)
        else:
            veth = self._add_by_hand(i, ns, v4, v6)
            if node == self.node1:
                self._ipam_reserve(v4, container_id)
        if role in UNNAMED_PODS:
            ns = self._unname(ns)
        pod = Pod(name, namespace, ns, node, v4, v6, veth, container_id=container_id)
        self.pods[role] = pod
        return pod

    def _add_by_hand(self, i: int, ns: str, v4: str, v6: str) -> str:
        """What the bridge plugin does for a pod (see _cni_add); returns the host veth's name."""
        node = self._node_of(i)
        veth = "veth" + secrets.token_hex(4)
        run("ip", "-n", node, "link", "add", veth, "mtu", str(self.pod_mtu), "type", "veth", "peer", "name",
            CNI_IFNAME, "netns", ns)
        run("ip", "-n", node, "link", "set", veth, "master", "cni0", "up")
        if self.hairpin:
            run("ip", "-n", node, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
        run("ip", "-n", ns, "link", "set", CNI_IFNAME, "mtu", str(self.pod_mtu))
        self._addr(ns, CNI_IFNAME, f"{v4}/24", f"{v6}/64")
        run("ip", "-n", ns, "route", "add", "default", "via", f"10.244.{i}.1")
        run("ip", "-n", ns, "-6", "route", "add", "default", "via", f"fd00:10:244:{i}::1")
        return veth

    def cni_netconf(self, i: int, ips: tuple[str, ...] = ()) -> dict[str, object]:
        """node i's network configuration, as flannel hands it to the bridge plugin
        (flannel's delegate: bridge cni0, the pods' MTU, host-local over the node's
        pod CIDRs), host-local's state in the lab's directory; `ips` asks host-local
        for those addresses (CNI's "ips" argument), as the lab's pods have fixed ones."""
        conf: dict[str, object] = {
            "cniVersion": "0.4.0", "name": CNI_NETWORK, "type": "bridge", "bridge": "cni0",
            "isGateway": True, "isDefaultGateway": True, "ipMasq": False, "hairpinMode": self.hairpin,
            "mtu": self.pod_mtu,
            "ipam": {"type": "host-local", "dataDir": str(self._ipam_dir_of(i)),
                     "ranges": [[{"subnet": f"10.244.{i}.0/24"}], [{"subnet": f"fd00:10:244:{i}::/64"}]],
                     "routes": [{"dst": "10.244.0.0/16"}]},
        }
        if ips:
            conf["args"] = {"cni": {"ips": list(ips)}}
        return conf

    def _cni(self, command: str, i: int, netns: str, container_id: str, ips: tuple[str, ...] = (),
             timeout: float = 30) -> dict[str, object]:
        """Run the bridge plugin (which runs host-local) inside node i's namespace, as
        the container runtime does on a real node: the CNI_* variables, the network's
        configuration on stdin, its result (or error) on stdout."""
        assert self.cni_dir is not None
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
               "CNI_NETNS": netns if netns.startswith("/") else str(NETNS_DIR / netns),
               "CNI_IFNAME": CNI_IFNAME, "CNI_PATH": str(self.cni_dir)}
        full = [*in_netns(self._node_of(i)), str(self.cni_dir / "bridge")]
        res = subprocess.run(full, input=json.dumps(self.cni_netconf(i, ips)), env=env, capture_output=True,
                             text=True, timeout=timeout)
        try:
            out = json.loads(res.stdout) if res.stdout.strip() else {}
        except ValueError:
            out = {}
        if not isinstance(out, dict):
            out = {}
        if res.returncode != 0:
            why = out.get("msg") or res.stderr.strip() or res.stdout.strip() or f"exit status {res.returncode}"
            raise LabError(f"CNI {command} of {netns} on {self._node_of(i)} failed: {why}")
        return out

    def _cni_add(self, i: int, ns: str, container_id: str, v4: str, v6: str) -> str:
        """CNI ADD of sandbox ns; returns the host veth the bridge plugin made."""
        self._ipam_dir_of(i, make=True)
        result = self._cni("ADD", i, ns, container_id, (v4, v6))
        if i not in self._bridges:      # the plugin has just made cni0, with the node's first pod
            run("ip", "-n", self._node_of(i), "link", "set", "cni0", "address", self._bridge_mac(i))
            self._bridges.add(i)
        ifaces = result.get("interfaces")
        hosts = [f.get("name") for f in ifaces if isinstance(f, dict) and not f.get("sandbox")
                 and f.get("name") != "cni0"] if isinstance(ifaces, list) else []
        if len(hosts) != 1 or not isinstance(hosts[0], str):
            raise LabError(f"CNI ADD of {ns}: no host veth in the bridge plugin's result")
        return hosts[0]

    def _cni_del(self, pod: Pod, timeout: float = 30) -> None:
        """CNI DEL of a pod the plugins made: its veth goes, host-local frees its addresses."""
        if self.cni_dir is None or pod.container_id is None or pod.host_network:
            return
        self._cni("DEL", 1 if pod.node == self.node1 else 2, pod.netns, pod.container_id, timeout=timeout)

    @property
    def ipam_dir(self) -> Path:
        """host-local IPAM state of node1's network, as /var/lib/cni/networks holds it."""
        return self._lab_dir / "cni" / "networks"

    def _ipam_dir_of(self, i: int, make: bool = False) -> Path:
        """host-local's dataDir for node i: node1's is ipam_dir (what `doctor --cni-dir` reads);
        made root's only (0700) down to the network's directory, which host-local then uses as is."""
        base = self.ipam_dir if i == 1 else self._lab_dir / "cni" / f"networks-node{i}"
        if make:
            for d in (self._lab_dir, self._lab_dir / "cni", base, base / CNI_NETWORK):
                d.mkdir(mode=0o700, exist_ok=True)
        return base

    def _ipam_reserve(self, ip: str, container_id: str) -> None:
        """By hand, what host-local writes for a pod's address: the container's id and interface."""
        net = self._ipam_dir_of(1, make=True) / CNI_NETWORK
        write_private(net, ip, f"{container_id}\r\n{CNI_IFNAME}")
        write_private(net, "last_reserved_ip.0", ip)

    def _unname(self, name: str) -> str:
        """Keep the namespace alive with a process and drop its /run/netns name,
        as Docker leaves a sandbox: reachable only through /proc/PID/ns/net."""
        ident = self.made[name]
        holder = subprocess.Popen([*in_netns(name), *HOLDER], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        path = f"/proc/{holder.pid}/ns/net"
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:      # until `ip netns exec` has exec'd sleep inside it
                try:
                    if Path(f"/proc/{holder.pid}/cmdline").read_bytes() == HOLDER_CMDLINE \
                            and ident.is_at(path):
                        break
                except OSError:
                    pass
                time.sleep(0.01)
            else:
                raise LabError(f"could not hold namespace {name} with a process")
        except BaseException:
            holder.kill()
            holder.wait()
            raise
        self.holders[path] = holder
        self._record(path, ident)     # recorded before the name goes, so that one of the two always is
        run("ip", "netns", "del", name)
        del self.made[name]
        self._save_state()
        return path

    def recreate_pod(self, role: str, host: int) -> Pod:
        """Delete the pod's sandbox and start a new one with the same name, a new
        uid, a new namespace and the address 10.244.<node>.<host>, as a
        controller restarting it would; the API sees DELETED then ADDED."""
        old = self.pods[role]
        if self.api:
            self.api.delete_pod(old.namespace, old.name)
        self.remove_sandbox(old)
        pod = self.add_pod(role, host)
        if self.api:
            self.api.put_pod(self.pod_object(pod))
        return pod

    def remove_sandbox(self, pod: Pod) -> None:
        """Tear down a sandbox add_pod made, as kubelet does: CNI DEL (its veth and
        its addresses' reservations go), then its namespace. Its Pod object is the
        caller's to delete first."""
        self._cni_del(pod)
        ident = self.made.pop(pod.netns, None)
        if ident is not None:
            self._remove(pod.netns, ident)
            self._save_state()
        if self.cni_dir is None and pod.node == self.node1:
            (self.ipam_dir / CNI_NETWORK / pod.ipv4).unlink(missing_ok=True)   # what a CNI DEL frees

    def netns_inodes(self) -> dict[str, int]:
        return {entry: ident.inode for entry, ident in self.made.items()}

    def traffic(self, ns: str, *args: str, timeout: float = 40) -> int:
        """Run tracer.lab.traffic inside ns (a /run/netns name or a /proc/PID/ns/net
        path, see in_netns); returns the number of packets it sent."""
        out = run(sys.executable, "-m", "tracer.lab.traffic", *args, ns=ns, timeout=timeout)
        return int(out.strip().splitlines()[-1])

    def serve(self, role: str, *args: str) -> subprocess.Popen[str]:
        """Start a server of tracer.lab.traffic (listen, dns-server) in a pod, once it
        is listening; bounded by its --seconds, and the caller kills it when done."""
        server = subprocess.Popen([*in_netns(self.pods[role].netns), sys.executable, "-m", "tracer.lab.traffic",
                                   *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        if server.stdout.readline().strip() != "listening":
            server.kill()
            server.wait()
            raise LabError(f"the {args[0]} server in pod {role} did not start")
        return server

    def destroy(self) -> None:
        """Remove everything the lab made, and nothing else: its namespaces and the
        processes holding them, its API server and its files. Safe to call again,
        and on a lab whose build stopped half-way; takes well under a second."""
        if self.api:
            self.api.stop()
            self.api = None
        self._cni_del_all()
        for entry, ident in reversed(list(self.made.items())):
            self._remove(entry, ident)
        self.made.clear()
        for path in list(self.holders):
            self._release(path)
        if self._files_checked:
            self._remove_files()
        self.kubeconfig = None

    def _cni_del_all(self) -> None:
        """CNI DEL of each pod, as a node deletes its sandboxes, within CNI_DEL_BUDGET:
        what is left then goes with the namespaces (its veth) and the lab's
        directory (host-local's reservations), so a stop is never held up."""
        deadline = time.monotonic() + CNI_DEL_BUDGET
        for pod in list(self.pods.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if pod.netns in self.made or pod.netns in self.holders:
                # On failure, the namespace's removal below takes the veth all the same.
                with contextlib.suppress(LabError, subprocess.TimeoutExpired):
                    self._cni_del(pod, timeout=left)

    def _release(self, path: str) -> None:
        # Our own child: its pid cannot go to another process before we reap it.
        holder = self.holders.pop(path)
        holder.kill()
        holder.wait(timeout=5)


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    play: Callable[[SimNode, int], int]   # (node, packets) -> packets sent


def _mtu(node: SimNode, n: int) -> int:
    # 1472 bytes of UDP payload = a 1500-byte IP packet with DF: fits the pod's
    # eth0 but not flannel.1 (1450), so node1's ip_forward() drops it.
    api = node.pods["api"]
    return node.traffic(node.pods["web"].netns, "udp", "--dst", api.ipv4, "--port", "5000",
                        "--size", str(POD_MTU - 28), "--df", "--count", str(n))


def _forward_drop(node: SimNode, n: int, settle: float = 1.2) -> int:
    # Docker's classic: FORWARD policy DROP on the node cuts pods off from outside.
    # The policy stays a moment before and after the traffic, as it would on a
    # real node, so that a ruleset sampled once a second sees it.
    run("iptables", "-P", "FORWARD", "DROP", ns=node.node1)
    try:
        time.sleep(settle)
        sent = node.traffic(node.pods["web"].netns, "udp", "--dst", node.CLIENT_V4, "--port", "5353",
                            "--count", str(n))
        time.sleep(settle)
        return sent
    finally:
        run("iptables", "-P", "FORWARD", "ACCEPT", ns=node.node1)


def _udp_closed(node: SimNode, n: int) -> int:
    db = node.pods["db"]
    return node.traffic(node.client, "udp", "--dst", db.ipv4, "--port", "9999", "--count", str(n))


def _udp6_closed(node: SimNode, n: int) -> int:
    db = node.pods["db"]
    assert db.ipv6 is not None      # every pod sandbox is dual-stack (add_pod)
    return node.traffic(node.client, "udp", "--dst", db.ipv6, "--port", "9999", "--count", str(n))


def _tcp_closed(node: SimNode, n: int) -> int:
    db = node.pods["db"]
    return node.traffic(node.client, "tcp", "--dst", db.ipv4, "--port", "8080", "--count", str(n))


def _hostnet_closed(node: SimNode, n: int) -> int:
    # node-exporter (hostNetwork) declares 9100 but is not listening: dropped in the node's namespace.
    return node.traffic(node.client, "udp", "--dst", node.NODE1_EXT, "--port", str(node.HOSTNET_PORT),
                        "--count", str(n))


def _invalid(node: SimNode, n: int) -> int:
    # SYN+FIN: conntrack calls it INVALID, and kube-proxy's KUBE-FORWARD rule drops it.
    return node.traffic(node.client, "tcp-flags", "--dst", node.pods["web"].ipv4, "--port", "8080",
                        "--flags", "0x03", "--count", str(n))


def _no_endpoints(node: SimNode, n: int) -> int:
    ip, port = node.SVC_EMPTY
    return node.traffic(node.pods["web"].netns, "tcp", "--dst", ip, "--port", str(port), "--count", str(n))


def _nat_bypass(node: SimNode, n: int) -> int:
    # The seed case: a Service whose endpoint is on the same bridge, with
    # bridge-nf-call-iptables=0: db's SYN-ACK goes back to web over the bridge
    # untranslated, from db's address; web never connected to that and resets.
    listener = node.serve("db", "listen", "--port", "8080", "--seconds", str(5 + n))
    try:
        run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", ns=node.node1)
        ip, port = node.SVC_DB
        return node.traffic(node.pods["web"].netns, "tcp", "--dst", ip, "--port", str(port), "--count", str(n))
    finally:
        run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", ns=node.node1, check=False)
        listener.kill()
        listener.wait()


DNS_RACE_SECONDS = 20


def _dns_race(node: SimNode, n: int) -> int:
    # The Service's endpoints, db and cache, answer as a cluster DNS does (a
    # bounded responder, traffic.dns_server), and web waits for both answers
    # before it closes the socket, as a resolver does: only the race shows, not
    # a flood of queries nobody answers (NO_SOCKET).
    ip, port = node.SVC_DNS
    servers = [node.serve(role, "dns-server", "--port", str(port), "--answer", node.pods["db"].ipv4,
                          "--seconds", str(DNS_RACE_SECONDS + 5)) for role in ("db", "cache")]
    try:
        return node.traffic(node.pods["web"].netns, "udp-race", "--dst", ip, "--port", str(port),
                            "--count", str(n * 100), "--seconds", str(DNS_RACE_SECONDS), "--wait", "0.2")
    finally:
        for server in servers:
            server.kill()
            server.wait()


def _no_route(node: SimNode, n: int) -> int:
    return node.traffic(node.pods["web"].netns, "udp", "--dst", node.UNROUTED_POD, "--port", "80",
                        "--count", str(n))


CASES = {
    c.name: c for c in (
        Case("mtu", f"pod web -> pod api on node2: 1500-byte DF packets, overlay MTU {OVERLAY_MTU}", _mtu),
        Case("forward-drop", "node1 FORWARD policy DROP: pod web -> outside client", _forward_drop),
        Case("udp-closed", "client -> pod db UDP 9999, nobody listens", _udp_closed),
        Case("udp6-closed", "client -> pod db UDP 9999 over IPv6, nobody listens", _udp6_closed),
        Case("tcp-closed", "client -> pod db TCP 8080, nobody listens", _tcp_closed),
        Case("no-route", "pod web -> 10.244.3.10: node1 has no route to that pod CIDR", _no_route),
        Case("hostnet-closed", "client -> node1 UDP 9100: hostNetwork pod node-exporter not listening",
             _hostnet_closed),
        Case("invalid", "client -> pod web TCP SYN+FIN: conntrack INVALID, kube-proxy's rule drops it", _invalid),
        Case("no-endpoints", "pod web -> Service 10.96.0.30:80 without endpoints: kube-proxy REJECT",
             _no_endpoints),
        Case("nat-bypass", "pod web -> Service 10.96.0.20 -> pod db on the same bridge with "
             "bridge-nf-call-iptables=0: the reply skips un-DNAT", _nat_bypass),
        Case("dns-race", "pod web: two UDP queries at once from one socket to a DNAT'd Service: "
             "conntrack insert races (clash_resolve)", _dns_race),
    )
}


def select_cases(spec: str) -> list[Case]:
    if spec == "all":
        return list(CASES.values())
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise UserError(f"unknown case {', '.join(unknown)} (cases: {', '.join(CASES)})")
    return [CASES[n] for n in names]


class Player:
    """Plays the cases in turn until stopped: a few packets each, a pause between."""

    def __init__(self, node: SimNode, cases: list[Case], packets: int = 5, pause: float = 1.5):
        self.node, self.cases, self.packets, self.pause = node, cases, packets, pause
        self._stop = threading.Event()
        self.sent: dict[str, int] = {}
        self.errors: list[str] = []

    def run(self) -> None:
        while not self._stop.is_set():
            for case in self.cases:
                if self._stop.is_set():
                    return
                try:
                    self.sent[case.name] = self.sent.get(case.name, 0) + case.play(self.node, self.packets)
                except LabError as exc:
                    if self._stop.is_set():   # namespaces already going away
                        return
                    self.errors.append(f"{case.name}: {exc}")
                self._stop.wait(self.pause)

    def stop(self) -> None:
        self._stop.set()
