"""The capture store on a node (tracer/agent/capturefiles.py): its layout and modes, what it
refuses (links, directories of others, names that are no Kubernetes names), pruning by age and
by measured size, and what it trusts again after a restart."""

import os
import stat
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.agent import capturefiles
from tracer.agent.capturefiles import RECORD, CaptureStore, StoreError, dirname
from tracer.captures.report import FileEntry
from tracer.captures.spec import Capture, CaptureSpec, PodSelection

UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
SPEC = CaptureSpec(PodSelection(("web-0",)), None, 60.0)


def capture(name="web-drops", namespace="shop", uid=UID):
    return Capture(namespace, name, uid, datetime(2026, 12, 7, tzinfo=UTC), SPEC)


@pytest.fixture
def root(tmp_path):
    return tmp_path / "var" / "lib" / "netdrop" / "captures"


def write(outdir, name, data):
    with os.fdopen(outdir.create(name), "wb") as f:
        f.write(data)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_layout_and_modes_and_the_files_listed(root):
    store = CaptureStore(root)
    out = store.open(capture())
    try:
        assert out.path == root / "shop" / "web-drops-0f1e2d3c"
        write(out, "events.jsonl", b'{"a": 1}\n' * 10)
        write(out, "summary.json", b"{}\n")
    finally:
        out.close()
    for d in (root, root / "shop", out.path):
        assert mode(d) == 0o700 and os.lstat(d).st_uid == os.geteuid()
    assert store.files(capture()) == (FileEntry("summary.json", 3), FileEntry("events.jsonl", 90))
    assert store.files(capture(uid="ffffffff-other")) == ()
    f, size = store.open_file("shop", "web-drops", "events.jsonl")
    with f:
        assert (f.read(), size) == (b'{"a": 1}\n' * 10, 90)
    # Nothing but the three capture files is served: not its record, nothing by another path.
    assert store.open_file("shop", "web-drops", RECORD) is None
    assert store.open_file("shop", "web-drops", "drops.pcapng") is None       # not made
    assert store.open_file("shop", "../shop", "events.jsonl") is None
    assert store.open_file("other", "web-drops", "events.jsonl") is None


def test_a_capture_opened_twice_is_refused_and_a_new_uid_replaces_the_old(root):
    store = CaptureStore(root)
    store.open(capture()).close()
    with pytest.raises(StoreError, match="exists already"):
        store.open(capture())
    out = store.open(capture(uid="12345678-aaaa"))
    out.close()
    assert sorted(os.listdir(root / "shop")) == ["web-drops-12345678"]


@pytest.mark.parametrize(("namespace", "name"), [
    ("shop", ".."), ("shop", "."), ("..", "web"), ("shop", "a/../../etc"), ("shop", "/etc"),
    ("shop", "Web"), ("shop", "web\x00"), ("a" * 64, "web"), ("shop", "a" * 254), ("", "web"), ("shop", ""),
    ("shop", "-web"), ("shop", "web."),
])
def test_names_that_are_not_kubernetes_names_make_nothing(root, namespace, name):
    store = CaptureStore(root)
    with pytest.raises(StoreError, match="not a Kubernetes namespace and name"):
        store.open(capture(name=name, namespace=namespace))
    assert os.listdir(root) == []
    assert store.open_file(namespace, name, "events.jsonl") is None


def test_a_name_of_253_characters_fits_a_path_component_and_stays_distinct(root):
    store = CaptureStore(root)
    a, b = "a" * 252 + "b", "a" * 252 + "c"
    for n in (a, b):
        store.open(capture(name=n)).close()
    names = os.listdir(root / "shop")
    assert len(names) == 2 and all(len(n) <= 255 for n in names)
    assert store.captures == [("shop", a), ("shop", b)]
    assert len(dirname("x" * 300, UID)) == 255


def test_a_uid_that_is_not_the_api_servers_is_refused(root):
    with pytest.raises(StoreError, match="uid"):
        CaptureStore(root).open(capture(uid="../../x"))


def test_a_link_on_the_path_or_a_directory_of_others_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(StoreError, match="symbolic link"):
        CaptureStore(tmp_path / "link" / "captures")
    assert not (real / "captures").exists()
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(StoreError, match="group or others may write"):
        CaptureStore(open_dir / "captures")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(StoreError, match="another user"):
        CaptureStore(theirs / "captures")


def test_a_namespace_directory_the_store_did_not_make_is_refused(root):
    store = CaptureStore(root)
    (root / "shop").mkdir()
    (root / "shop").chmod(0o777)
    with pytest.raises(StoreError, match="not the capture store's own"):
        store.open(capture())
    os.rmdir(root / "shop")
    (root / "elsewhere").mkdir(mode=0o700)
    (root / "shop").symlink_to(root / "elsewhere")
    with pytest.raises(StoreError, match="symbolic link"):
        store.open(capture())
    assert os.listdir(root / "elsewhere") == []


def test_links_and_fifos_in_a_capture_are_not_served_and_removal_follows_no_link(root, tmp_path):
    store = CaptureStore(root)
    out = store.open(capture())
    secret = tmp_path / "secret"
    secret.write_bytes(b"not a capture")
    os.symlink(secret, "events.jsonl", dir_fd=out.fd)
    os.link(secret, out.path / "summary.json")            # a hard link: a second name of another file
    os.mkfifo("drops.pcapng", dir_fd=out.fd)
    out.close()
    for name in ("events.jsonl", "summary.json", "drops.pcapng"):
        assert store.open_file("shop", "web-drops", name) is None
    assert store.files(capture()) == ()
    assert store.remove("shop", "web-drops")
    assert secret.read_bytes() == b"not a capture" and not (root / "shop").exists()


def test_removal_keeps_what_the_store_did_not_make(root):
    store = CaptureStore(root)
    out = store.open(capture())
    os.mkdir("inner", dir_fd=out.fd)
    os.close(os.open("keep", os.O_CREAT | os.O_WRONLY, dir_fd=os.open("inner", os.O_RDONLY, dir_fd=out.fd)))
    out.close()
    assert not store.remove("shop", "web-drops")
    assert (out.path / "inner" / "keep").exists()
    assert store.remove("other", "web-drops") is False


def test_a_capture_directory_swapped_after_it_was_made_is_neither_served_nor_removed(root, tmp_path):
    store = CaptureStore(root)
    out = store.open(capture())
    write(out, "events.jsonl", b"x\n")
    out.close()
    os.rename(out.path, tmp_path / "moved")
    (tmp_path / "moved").rename(out.path.parent / "planted-elsewhere")
    os.mkdir(out.path, 0o700)
    (out.path / "events.jsonl").write_bytes(b"planted\n")
    os.chmod(out.path / "events.jsonl", 0o600)
    assert store.open_file("shop", "web-drops", "events.jsonl") is None
    assert not store.remove("shop", "web-drops")
    assert (out.path / "events.jsonl").read_bytes() == b"planted\n"


def fill(store, name, size, uid=UID):
    out = store.open(capture(name=name, uid=uid))
    try:
        write(out, "events.jsonl", b"x" * size)
    finally:
        out.close()


def test_prune_removes_by_age_then_the_oldest_until_within_budget(root, monkeypatch):
    clock = [1_000_000.0]
    monkeypatch.setattr(capturefiles.time, "time", lambda: clock[0])
    store = CaptureStore(root, budget_bytes=10_000, retention_seconds=3600)
    for i, name in enumerate(["old", "a", "b", "c"]):
        fill(store, name, 4000)
        clock[0] += 1000 if i == 0 else 10
    # "old" is past its retention; a, b, c measure 12,000 bytes (and their records): a goes too.
    assert store.prune(clock[0] - 1000 + 3601 + 30) == ["shop/old", "shop/a"]
    assert store.captures == [("shop", "b"), ("shop", "c")]
    assert store.prune(clock[0]) == []
    fill(store, "d", 6000)
    # c is being recorded: kept whatever the budget; b and d are not.
    assert store.prune(clock[0], keep=frozenset({("shop", "c")})) == ["shop/b", "shop/d"]


def test_prune_measures_what_grew_after_it_was_opened(root):
    store = CaptureStore(root, budget_bytes=10_000)
    fill(store, "a", 100)
    out = store.open(capture(name="b"))
    write(out, "events.jsonl", b"x" * 100)
    assert store.prune() == []
    with os.fdopen(os.open("events.jsonl", os.O_WRONLY | os.O_APPEND, dir_fd=out.fd), "wb") as f:
        f.write(b"y" * 20_000)          # the recorder's file grew
    out.close()
    assert store.prune() == ["shop/a", "shop/b"]


def test_prune_does_bounded_work_per_call(root, monkeypatch):
    monkeypatch.setattr(capturefiles, "REMOVALS_PER_PRUNE", 3)
    store = CaptureStore(root, budget_bytes=0)
    for i in range(7):
        fill(store, f"c{i}", 10)
    assert [len(store.prune()) for _ in range(4)] == [3, 3, 1, 0]


def test_a_restart_finds_the_captures_it_made_and_nothing_else(root):
    store = CaptureStore(root)
    fill(store, "web-drops", 50)
    fill(store, "db-drops", 60)
    store.close()
    # What the store never made: a directory without its record, one not 0700, a forged record.
    (root / "shop" / "stray-12345678").mkdir(mode=0o700)
    (root / "shop" / "loose-12345678").mkdir(mode=0o700)
    (root / "shop" / "loose-12345678").chmod(0o755)
    (root / "shop" / "forged-12345678").mkdir(mode=0o700)
    fd = os.open(root / "shop" / "forged-12345678" / RECORD, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b'{"namespace": "shop", "name": "other", "uid": "12345678", "opened": 1}')
    os.close(fd)
    (root / "Bad Namespace").mkdir(mode=0o700)
    again = CaptureStore(root)
    assert again.captures == [("shop", "db-drops"), ("shop", "web-drops")]
    f, size = again.open_file("shop", "db-drops", "events.jsonl")
    f.close()
    assert size == 60
    assert again.prune(now=10**12) == ["shop/web-drops", "shop/db-drops"]    # retention long past
    assert sorted(os.listdir(root / "shop")) == ["forged-12345678", "loose-12345678", "stray-12345678"]


@settings(max_examples=300, deadline=None)
@given(namespace=st.text(max_size=70), name=st.text(max_size=260), file=st.text(max_size=20))
def test_any_names_from_a_client_serve_nothing_outside_the_store(tmp_path_factory, namespace, name, file):
    root = tmp_path_factory.getbasetemp() / "anynames"
    store = CaptureStore(root)
    assert store.open_file(namespace, name, file) is None
    try:
        store.open(capture(name=name, namespace=namespace)).close()
    except StoreError:
        return
    finally:
        assert os.listdir(root.parent).count("anynames") == 1
    for dirpath, _, _ in os.walk(root):
        assert os.path.realpath(dirpath).startswith(str(root))
    store.remove(namespace, name)
    assert os.listdir(root) == []
