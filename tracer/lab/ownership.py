"""ownership: what the lab made and may remove, and nothing else.

The lab runs as root on nodes whose other namespaces (real pod sandboxes,
`cni-<uuid>`) are not its own, so it removes only what it made: each namespace
it makes is recorded with its identity (inode and netns cookie; before Linux
5.14, a random stamp the lab writes as its loopback's alias) in a state file
under /run/netdrop (mode 0700, root's), and removed only while the namespace
at that name is still that one. Ownership.remove_all() removes a lab's
namespaces, holder processes and files; cleanup_leftovers() removes what the
state file of a killed run with the same prefix records, never anything found
by name alone.
"""

from __future__ import annotations

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
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..node import rtnl
from ..node.nsexec import socket_in
from ..trust import check_tree, why_untrusted, write_private
from .shell import LabError, in_netns, run

NETNS_DIR = Path("/run/netns")
STATE_DIR = Path("/run/netdrop")
HOLDER = ("sleep", "infinity")
HOLDER_CMDLINE = b"sleep\0infinity\0"

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



def check_prefix(prefix: str) -> str:
    """prefix if it is a valid lab prefix, else LabError (one line)."""
    if not PREFIX_RE.fullmatch(prefix):
        raise LabError(f"invalid prefix {prefix!r}: 1 to 15 lowercase letters, digits or '-', "
                       f"starting with a letter (it names the demo's namespaces and files)")
    return prefix


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


@dataclass
class Ownership:
    """What one lab (one prefix) made: its namespaces with their identities, the
    processes holding the unnamed ones, and its files under STATE_DIR."""

    prefix: str
    made: dict[str, NetnsId] = field(default_factory=dict)     # entry (see Made) -> identity, oldest first
    holders: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)   # /proc path -> holding process
    files_checked: bool = False       # STATE_DIR found private

    def __post_init__(self) -> None:
        check_prefix(self.prefix)     # before any name or path is made of it

    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"lab-{self.prefix}.json"

    @property
    def kubeconfig_file(self) -> Path:
        return STATE_DIR / f"lab-{self.prefix}.kubeconfig"

    @property
    def lab_dir(self) -> Path:
        """The lab's private directory (the CNI plugins' state)."""
        return STATE_DIR / f"lab-{self.prefix}"

    def netns_inodes(self) -> dict[str, int]:
        return {entry: ident.inode for entry, ident in self.made.items()}

    def _save_state(self) -> None:
        # A new file (0600 from its first byte) renamed over the old one: never written through a link.
        state = LabState(tuple(Made(entry, ident) for entry, ident in self.made.items()))
        write_private(STATE_DIR, self.state_file.name, state.to_json())

    def _read_state(self) -> LabState:
        try:
            fd = os.open(self.state_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return LabState()
        except OSError as exc:      # ELOOP: a link, which netdrop never makes
            raise LabError(f"cannot read the lab's state file {self.state_file}: {exc.strerror}; "
                           f"check and remove it") from None
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_STATE_BYTES)
        return parse_state(data.decode("utf-8", "replace"), self.prefix)

    def cleanup_leftovers(self) -> None:
        """What an earlier run with this prefix left (a killed demo), as its state
        file records it: each namespace removed only if the one there is still the
        one it made, each holder killed only if it still is one of ours in it."""
        _private_state_dir()
        self.files_checked = True
        for made in reversed(self._read_state().made):
            self.remove(made.entry, made.netns)
        self._remove_files()

    def _remove_files(self) -> None:
        # unlink() removes a link itself, never its target; rmtree() does not follow links.
        self.kubeconfig_file.unlink(missing_ok=True)
        shutil.rmtree(self.lab_dir, ignore_errors=True)
        self.state_file.unlink(missing_ok=True)

    def add_netns(self, name: str) -> None:
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

    def unname(self, name: str) -> str:
        """Keep the namespace alive with a process and drop its /run/netns name,
        as Docker leaves a sandbox: reachable only through /proc/PID/ns/net, the path returned."""
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

    def remove_netns(self, entry: str) -> None:
        """Remove a namespace this lab made (a name or a holder's path), if it still is the one made."""
        ident = self.made.pop(entry, None)
        if ident is not None:
            self.remove(entry, ident)
            self._save_state()

    def remove(self, entry: str, ident: NetnsId) -> None:
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

    def remove_all(self) -> None:
        """Remove every namespace, holder and file of this lab, newest first. Safe to call again."""
        for entry, ident in reversed(list(self.made.items())):
            self.remove(entry, ident)
        self.made.clear()
        for path in list(self.holders):
            self._release(path)
        if self.files_checked:
            self._remove_files()

    def _release(self, path: str) -> None:
        # Our own child: its pid cannot go to another process before we reap it.
        holder = self.holders.pop(path)
        holder.kill()
        holder.wait(timeout=5)
