import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer.errors import UserError
from tracer.kernel.filters import Filters, ip_key_bytes, parse_ip
from tracer.node.namespaces import resolve_netns

MINE = "/proc/self/ns/net"      # a network namespace any user may name: its own


def test_netns_by_name_path_and_unknown(tmp_path):
    # A name under the run directory stands for `ip netns`'s bind mount of a namespace.
    (tmp_path / "pod-a").symlink_to(MINE)
    ino = os.stat(MINE).st_ino
    assert resolve_netns("pod-a", run_dir=tmp_path) == ino
    assert resolve_netns(str(tmp_path / "pod-a"), run_dir=tmp_path) == ino
    assert resolve_netns(MINE, run_dir=tmp_path) == ino
    with pytest.raises(UserError, match=r"unknown network namespace 'pod-b'.*known: pod-a"):
        resolve_netns("pod-b", run_dir=tmp_path)


@given(st.one_of(st.text(max_size=30), st.integers(min_value=0).map(str), st.just("9" * 5000)))
def test_any_netns_text_is_an_inode_or_a_user_error(spec):
    """A UserError is one line on stderr (cli.main, made printable), never a traceback."""
    try:
        inode = resolve_netns(spec, run_dir=Path("/nonexistent/netns"))
    except UserError:
        pass
    else:
        assert 0 < inode < 2**32


@pytest.mark.parametrize("path,what", [
    ("/dev/zero", "a character device"),
    ("/etc/hostname", "a regular file"),
    ("/proc/self/ns", "a directory"),
    ("/proc/self/ns/uts", "a uts namespace"),
    ("/proc/self/ns/mnt", "a mount namespace"),
])
def test_only_a_network_namespace_is_one(tmp_path, path, what):
    with pytest.raises(UserError) as err:
        resolve_netns(path, run_dir=tmp_path)
    assert str(err.value) == f"not a network namespace: {path} is {what}"


def test_a_fifo_is_refused_without_blocking(tmp_path):
    """Opening a FIFO for reading waits for a writer: the check never does (O_PATH)."""
    fifo = tmp_path / "ns"
    os.mkfifo(fifo)
    failed: list[BaseException] = []

    def check() -> None:
        try:
            resolve_netns("ns", run_dir=tmp_path)
        except UserError as exc:
            failed.append(exc)

    t = threading.Thread(target=check, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():        # it blocked: let it go, and fail
        with open(fifo, "w"):
            pass
        pytest.fail("the check opened the FIFO and waited for a writer")
    assert [str(e) for e in failed] == [f"not a network namespace: {fifo} is a FIFO"]


def test_netns_inode_of_this_process_is_known(tmp_path):
    mine = os.stat("/proc/self/ns/net").st_ino
    assert resolve_netns(str(mine), run_dir=tmp_path) == mine
    with pytest.raises(UserError, match="unknown network namespace inode 1"):
        resolve_netns("1", run_dir=tmp_path)


def test_ip_parsing():
    assert parse_ip("fd00::0001") == "fd00::1"
    with pytest.raises(UserError, match="not an IP address"):
        parse_ip("10.0.0.300")


def test_ip_keys_are_v4_mapped():
    assert ip_key_bytes("10.244.1.10") == bytes(10) + b"\xff\xff" + bytes([10, 244, 1, 10])
    assert len(ip_key_bytes("fd00::1")) == 16


def test_describe_uses_names():
    f = Filters(netns=frozenset({5}), ports=frozenset({53, 80}))
    assert f.describe({5: "pod-a"}) == ["netns pod-a (5)", "port 53, 80"]
