"""nsexec: doing one thing inside another network namespace, without a helper process.

A thread's network namespace is its own (setns(2) with CLONE_NEWNET changes
only the calling thread), and a socket belongs for life to the namespace it
was made in. So a short-lived thread enters the namespace, makes the socket,
and ends: the rest of the process never leaves its own namespace, and there is
nothing to switch back.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading

CLONE_NEWNET = 0x40000000      # include/uapi/linux/sched.h
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
        try:
            made.append(socket.socket(family, kind | socket.SOCK_CLOEXEC, proto))
        except OSError:
            pass

    try:
        worker = threading.Thread(target=make, name="netdrop-setns")
        worker.start()
        worker.join()
    finally:
        os.close(fd)
    return made[0] if made else None
