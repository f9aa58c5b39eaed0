"""Clear failures on a real machine: one line, non-zero exit, no traceback.
Mount changes happen in a private mount namespace (unshare -m): the host's
mounts stay as they are."""

import subprocess
from pathlib import Path

import pytest

from ..conftest import NETDROP

CMD = " ".join(NETDROP)


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def assert_one_line(res, expected: str):
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netdrop: error: "), res.stderr
    assert expected in lines[0]


def test_not_root():
    res = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *NETDROP, "watch", "--json"])
    assert_one_line(res, "needs root")


def test_unknown_netns():
    assert_one_line(run([*NETDROP, "watch", "--netns", "no-such-namespace"]),
                    "unknown network namespace 'no-such-namespace'")


def in_mount_ns(script: str) -> subprocess.CompletedProcess:
    return run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])


def test_tracefs_not_mounted():
    res = in_mount_ns(f"umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; "
                      f"exec {CMD} watch --json --duration 1")
    assert_one_line(res, "tracefs is not mounted: run 'mount -t tracefs tracefs /sys/kernel/tracing'")
    assert Path("/sys/kernel/tracing/events").is_dir(), "the host's tracefs must stay mounted"


def test_kernel_without_the_tracepoint():
    res = in_mount_ns(f"mount -t tmpfs none /sys/kernel/tracing && mkdir /sys/kernel/tracing/events && "
                      f"exec {CMD} watch --json --duration 1")
    assert_one_line(res, "no skb:kfree_skb tracepoint")


def test_no_btf_and_no_headers(tmp_path):
    if Path("/lib/modules").joinpath(__import__("platform").release(), "build").exists():
        pytest.fail("this machine has kernel headers: the no-BTF case cannot be built here")
    res = in_mount_ns(f"mount -t tmpfs none /sys/kernel/btf && NETDROP_CACHE={tmp_path} "
                      f"exec {CMD} watch --json --duration 1")
    assert_one_line(res, "no kernel types: /sys/kernel/btf/vmlinux is missing")


def test_kernel_without_ring_buffer(monkeypatch):
    """Below netdrop's floor (Linux 5.8) the kernel answers a ring buffer map with
    EINVAL, as it answers any map type it does not know: asked for such a type,
    this kernel gives the same answer, and netdrop says what it needs in one line."""
    from tracer.kernel import btfprog

    assert btfprog.ringbuf_refusal() is None
    monkeypatch.setattr(btfprog, "_BPF_MAP_TYPE_RINGBUF", 0x7FFF)
    why = btfprog.ringbuf_refusal()
    assert why is not None and "has no BPF ring buffer: netdrop needs Linux 5.8 or newer" in why
