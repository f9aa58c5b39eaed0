"""capturefiles: the capture files kept on a node, within a time and a byte budget.

    <root>/<namespace>/<name>-<first 8 of uid>/   root's, 0700
        .netdrop-capture.json                     who it is (namespace, name, uid, when opened)
        summary.json, events.jsonl, drops.pcapng  the capture's files (sinks/capture.py), 0600

Root writes here on a node where other users and pods exist. Every directory
on the way is made and opened one component at a time relative to its
parent's descriptor, never following a link (O_NOFOLLOW), and checked where
it was opened (fstat): one that another user owns, or that group or others
may write, is refused (trust.why_untrusted), as the CLI's captures are
(sinks/capture.prepare_output). The store's own directories are exactly root's
and 0700: below them no one else can make an entry, so what the store finds
there, it made.

The store keeps an index of the captures it made, rebuilt at start from its
root: a directory counts as its own only when it is root's, 0700, not a link,
named as the store names captures, and holds the store's record naming that
same capture. Anything else is neither served nor removed. It serves only the
three capture files (regular files of root's with one link: no link, no
FIFO, nothing else in the directory) and removes only what it finds in its own
directories, with unlinkat (a link is removed, never followed).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..captures.report import FileEntry
from ..captures.spec import Capture
from ..sinks.capture import DIR_MODE, OutputDir
from ..trust import create_new, trusted_owners, why_untrusted
from .capturepaths import SERVED, valid_name, valid_namespace

ROOT = Path("/var/lib/netdrop/captures")
BUDGET_BYTES = 512 * 1024 * 1024
RETENTION_SECONDS = 24 * 3600.0
RECORD = ".netdrop-capture.json"
MAX_RECORD = 4096
MAX_CAPTURES = 4096          # captures the store keeps at once: its index and a prune's work are bounded
MAX_SCAN = 4 * MAX_CAPTURES  # entries looked at when rescanning the root (junk included)
MAX_FILES = 64               # entries of a capture's directory looked at (it holds four)
REMOVALS_PER_PRUNE = 32      # captures removed by one prune() call at most: the rest at the next
NAME_MAX = 255               # a path component's bytes (Linux)

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO would otherwise hang the open (it is then refused by its type).
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_UID8 = re.compile(r"[0-9a-z]{8}")


class StoreError(OSError):
    """The store cannot be used or cannot make a capture's directory; str() is one line."""


def dirname(name: str, uid: str) -> str:
    """<name>-<first 8 of uid>; a name too long for a path component keeps its start
    and a hash of the whole (distinct names stay distinct)."""
    tail = f"-{uid[:8]}"
    if len(name) + len(tail) <= NAME_MAX:
        return name + tail
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name[:NAME_MAX - len(tail) - 13]}-{digest}{tail}"


@dataclass(frozen=True)
class _Entry:
    namespace: str
    name: str
    uid: str
    opened: float          # Unix time the store made it
    dirname: str
    dev: int
    ino: int


def _is_own_dir(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == DIR_MODE


def _is_own_file(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_nlink == 1 \
        and not st.st_mode & 0o077


class CaptureStore:
    """The captures of this node; safe to call from several threads (the
    capture controller's, the HTTP server's)."""

    def __init__(self, root: Path = ROOT, budget_bytes: int = BUDGET_BYTES,
                 retention_seconds: float = RETENTION_SECONDS) -> None:
        self.root = Path(os.path.abspath(root))
        self.budget_bytes = budget_bytes
        self.retention_seconds = retention_seconds
        self._lock = threading.Lock()
        self._index: dict[tuple[str, str], _Entry] = {}
        self._fd = _make_root(self.root)
        self._rescan()

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # -- making --
    def open(self, capture: Capture) -> OutputDir:
        """A new directory for the capture, held open (the caller closes it). An
        older capture of the same namespace and name (another uid: the API server
        holds one object per name, so that one was deleted) is removed first.
        StoreError: the names are not the API's, it exists already, the store is full,
        or the file system refuses."""
        ns, name, uid = capture.namespace, capture.name, capture.uid
        if not valid_namespace(ns) or not valid_name(name):
            raise StoreError(f"capture {ns[:63]!r}/{name[:63]!r}: not a Kubernetes namespace and name")
        if not _UID8.fullmatch(uid[:8]):
            raise StoreError(f"capture {ns}/{name}: its uid {uid[:40]!r} is not one the API server makes")
        with self._lock:
            old = self._index.get((ns, name))
            if old is not None and old.uid == uid:
                raise StoreError(f"capture {ns}/{name}: its directory exists already "
                                 f"({self.root / ns / old.dirname})")
            if old is not None:
                self._remove(old)
            if len(self._index) >= MAX_CAPTURES:
                raise StoreError(f"the capture store {self.root} holds {MAX_CAPTURES} captures already")
            ns_fd = self._namespace_dir(ns, create=True)
            try:
                entry, fd = self._make(ns_fd, capture)
            finally:
                os.close(ns_fd)
            self._index[(ns, name)] = entry
        return OutputDir(self.root / ns / entry.dirname, fd)

    def _namespace_dir(self, ns: str, create: bool) -> int:
        if create:
            try:
                os.mkdir(ns, DIR_MODE, dir_fd=self._fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(f"cannot make {self.root / ns}: {exc.strerror}") from None
        try:
            fd = os.open(ns, _DIR, dir_fd=self._fd)
        except OSError as exc:
            raise StoreError(f"cannot open {self.root / ns}: {_why(exc)}") from None
        if not _is_own_dir(os.fstat(fd)):
            os.close(fd)
            raise StoreError(f"{self.root / ns} is not the capture store's own directory (root's, 0700): "
                             "root does not write where others can plant files")
        return fd

    def _make(self, ns_fd: int, capture: Capture) -> tuple[_Entry, int]:
        name = dirname(capture.name, capture.uid)
        where = self.root / capture.namespace / name
        try:
            os.mkdir(name, DIR_MODE, dir_fd=ns_fd)
        except OSError as exc:
            raise StoreError(f"cannot make {where}: {_why(exc)}") from None
        try:
            fd = os.open(name, _DIR, dir_fd=ns_fd)
        except OSError as exc:
            raise StoreError(f"cannot open {where}: {_why(exc)}") from None
        try:
            st = os.fstat(fd)
            if not _is_own_dir(st):
                raise StoreError(f"{where} is not root's 0700 directory once made")
            entry = _Entry(capture.namespace, capture.name, capture.uid, time.time(), name, st.st_dev, st.st_ino)
            record = json.dumps({"namespace": entry.namespace, "name": entry.name, "uid": entry.uid,
                                 "opened": entry.opened}).encode()
            with os.fdopen(create_new(RECORD, dir_fd=fd), "wb") as f:
                f.write(record)
        except BaseException:
            # Not left behind without its record: the store would no longer know it as its own.
            with contextlib.suppress(OSError):
                os.unlink(RECORD, dir_fd=fd)
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=ns_fd)
            os.close(fd)
            raise
        return entry, fd

    # -- reading --
    def files(self, capture: Capture) -> tuple[FileEntry, ...]:
        """The capture's files as they are now (name, bytes), in SERVED's order."""
        with self._lock:
            entry = self._index.get((capture.namespace, capture.name))
        if entry is None or entry.uid != capture.uid:
            return ()
        fd = self._open_entry(entry)
        if fd is None:
            return ()
        try:
            out = []
            for file in SERVED:
                try:
                    st = os.stat(file, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                if _is_own_file(st):
                    out.append(FileEntry(file, st.st_size))
            return tuple(out)
        finally:
            os.close(fd)

    def open_file(self, namespace: str, name: str, filename: str) -> tuple[BinaryIO, int] | None:
        """One of the capture files (SERVED) of a capture the store made, opened
        for reading, and its size now; None for anything else."""
        if filename not in SERVED or not valid_namespace(namespace) or not valid_name(name):
            return None
        with self._lock:
            entry = self._index.get((namespace, name))
        if entry is None:
            return None
        dir_fd = self._open_entry(entry)
        if dir_fd is None:
            return None
        try:
            fd = os.open(filename, _READ, dir_fd=dir_fd)
        except OSError:
            return None
        finally:
            os.close(dir_fd)
        st = os.fstat(fd)
        if not _is_own_file(st):
            os.close(fd)
            return None
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size

    def _open_entry(self, entry: _Entry) -> int | None:
        """The capture's directory, opened through the store's own ones, if it is still the one the store made."""
        try:
            ns_fd = os.open(entry.namespace, _DIR, dir_fd=self._fd)
        except OSError:
            return None
        try:
            if not _is_own_dir(os.fstat(ns_fd)):
                return None
            fd = os.open(entry.dirname, _DIR, dir_fd=ns_fd)
        except OSError:
            return None
        finally:
            os.close(ns_fd)
        st = os.fstat(fd)
        if not _is_own_dir(st) or (st.st_dev, st.st_ino) != (entry.dev, entry.ino):
            os.close(fd)
            return None
        return fd

    # -- removing --
    def remove(self, namespace: str, name: str) -> bool:
        """The capture's directory and what the store finds in it, gone (a
        deleted NetdropCapture's files); True if it was removed."""
        with self._lock:
            entry = self._index.get((namespace, name))
            return entry is not None and self._remove(entry)

    def _remove(self, entry: _Entry) -> bool:
        """Called with the lock held. Unlinks the entries of the capture's directory
        (files and links, never followed; a directory inside is none the store
        made: it stays, and so does the capture's), then the directory."""
        fd = self._open_entry(entry)
        if fd is None:
            # Gone, or no longer what the store made: either way nothing of it is the store's now.
            self._index.pop((entry.namespace, entry.name), None)
            return False
        try:
            with os.scandir(fd) as it:
                names = [e.name for _, e in zip(range(MAX_FILES), it, strict=False)]
            for n in names:
                st = os.stat(n, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(n, dir_fd=fd)
        except OSError:
            pass
        finally:
            os.close(fd)
        try:
            ns_fd = os.open(entry.namespace, _DIR, dir_fd=self._fd)
        except OSError:
            return False
        try:
            os.rmdir(entry.dirname, dir_fd=ns_fd)
        except OSError:
            return False            # not empty: kept in the index, tried again by the next prune
        finally:
            os.close(ns_fd)
        self._index.pop((entry.namespace, entry.name), None)
        with contextlib.suppress(OSError):      # other captures of the namespace: it stays
            os.rmdir(entry.namespace, dir_fd=self._fd)
        return True

    def prune(self, now: float | None = None, keep: frozenset[tuple[str, str]] = frozenset()) -> list[str]:
        """Captures opened more than the retention before `now` (Unix time) removed,
        then the oldest until the files of all fit the budget (their sizes read
        now). keep: (namespace, name) of captures being recorded, removed only
        by age. At most REMOVALS_PER_PRUNE removals a call. Returns what was removed."""
        now = time.time() if now is None else now
        removed: list[str] = []
        with self._lock:
            entries = sorted(self._index.values(), key=lambda e: e.opened)
            sizes = {(e.namespace, e.name): self._size(e) for e in entries}
            total = sum(sizes.values())
            for e in entries:
                if len(removed) >= REMOVALS_PER_PRUNE:
                    break
                key = (e.namespace, e.name)
                expired = now - e.opened > self.retention_seconds
                if not expired and (total <= self.budget_bytes or key in keep):
                    continue
                if self._remove(e):
                    total -= sizes[key]
                    removed.append(f"{e.namespace}/{e.name}")
        return removed

    def _size(self, entry: _Entry) -> int:
        """Bytes of the capture's files, measured (0 if its directory is gone)."""
        fd = self._open_entry(entry)
        if fd is None:
            return 0
        total = 0
        try:
            with os.scandir(fd) as it:
                for _, e in zip(range(MAX_FILES), it, strict=False):
                    st = e.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        total += st.st_size
        except OSError:
            pass
        finally:
            os.close(fd)
        return total

    @property
    def captures(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._index)

    # -- at start --
    def _rescan(self) -> None:
        """The index rebuilt from the root: only directories the store can tell it made."""
        found: dict[tuple[str, str], _Entry] = {}
        looked = 0
        with os.scandir(self._fd) as namespaces:
            for ns_entry in namespaces:
                if looked >= MAX_SCAN or len(found) >= MAX_CAPTURES:
                    break
                looked += 1
                if not valid_namespace(ns_entry.name):
                    continue
                try:
                    ns_fd = self._namespace_dir(ns_entry.name, create=False)
                except StoreError:
                    continue
                try:
                    with os.scandir(ns_fd) as captures:
                        for c in captures:
                            if looked >= MAX_SCAN or len(found) >= MAX_CAPTURES:
                                break
                            looked += 1
                            entry = _read_entry(ns_fd, ns_entry.name, c.name)
                            if entry is None:
                                continue
                            key = (entry.namespace, entry.name)
                            if key in found and found[key].opened >= entry.opened:
                                continue
                            found[key] = entry
                finally:
                    os.close(ns_fd)
        self._index = found


def _read_entry(ns_fd: int, namespace: str, name: str) -> _Entry | None:
    """The capture a directory holds, if it is one the store made; else None."""
    try:
        fd = os.open(name, _DIR, dir_fd=ns_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not _is_own_dir(st):
            return None
        rfd = os.open(RECORD, _READ, dir_fd=fd)
        try:
            rst = os.fstat(rfd)
            if not _is_own_file(rst) or rst.st_size > MAX_RECORD:
                return None
            record = json.loads(os.read(rfd, MAX_RECORD))
        finally:
            os.close(rfd)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(record, dict):
        return None
    ns, cname, uid, opened = record.get("namespace"), record.get("name"), record.get("uid"), record.get("opened")
    if ns != namespace or not valid_name(cname) or not isinstance(uid, str) or not _UID8.fullmatch(uid[:8]) \
            or not isinstance(opened, (int, float)) or isinstance(opened, bool):
        return None
    assert isinstance(cname, str)
    if dirname(cname, uid) != name:
        return None
    return _Entry(namespace, cname, uid, float(opened), name, st.st_dev, st.st_ino)


def _make_root(root: Path) -> int:
    """The root made and opened from / one component at a time, links never
    followed; every directory on the way only trusted users can change (a
    sticky one, /tmp, only above the root), the root itself root's and 0700.
    Its descriptor; StoreError otherwise."""
    owners = trusted_owners()
    parts = root.parts[1:]
    fd = os.open("/", _DIR)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = Path("/", *parts[:i + 1])
            try:
                os.mkdir(part, DIR_MODE, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(f"cannot make the capture store {root}: {where}: {exc.strerror}") from None
            try:
                nfd = os.open(part, _DIR, dir_fd=fd)
            except OSError as exc:
                raise StoreError(f"cannot use the capture store {root}: {where}: {_why(exc)}") from None
            os.close(fd)
            fd = nfd
            st = os.fstat(fd)
            why = why_untrusted(st, owners, sticky_ok=not last)
            if why is None and last and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != DIR_MODE:
                os.fchmod(fd, DIR_MODE)       # root's, and no one else may write it: made private
                st = os.fstat(fd)
            if why is None and last and not _is_own_dir(st):
                why = f"it is not root's with mode 0700 (uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})"
            if why is not None:
                raise StoreError(f"cannot use the capture store {root}: {where}: {why}; "
                                 "root does not write where others can plant files")
        return fd
    except BaseException:
        os.close(fd)
        raise


def _why(exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "it is a symbolic link or not a directory"
    if exc.errno == errno.EEXIST:
        return "it exists already"
    return exc.strerror or str(exc)
