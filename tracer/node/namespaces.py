"""namespaces: the node's network namespaces, found and named.

Named ones live under /run/netns (`ip netns`, CNI plugins: bind mounts of
nsfs inodes); unnamed ones are held by processes (/proc/PID/ns/net). An inode
identifies a namespace for its whole life: the kernel's netns cookie is not in
every event, the inode is (ns.inum, include/linux/ns_common.h). Also here: a
user's --netns NAME|PATH|INODE checked to be a network namespace before
anything opens it for reading.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import TypedDict

from ..errors import UserError
from .nsexec import CLONE_NEWNET, OWN_NETNS

NETNS_RUN_DIR = Path("/run/netns")
# The node's namespace is the one netdrop runs in (on a node: the host's).
# Not /proc/1/ns/net: reading another process's namespace needs ptrace rights.
HOST_NETNS = OWN_NETNS


class FoundNetns(TypedDict):
    path: str            # a path that opens it
    names: list[str]     # its /run/netns names
    pids: list[int]      # a few processes living in it


def nsfs_dev() -> int | None:
    """The device of nsfs: a /run/netns entry is a namespace only if it is on it
    (a bind mount of one); a plain file left there is not."""
    try:
        return os.stat(HOST_NETNS).st_dev
    except OSError:
        return None


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:         # missing, not a directory, not ours to read
        return []


def named_namespaces(run_dir: Path = NETNS_RUN_DIR) -> dict[int, FoundNetns]:
    """The named namespaces: one stat per /run/netns entry, no /proc walk."""
    found: dict[int, FoundNetns] = {}
    nsfs = nsfs_dev()
    base = str(run_dir)
    for name in sorted(_listdir(run_dir)):
        entry = os.path.join(base, name)
        try:
            st = os.stat(entry)
        except OSError:
            continue
        if nsfs is not None and st.st_dev != nsfs:
            continue
        found.setdefault(st.st_ino, {"path": entry, "names": [], "pids": []})["names"].append(name)
    return found


def discover_namespaces(run_dir: Path = NETNS_RUN_DIR, proc: Path = Path("/proc")) -> dict[int, FoundNetns]:
    """inode -> where it is found, named and held by processes. Entries that
    vanish while we look, or that are not namespaces, are left out; nothing
    here raises."""
    found = named_namespaces(run_dir)
    for name in _listdir(proc):
        if not (name.isascii() and name.isdigit()):
            continue
        path = proc / name / "ns" / "net"
        try:
            ino = os.stat(path).st_ino
        except OSError:
            continue
        info = found.setdefault(ino, {"path": str(path), "names": [], "pids": []})
        if len(info["pids"]) < 3:
            info["pids"].append(int(name))
    return found


def path_of(found: FoundNetns) -> str:
    return str(NETNS_RUN_DIR / found["names"][0]) if found["names"] else found["path"]


def netns_path(spec: str, run_dir: Path = NETNS_RUN_DIR) -> Path:
    """NAME|PATH -> the file that holds the namespace: a name is `ip netns`'s, under run_dir."""
    return Path(spec) if "/" in spec else run_dir / spec


def resolve_netns(spec: str, run_dir: Path = NETNS_RUN_DIR) -> int:
    """--netns NAME|PATH|INODE -> namespace inode."""
    if spec.isascii() and spec.isdigit():
        inode = int(spec) if len(spec) <= 10 else -1       # an inode number is 32 bits (proc_inum)
        if inode not in known_netns_inodes(run_dir):
            raise UserError(f"unknown network namespace inode {inode}: no process or /run/netns entry holds it")
        return inode
    return checked_netns(spec, run_dir).st_ino


def checked_netns(spec: str, run_dir: Path = NETNS_RUN_DIR) -> os.stat_result:
    """The namespace file that spec names, if it is a network namespace (else a
    UserError saying what it is instead): a FIFO, a device or a plain file
    given by mistake is refused before anything would open it for reading.

    Sound because of what is checked, and on what:
    - O_PATH opens the name without opening the file: no FIFO blocks, no
      device driver's open() runs, whatever the name has become meanwhile.
      Links are followed: /proc/PID/ns/net is one by design (and the caller,
      root, chose the path; nothing is written through it).
    - fstat of that descriptor: the object itself, not the name again. Every
      namespace file of any kind is an inode of nsfs, one internal superblock
      for the whole kernel (fs/nsfs.c, kern_mount), so its st_dev is that of
      /proc/self/ns/net; no other file system has that anonymous device number.
    - Only then it is opened for reading (through /proc/self/fd, the same
      inode) and NS_GET_NSTYPE asked: CLONE_NEWNET, or another kind (mnt, uts...)."""
    path = netns_path(spec, run_dir)
    try:
        handle = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        known = _names(run_dir) if "/" not in spec else []
        hint = f" (known: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''})" if known else ""
        raise UserError(f"unknown network namespace {spec!r}: {path} does not exist{hint}") from None
    except PermissionError:
        raise UserError(f"cannot open network namespace {path}: permission denied (run as root)") from None
    except (OSError, ValueError) as exc:    # ValueError: a NUL in the name
        raise UserError(f"cannot open network namespace {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        st = os.fstat(handle)
        if st.st_dev != os.stat(HOST_NETNS).st_dev:
            raise UserError(f"not a network namespace: {path} is {_file_kind(st.st_mode)}")
        fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        finally:
            os.close(fd)
        if kind != CLONE_NEWNET:
            raise UserError(f"not a network namespace: {path} is a {NAMESPACE_KINDS.get(kind, 'other')} namespace")
        return st
    except OSError as exc:
        raise UserError(f"cannot open network namespace {path}: {exc.strerror or exc}") from None
    finally:
        os.close(handle)


# include/uapi/linux/nsfs.h: NS_GET_NSTYPE = _IO(0xb7, 0x3), Linux 4.11; the
# answer is the namespace's CLONE_NEW* flag (include/uapi/linux/sched.h).
NS_GET_NSTYPE = 0xB703
NAMESPACE_KINDS = {0x00020000: "mount", 0x02000000: "cgroup", 0x04000000: "uts", 0x08000000: "ipc",
                   0x10000000: "user", 0x20000000: "pid", CLONE_NEWNET: "network", 0x00000080: "time"}


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
    return next((what for test, what in kinds if test(mode)), "not a namespace file")


def _names(run_dir: Path) -> list[str]:
    try:
        return sorted(os.listdir(run_dir))
    except OSError:
        return []


def known_netns_inodes(run_dir: Path = NETNS_RUN_DIR) -> dict[int, str]:
    """Every network namespace we can see, inode -> a name to show: the
    /run/netns name, else 'pid N' of a process living in it."""
    return {ino: (found["names"] or [f"pid {found['pids'][0]}"])[0]
            for ino, found in discover_namespaces(run_dir).items()}
