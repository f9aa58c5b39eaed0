"""BPF programs that tests load themselves (a cgroup or tc program that drops,
as a CNI's or security agent's would): through bcc directly (a test may;
netdrop's own code imports bcc only in tracer/kernel/bccload.py), with the
kernel types netdrop's loader uses, and a cgroup of their own."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tracer.kernel import bccload
from tracer.kernel.facts import find_tracefs, probe_kernel

# A program whose every packet gets one verdict: %d is its return value
# (cgroup skb: 0 drops, 1 passes; tc: 2 is TC_ACT_SHOT).
ONE_VERDICT = b"int %s(struct __sk_buff *skb) { return %d; }"


def program(name: str, verdict: int) -> Any:
    """A bcc BPF object holding the one-verdict function `name`. bcc compiles
    against the kernel types the loader prepared (headers, or the BTF include
    tree in netdrop's cache), as for netdrop's own program."""
    from bcc import BPF
    include, _flags = bccload.kernel_types(probe_kernel(find_tracefs()), bccload.DEFAULT_CACHE)
    if include is not None:
        os.environ["BCC_KERNEL_SOURCE"] = str(include)
    return BPF(text=ONE_VERDICT % (name.encode(), verdict))


@contextlib.contextmanager
def cgroup(name: str) -> Iterator[Path]:
    """A new cgroup (cgroup2, mounted on a private directory), removed with
    its mount afterwards, also on failure. Its processes must be gone by then."""
    mnt = Path(tempfile.mkdtemp(prefix="netdrop-cg2-"))
    try:
        subprocess.run(["mount", "-t", "cgroup2", "none", str(mnt)], check=True, timeout=10)
        try:
            cg = mnt / f"{name}-{os.getpid()}"
            cg.mkdir()
            try:
                yield cg
            finally:
                cg.rmdir()
        finally:
            subprocess.run(["umount", str(mnt)], timeout=10)
    finally:
        mnt.rmdir()


@contextlib.contextmanager
def attached_to_cgroup(prog: Any, func: str, cg: Path, egress: bool = True) -> Iterator[None]:
    from bcc import BPF, BPFAttachType
    fn = prog.load_func(func.encode(), BPF.CGROUP_SKB)
    kind = BPFAttachType.CGROUP_INET_EGRESS if egress else BPFAttachType.CGROUP_INET_INGRESS
    fd = os.open(cg, os.O_RDONLY)
    try:
        BPF.attach_func(fn, fd, kind)
        try:
            yield
        finally:
            BPF.detach_func(fn, fd, kind)
    finally:
        os.close(fd)
