"""nsexec: doing one thing inside another network namespace: making a socket, reading a command's output or a file.

A socket without a helper process: a thread's network namespace is its own
(setns(2) with CLONE_NEWNET changes only the calling thread), and a socket
belongs for life to the namespace it was made in. So a short-lived thread
enters the namespace, makes the socket, and ends: the rest of the process
never leaves its own namespace, and there is nothing to switch back.

The working directory is the other way round: all threads share it (CLONE_FS)
unless one takes its own copy (own_working_directory), as the thread that
compiles the BPF program does.

A command (iptables-save, nft, ip, cat) runs under `nsenter --net=PATH`: only
the network namespace is entered, never the mount namespace, so the host's
own binaries run, not ones a pod could put in their place.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

OWN_NETNS = "/proc/self/ns/net"     # the network namespace of the calling thread
CLONE_NEWNET = 0x40000000      # include/uapi/linux/sched.h
CLONE_FS = 0x00000200
_libc = ctypes.CDLL(None, use_errno=True)


def socket_in(path: str, family: int, kind: int, proto: int = 0) -> socket.socket | None:
    """A socket made inside the namespace at path (a /run/netns file or
    /proc/PID/ns/net); None if path is no namespace we can enter."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    made: list[socket.socket] = []

    def make() -> None:
        # setns fails (EINVAL) for a file that is no namespace, e.g. a /run/netns
        # name whose bind mount `ip netns add` never made.
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            return
        with contextlib.suppress(OSError):     # no socket: the caller gets None
            made.append(socket.socket(family, kind | socket.SOCK_CLOEXEC, proto))

    try:
        worker = threading.Thread(target=make, name="netdrop-setns")
        worker.start()
        worker.join()
    finally:
        os.close(fd)
    return made[0] if made else None


def read_in_netns(path: str | None, *cmd: str, timeout: float = 5) -> str | None:
    """stdout of a read-only command run in the namespace at path (None: ours),
    or None if it failed or is missing. Bytes that are not UTF-8 (a rule's
    comment) are replaced."""
    full = (["nsenter", f"--net={path}"] if path else []) + list(cmd)
    try:
        res = subprocess.run(full, capture_output=True, text=True, errors="replace", timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


STOP_POLL = 0.05    # how often a read with a stop event looks at it


def read_many_in_netns(path: str | None, cmds: Sequence[Sequence[str]], timeout: float = 5,
                       stop: threading.Event | None = None) -> list[str | None]:
    """read_in_netns() of several commands, all started at once and then read:
    a reader waits for the slowest, not for their sum (each process's start
    waits for a CPU on a busy node). timeout bounds them all together; a
    command still running then is killed and gives None, as one that failed.
    So does every command still running once stop is set (the reader's thread
    is asked to end: nothing it started outlives it)."""
    prefix = ["nsenter", f"--net={path}"] if path else []
    procs: list[subprocess.Popen[str] | None] = []
    out: list[str | None] = []
    if stop is not None and stop.is_set():
        return [None] * len(cmds)
    try:
        for cmd in cmds:
            try:
                procs.append(subprocess.Popen(prefix + list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, text=True, errors="replace"))
            except OSError:
                procs.append(None)
        deadline = time.monotonic() + timeout
        for p in procs:
            if p is None:
                out.append(None)
                continue
            out.append(_output(p, deadline, stop))
    finally:
        for p in procs:     # what timed out, or everything after an exception: killed and reaped
            if p is not None and p.returncode is None:
                p.kill()
                p.communicate()
    return out


def _output(p: subprocess.Popen[str], deadline: float, stop: threading.Event | None) -> str | None:
    """p's stdout once it ends (None if it failed); None if it still runs at the
    deadline or once stop is set (the caller kills it)."""
    while True:
        # Past the deadline, a moment still: one that has ended gives what it wrote.
        left = max(0.05, deadline - time.monotonic())
        try:
            stdout, _ = p.communicate(timeout=left if stop is None else min(left, STOP_POLL))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                return None
            continue
        return stdout if p.returncode == 0 else None


def read_file_in_netns(path: str | None, name: str) -> str | None:
    """A /proc file as a namespace sees it; our own namespace's without a process."""
    if path is None:
        try:
            return Path(name).read_text(errors="replace")
        except OSError:
            return None
    return read_in_netns(path, "cat", name)


def own_working_directory() -> None:
    """Give the calling thread a working directory of its own (unshare(2) with
    CLONE_FS): a chdir() it makes from now on is seen by no other thread.

    For bcc's compile, which chdir()s into the kernel headers' directory and back
    (ClangLoader::parse, src/cc/frontends/clang/loader.cc: clang runs there),
    while start-up reads the kubeconfig in another thread (pipeline.startup.Pending): a
    relative name would be looked up among the headers. Threads started later
    by this one share its copy, so it is called before each compile. Where a
    seccomp profile refuses unshare, the names the user gave are absolute anyway
    (cli.user_path)."""
    _libc.unshare(CLONE_FS)
