import os

import pytest

from tracer.errors import UserError
from tracer.kernel.filters import Filters, ip_key_bytes, parse_ip, parse_port, resolve_netns


def test_netns_by_name_path_and_unknown(tmp_path):
    (tmp_path / "pod-a").write_text("")
    ino = os.stat(tmp_path / "pod-a").st_ino
    assert resolve_netns("pod-a", run_dir=tmp_path) == ino
    assert resolve_netns(str(tmp_path / "pod-a"), run_dir=tmp_path) == ino
    with pytest.raises(UserError, match=r"unknown network namespace 'pod-b'.*known: pod-a"):
        resolve_netns("pod-b", run_dir=tmp_path)


def test_netns_inode_of_this_process_is_known(tmp_path):
    mine = os.stat("/proc/self/ns/net").st_ino
    assert resolve_netns(str(mine), run_dir=tmp_path) == mine
    with pytest.raises(UserError, match="unknown network namespace inode 1"):
        resolve_netns("1", run_dir=tmp_path)


def test_ip_and_port_parsing():
    assert parse_ip("fd00::0001") == "fd00::1"
    with pytest.raises(UserError, match="not an IP address"):
        parse_ip("10.0.0.300")
    assert parse_port("53") == 53
    for bad in ("0", "65536", "http", "-1"):
        with pytest.raises(UserError):
            parse_port(bad)


def test_ip_keys_are_v4_mapped():
    assert ip_key_bytes("10.244.1.10") == bytes(10) + b"\xff\xff" + bytes([10, 244, 1, 10])
    assert len(ip_key_bytes("fd00::1")) == 16


def test_describe_uses_names():
    f = Filters(netns=frozenset({5}), ports=frozenset({53, 80}))
    assert f.describe({5: "pod-a"}) == ["netns pod-a (5)", "port 53, 80"]
