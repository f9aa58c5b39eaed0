"""trust.private_dir and the takeover of an empty directory others may write (a
Kubernetes emptyDir: mode 0777, no sticky bit), on real directories of the user
running the tests; other users' files are tests/kernel/commands/test_files.py's."""

import os
import stat
from pathlib import Path

import pytest

from tracer import trust
from tracer.errors import UserError

WHAT = "cache directory (NETDROP_CACHE)"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def made(path: Path, perm: int) -> Path:
    path.mkdir()
    path.chmod(perm)        # chmod, not mkdir's mode: the umask would take bits off, as the kubelet avoids
    return path


@pytest.mark.parametrize("perm", [0o777, 0o2777, 0o770, 0o757])
def test_an_empty_directory_others_may_write_is_made_private(tmp_path, perm):
    cache = made(tmp_path / "cache", perm)
    assert trust.private_dir(cache, WHAT) == cache
    assert mode(cache) == 0o700


def test_a_directory_with_anything_in_it_is_refused_and_left_as_it_was(tmp_path):
    cache = made(tmp_path / "cache", 0o777)
    (cache / "kernel-6.1-0123456789abcdef").mkdir()
    with pytest.raises(UserError, match=r"group or others may write it \(mode 0777\)"):
        trust.private_dir(cache, WHAT)
    assert mode(cache) == 0o777


def test_a_sticky_shared_directory_is_never_taken(tmp_path):
    shared = made(tmp_path / "shared", 0o1777)
    with pytest.raises(UserError, match=r"mode 1777"):
        trust.private_dir(shared, WHAT)
    assert mode(shared) == 0o1777


def test_a_link_to_an_empty_open_directory_is_not_followed(tmp_path):
    target = made(tmp_path / "target", 0o777)
    (tmp_path / "cache").symlink_to(target)
    with pytest.raises(UserError, match=r"mode 0777"):
        trust.private_dir(tmp_path / "cache", WHAT)
    assert mode(target) == 0o777


def test_nothing_is_taken_under_a_directory_others_may_write(tmp_path):
    parent = made(tmp_path / "open", 0o777)
    cache = made(parent / "cache", 0o777)
    with pytest.raises(UserError, match=rf"\(in {parent}\)"):
        trust.private_dir(cache, WHAT)
    assert mode(cache) == 0o777


def test_an_entry_made_just_before_the_mode_changed_is_seen(tmp_path, monkeypatch):
    """Someone creates a file between netdrop's first look and its chmod: the look
    after the chmod finds it, and the directory is refused (already closed to others)."""
    cache = made(tmp_path / "cache", 0o777)
    real_fchmod = os.fchmod

    def racing_fchmod(fd: int, perm: int) -> None:
        (cache / "planted.h").write_text("#error planted\n")
        real_fchmod(fd, perm)

    monkeypatch.setattr(trust.os, "fchmod", racing_fchmod)
    with pytest.raises(UserError, match="others wrote into it while it was being made private"):
        trust.private_dir(cache, WHAT)
    assert mode(cache) == 0o700


def test_a_missing_directory_is_created_private_and_a_private_one_left_alone(tmp_path):
    new = trust.private_dir(tmp_path / "a" / "cache", WHAT)
    assert mode(new) == 0o700
    kept = made(tmp_path / "kept", 0o755)
    (kept / "tree").mkdir()
    trust.private_dir(kept, WHAT)
    assert mode(kept) == 0o755 and (kept / "tree").is_dir()
