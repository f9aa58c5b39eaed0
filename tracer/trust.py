"""trust: may root use this path? Owners and modes of the files netdrop writes or reads code from.

netdrop runs as root beside users it does not trust. A directory that another
user owns, or that group or others may write, lets them plant a file or a
symbolic link where root is about to write (and root truncates what the link
points to) or to read from (and root compiles a planted header into a BPF
program). Such paths are refused with one line that names the path and why.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .errors import UserError


def trusted_owners() -> set[int]:
    """Who may own what root writes into: root, and the user who ran sudo."""
    owners = {0, os.geteuid()}
    sudo_uid = os.environ.get("SUDO_UID", "")
    if sudo_uid.isdigit():
        owners.add(int(sudo_uid))
    return owners


def why_untrusted(st: os.stat_result, owners: set[int], sticky_ok: bool = False) -> str | None:
    """Why a file or directory with this status may be changed by someone else, or None.
    sticky_ok: a sticky directory (/tmp) owned by a trusted user is fine as a parent,
    because others cannot rename or remove the entries root makes in it."""
    if st.st_uid not in owners:
        return f"it belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o022 and not (sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
        return f"group or others may write it (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def check_tree(path: Path, what: str, owners: set[int] | None = None, parents_only: bool = False) -> None:
    """path and every directory above it can be changed only by trusted users, else UserError.
    parents_only: the directories above it only."""
    owners = trusted_owners() if owners is None else owners
    path = Path(os.path.abspath(path))
    for p in path.parents if parents_only else [path, *path.parents]:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise UserError(f"cannot use {what} {path}: {p}: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            # A link is as trustworthy as its owner and where it leads.
            if st.st_uid in owners:
                check_tree(p.resolve(), what, owners)
                continue
            why: str | None = f"it is a symbolic link of another user (uid {st.st_uid})"
        else:
            why = why_untrusted(st, owners, sticky_ok=p != path)
        if why is not None:
            where = "" if p == path else f" (in {p})"
            raise UserError(f"cannot use {what} {path}: {why}{where}; root does not use what others can change")


def private_dir(path: Path, what: str) -> Path:
    """A directory only root can change, created mode 0700 if missing, else UserError.
    An empty directory of root's that others may write is made 0700 first (take_over_empty)."""
    path = Path(os.path.abspath(path))
    try:
        check_tree(path, what)
    except UserError:
        check_tree(path, what, parents_only=True)    # taken over only below a trusted tree
        if not take_over_empty(path, what):
            raise
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {what} {path}: {exc.strerror}") from None
    check_tree(path, what)
    return path


def take_over_empty(path: Path, what: str) -> bool:
    """Make an empty directory of our own (root's) that group or others may write 0700: True
    if it was one (and is now private), False if it is something else (left as it is).

    A Kubernetes emptyDir is such a directory: the kubelet makes it mode 0777, without
    the sticky bit, owned by root, new and empty when the pod starts (pkg/volume/emptydir/
    empty_dir.go, setupDir). Refusing it would stop the DaemonSet on every node; a
    private subdirectory cannot help, since its parent stays writable by others. Nothing
    in it is used: the mode is changed first and the directory looked at again, so an
    entry someone made before the change is seen (and refused), and after it no one but
    root can make one. Taken through one descriptor (no link followed, no path looked up
    twice). Sticky directories (/tmp, /var/tmp, /dev/shm) are shared on purpose and never
    taken; nor is a directory with anything in it, or another user's."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & stat.S_ISVTX or not st.st_mode & 0o022 or os.listdir(fd):
            return False
        os.fchmod(fd, 0o700)
        st = os.fstat(fd)
        if os.listdir(fd) or st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o700:
            raise UserError(f"cannot use {what} {path}: others wrote into it while it was being made private "
                            "(mode 0700 now); root does not use what others can change")
        return True
    except OSError as exc:
        raise UserError(f"cannot use {what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def write_private(directory: Path, name: str, text: str) -> None:
    """Replace directory/name atomically with text, mode 0600: written to a new
    file of our own in the same directory, then renamed over the old one, so
    nothing is written through a link and no reader sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, directory / name)
    except BaseException:
        os.unlink(tmp)
        raise


# Created, never opened: O_EXCL refuses a file (or a link) already there, so
# nothing planted in advance is written into or truncated; O_NOFOLLOW a link.
_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def create_new(path: str | Path, mode: int = 0o600, dir_fd: int | None = None, extra_flags: int = 0) -> int:
    """A new file's descriptor, mode 0600 by default; OSError (EEXIST, ELOOP, ...) otherwise."""
    return os.open(path, _CREATE_NEW | extra_flags, mode, dir_fd=dir_fd)
