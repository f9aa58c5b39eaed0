"""Files root writes or compiles from, in places another user prepared first.

The other user is real: `setpriv` runs its commands as nobody (uid 65534),
with no capabilities, as a local user or a process of a pod on the node would.
"""

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from ..conftest import NETDROP

NOBODY = 65534


def as_nobody(*cmd: str) -> None:
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd], check=True)


@pytest.fixture
def shared():
    """A world-writable sticky directory, like /tmp, for the other user to work in
    (pytest's own tmp_path lies under a directory only root may enter)."""
    path = Path(tempfile.mkdtemp(prefix="netdrop-shared-"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def netdrop(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*NETDROP, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def one_error_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netdrop: error: "), res.stderr
    return lines[0]


def test_capture_refuses_a_directory_another_user_made_with_links(shared):
    victim = shared / "victim"
    victim.write_text("root's precious file\n")
    victim.chmod(0o644)
    outdir = shared / "incident"
    as_nobody("mkdir", str(outdir))
    for name in ("events.jsonl", "summary.json", "drops.pcapng"):
        as_nobody("ln", "-s", str(victim), str(outdir / name))
    line = one_error_line(netdrop("capture", "--duration", "1", "--pcap", "--output", str(outdir)))
    assert f"output directory {outdir}: it belongs to another user (uid {NOBODY})" in line
    assert victim.read_text() == "root's precious file\n"


def test_capture_refuses_a_directory_others_may_write(tmp_path):
    outdir = tmp_path / "incident"
    outdir.mkdir()
    outdir.chmod(0o777)
    line = one_error_line(netdrop("capture", "--duration", "1", "--output", str(outdir)))
    assert "group or others may write it (mode 0777)" in line
    assert list(outdir.iterdir()) == []


def test_capture_refuses_a_link_as_its_directory(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    line = one_error_line(netdrop("capture", "--duration", "1", "--output", str(tmp_path / "link")))
    assert "it is a symbolic link" in line


def test_capture_is_private_and_never_clobbers_an_earlier_one(tmp_path):
    outdir = tmp_path / "incident"
    res = netdrop("capture", "--duration", "1", "--pcap", "--output", str(outdir))
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(outdir.stat().st_mode) == 0o700
    for name in ("events.jsonl", "summary.json", "drops.pcapng"):
        st = (outdir / name).stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600), name
    before = {p.name: p.read_bytes() for p in outdir.iterdir()}
    line = one_error_line(netdrop("capture", "--duration", "1", "--output", str(outdir)))
    assert "already holds a capture (events.jsonl, summary.json, drops.pcapng)" in line
    assert {p.name: p.read_bytes() for p in outdir.iterdir()} == before


def test_a_cache_another_user_can_write_is_not_compiled_from(shared):
    cache = shared / "cache"
    as_nobody("mkdir", "-p", str(cache / "planted" / "include" / "linux"))
    as_nobody("sh", "-c", f"echo '#error planted' > {cache}/planted/include/linux/kconfig.h")
    line = one_error_line(netdrop("watch", "--duration", "1", "--json", env={"NETDROP_CACHE": str(cache)}))
    assert f"cannot use cache directory (NETDROP_CACHE) {cache}: it belongs to another user" in line


def test_a_cache_under_a_directory_others_may_write_is_refused(tmp_path):
    parent = tmp_path / "open"
    parent.mkdir()
    parent.chmod(0o777)
    line = one_error_line(netdrop("watch", "--duration", "1", "--json",
                                  env={"NETDROP_CACHE": str(parent / "cache")}))
    assert f"(in {parent})" in line and "mode 0777" in line
    assert not (parent / "cache").exists()


def test_a_new_cache_is_private(tmp_path):
    cache = tmp_path / "cache"
    res = netdrop("watch", "--duration", "1", "--json", env={"NETDROP_CACHE": str(cache)})
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    trees = [p for p in cache.iterdir() if p.is_dir()]
    assert len(trees) == 1 and trees[0].name.startswith("kernel-")
    assert stat.S_IMODE(trees[0].stat().st_mode) == 0o700
    assert (trees[0] / "include" / "linux" / "kconfig.h").is_file()
    assert not any(p.name.startswith(".") for p in cache.iterdir()), "a temporary tree was left behind"
    assert Path(cache).stat().st_uid == 0


def test_an_empty_volume_the_kubelet_made_becomes_the_private_cache(tmp_path):
    """An emptyDir as the kubelet makes it (root's, mode 0777, no sticky bit): netdrop
    makes it 0700 and builds its tree there (the DaemonSet's cache volume)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    res = netdrop("watch", "--duration", "1", "--json", env={"NETDROP_CACHE": str(cache)})
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert [p.name[:7] for p in cache.iterdir()] == ["kernel-"]


def test_an_open_volume_another_user_wrote_into_is_refused(shared):
    cache = shared / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    as_nobody("mkdir", "-p", str(cache / "planted" / "include" / "linux"))
    line = one_error_line(netdrop("watch", "--duration", "1", "--json", env={"NETDROP_CACHE": str(cache)}))
    assert f"cannot use cache directory (NETDROP_CACHE) {cache}: group or others may write it (mode 0777)" in line
    assert stat.S_IMODE(cache.stat().st_mode) == 0o777
