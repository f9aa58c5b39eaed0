"""The simulated node itself, as root on a node it does not own: it removes only
what it made, its files are root's alone from their first byte, and a bad
--prefix is refused before anything is made. Namespaces that are not the lab's
(`<prefix>-foo`, a `cni-<uuid>` pod sandbox) are made here by hand, as another
party on the node would, and removed at the end."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracer import cli
from tracer.lab.cni import CNI_DIR, CNI_ENV, CNI_NETWORK, CNI_PLUGINS, cni_plugins, cni_wanted, ipam_dir_of
from tracer.lab.node import CNI_DEL_BUDGET, SimNode
from tracer.lab.ownership import (HOLDER, HOLDER_CMDLINE, NETNS_DIR, STATE_DIR, LabState, Made, NetnsId, Ownership,
                                  kill_holder, netns_cookies, netns_id, parse_state)
from tracer.lab.shell import LabError, in_netns, run
from tracer.lab.topology import POD_MTU, UNNAMED_PODS
from tracer.trust import write_private

from ...timing import TIME_SCALE, allowed

PREFIX = f"ndl{os.getpid()}"
# Time bounds are multiplied by TIME_SCALE: under QEMU's emulation of the CPU (scripts/kernels
# without KVM) everything takes some 20-30 times as long.


def names_of(prefix: str) -> list[str]:
    """The /run/netns names of prefix (none before anyone ran `ip netns add`, which makes it)."""
    if not NETNS_DIR.exists():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix + "-"))


def alive(pid: int) -> bool:
    """A process that still runs (a zombie waiting for its parent does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def holder_pids(node: SimNode) -> list[int]:
    return [pid for m in (Made(e, i) for e, i in node.owned.made.items()) if (pid := m.holder_pid) is not None]


def lab_files(prefix: str) -> list[str]:
    """The files a lab with this prefix keeps, of those that exist."""
    paths = (f"lab-{prefix}.json", f"lab-{prefix}.kubeconfig", f"lab-{prefix}")
    return [p for p in paths if os.path.lexists(STATE_DIR / p)]


def a_stamp() -> str:
    return f"netdrop-lab-{secrets.token_hex(16)}"


Identity = tuple[int, NetnsId | None, NetnsId | None]


def identity(path: str) -> Identity | None:
    """All that tells the namespace at path: its inode, its cookie where the kernel has
    one, and its stamp if it has one; None if there is none."""
    try:
        inode = os.stat(path).st_ino
    except OSError:
        return None
    return inode, netns_id(path, cookie=True), netns_id(path, cookie=False)


class Foreign:
    """Namespaces someone else made on the node: `<prefix>-foo`, and a pod
    sandbox named as a CNI plugin names it. Each carries a stamp of its own
    (never one of the lab's), so that on a kernel without the netns cookie, too,
    the test tells them from namespaces made again under their names."""

    def __init__(self, prefix: str):
        self.names = [f"{prefix}-foo", f"cni-{uuid.uuid4()}"]
        for name in self.names:
            run("ip", "netns", "add", name)
            run("ip", "-n", name, "link", "set", "lo", "alias", a_stamp())
        self.ids = self.current()

    def current(self) -> dict[str, Identity | None]:
        return {name: identity(str(NETNS_DIR / name)) for name in self.names}

    def remove(self) -> None:
        for name in self.names:
            run("ip", "netns", "del", name, check=False)


@pytest.fixture(scope="module")
def foreign() -> Iterator[Foreign]:
    others = Foreign(PREFIX)
    try:
        yield others
    finally:
        others.remove()


@pytest.fixture(params=["cookie", "stamp"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How the lab tells its namespaces (NetnsId): by their netns cookie, where the
    kernel has it (Linux 5.14), or by its stamp on their lo, as on kernels without it
    (forced here on those with it)."""
    if request.param == "cookie" and not netns_cookies():
        pytest.skip("this kernel has no netns cookie (SO_NETNS_COOKIE, Linux 5.14)")
    if request.param == "stamp":
        monkeypatch.setattr("tracer.lab.ownership.netns_cookies", lambda: False)
    return str(request.param)


@pytest.fixture(scope="module")
def built(foreign: Foreign) -> Iterator[SimNode]:
    # umask 0: the lab's files must be private by how they are made, not by the umask.
    old = os.umask(0)
    try:
        node = SimNode.create(prefix=PREFIX)
    finally:
        os.umask(old)
    try:
        yield node
    finally:
        node.destroy()


@pytest.mark.parametrize("prefix", ["../x", "a b", "UPPER", "x" * 16, "", "cni\x1b]0;owned\x07", "nd/demo"])
def test_bad_prefix_refused_before_anything_is_made(prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["demo", "--prefix", prefix, "--duration", "1", "--cases", "mtu"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netdrop: error: invalid prefix"), err
    assert "\x1b" not in err
    assert names_of(prefix) == [] and lab_files(prefix) == []


def test_pod_namespaces_carry_the_prefix(built: SimNode) -> None:
    named = [e for e in built.owned.made if not e.startswith("/")]
    assert len(named) == 6 and all(e.startswith(PREFIX + "-") for e in named)
    sandboxes = [p.netns for r, p in built.pods.items() if r not in UNNAMED_PODS and not p.host_network]
    assert len(sandboxes) == 3 and all(s.startswith(f"{PREFIX}-cni-") for s in sandboxes)
    assert set(names_of(PREFIX)) == set(named) | {f"{PREFIX}-foo"}


def test_files_are_roots_alone(built: SimNode) -> None:
    st = os.lstat(STATE_DIR)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o700
    assert built.kubeconfig is not None
    ours = [STATE_DIR / f"lab-{PREFIX}.json", built.kubeconfig]
    ipam = sorted((built.ipam_dir / "cbr0").iterdir())
    for path in ours + ([] if built.cni_dir else ipam):
        st = os.lstat(path)
        assert stat.S_ISREG(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600, path
    if built.cni_dir is None:
        # By hand: one reservation per IPv4 address of node1's three pods, and the last one reserved.
        assert len(ipam) == 4
    else:
        # host-local's own files (mode as it makes them: 0644, its lock 0750), for both families;
        # nobody else may change them, nor even reach them: every directory above is 0700.
        assert len(ipam) == 3 * 2 + 3
        for path in ipam:
            st = os.lstat(path)
            assert stat.S_ISREG(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022, path
    for d in (built.ipam_dir.parent.parent, built.ipam_dir.parent, built.ipam_dir, built.ipam_dir / "cbr0"):
        assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700, d


def test_api_listens_on_loopback_only(built: SimNode) -> None:
    assert built.api is not None
    port = int(built.api.url.rsplit(":", 1)[1])
    listening = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:      # TCP_LISTEN
                listening.append(local.rsplit(":", 1)[0])
    assert listening == ["0100007F"]        # 127.0.0.1, little-endian


def test_state_file_link_is_replaced_not_followed(built: SimNode, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("precious")
    state = STATE_DIR / f"lab-{PREFIX}.json"
    state.unlink()
    state.symlink_to(target)
    new = built.recreate_pod("db", host=11)     # the lab writes its state again
    assert target.read_text() == "precious"
    st = os.lstat(state)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert parse_state(state.read_text(), PREFIX).made[-1].entry == new.netns


def test_destroy_removes_everything_it_made_and_nothing_else(built: SimNode, foreign: Foreign) -> None:
    holders = holder_pids(built)
    assert holders and all(alive(pid) for pid in holders)
    start = time.monotonic()
    built.destroy()
    took = time.monotonic() - start
    assert took < allowed(1.0), f"destroy took {took:.2f}s"      # its share of the 2 s stop (tests/timing.py)
    assert names_of(PREFIX) == [f"{PREFIX}-foo"]
    assert not any(alive(pid) for pid in holders)
    assert lab_files(PREFIX) == []
    assert foreign.current() == foreign.ids
    built.destroy()                             # again: nothing left to do, nothing else touched
    assert foreign.current() == foreign.ids


def path_of(entry: str) -> str:
    return entry if entry.startswith("/") else str(NETNS_DIR / entry)


def test_killed_lab_is_cleaned_by_the_next(kind: str, foreign: Foreign, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("precious")
    kubeconfig = STATE_DIR / f"lab-{PREFIX}.kubeconfig"
    kubeconfig.symlink_to(target)                  # planted before the lab starts
    sim = SimNode.create(prefix=PREFIX)
    try:
        assert target.read_text() == "precious" and stat.S_ISREG(os.lstat(kubeconfig).st_mode)
        made, holders = dict(sim.owned.made), holder_pids(sim)
        assert len(made) == 7 and all((i.cookie is not None, i.stamp is not None) == (kind == "cookie",
                                                                                      kind == "stamp")
                                      for i in made.values())
        assert kind == "cookie" or len({i.stamp for i in made.values()}) == 7      # a stamp of its own each
        assert sim.api is not None
        sim.api.stop()                             # the process "dies": its server with it, its namespaces stay
    except BaseException:
        sim.destroy()
        raise
    del sim
    # Meanwhile someone deletes the client namespace and makes their own under the same name.
    # The kernel may give theirs the inode number ours had (proc_alloc_inum() takes the lowest
    # free one); where it did not, the state file is made to say so: then only the cookie, or
    # the stamp, tells the two apart.
    client = f"{PREFIX}-client"
    run("ip", "netns", "del", client)
    run("ip", "netns", "add", client)
    try:
        theirs = identity(path_of(client))
        assert theirs is not None
        same_inode = {e: NetnsId(theirs[0], i.cookie, i.stamp) if e == client else i for e, i in made.items()}
        write_private(STATE_DIR, f"lab-{PREFIX}.json",
                      LabState(tuple(Made(e, i) for e, i in same_inode.items())).to_json())
        Ownership(PREFIX).cleanup_leftovers()
        assert names_of(PREFIX) == sorted([f"{PREFIX}-foo", client])
        assert identity(path_of(client)) == theirs
        assert not any(alive(pid) for pid in holders)
        assert not any(i.is_at(path_of(e)) for e, i in (*made.items(), *same_inode.items()))
        assert lab_files(PREFIX) == [] and target.read_text() == "precious"
        assert foreign.current() == foreign.ids
    finally:
        run("ip", "netns", "del", client, check=False)


def test_a_stamp_is_lo_alias_and_tells_a_namespace_made_again_under_its_name(foreign: Foreign) -> None:
    name = f"{PREFIX}-stamp"
    path = str(NETNS_DIR / name)
    run("ip", "netns", "add", name)
    try:
        assert netns_id(path, cookie=False) is None              # made by someone else: no alias
        run("ip", "-n", name, "link", "set", "lo", "alias", "their own alias")
        assert netns_id(path, cookie=False) is None              # an alias, but no stamp of ours
        stamp = a_stamp()
        run("ip", "-n", name, "link", "set", "lo", "alias", stamp)
        ours = NetnsId(os.stat(path).st_ino, stamp=stamp)
        assert netns_id(path, cookie=False) == ours and ours.is_at(path)
        run("ip", "netns", "del", name)
        run("ip", "netns", "add", name)
        # Someone else's under that name, whatever its inode: never taken for ours.
        assert not ours.is_at(path) and not NetnsId(os.stat(path).st_ino, stamp=stamp).is_at(path)
        assert foreign.current() == foreign.ids
    finally:
        run("ip", "netns", "del", name, check=False)


def test_a_holder_is_killed_only_in_the_namespace_it_held(kind: str, foreign: Foreign) -> None:
    """A `sleep infinity` in someone else's namespace, at the pid a state file names
    and the inode it records: the cookie or the stamp recorded is not theirs."""
    sleeper = subprocess.Popen([*in_netns(foreign.names[1]), *HOLDER], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{sleeper.pid}/cmdline").read_bytes() != HOLDER_CMDLINE:
            assert time.monotonic() < deadline, "the holder did not start"
            time.sleep(0.01)
        theirs = netns_id(f"/proc/{sleeper.pid}/ns/net")
        assert theirs is not None
        recorded = NetnsId(theirs.inode, cookie=theirs.cookie + 1) if theirs.cookie is not None \
            else NetnsId(theirs.inode, stamp=a_stamp())
        kill_holder(sleeper.pid, recorded)
        assert alive(sleeper.pid)
        kill_holder(sleeper.pid, theirs)        # the same check, given its own identity, lets it go
        assert not alive(sleeper.pid)
        assert foreign.current() == foreign.ids
    finally:
        sleeper.kill()
        sleeper.wait()


def test_existing_name_is_refused_not_taken(tmp_path: Path) -> None:
    prefix = f"ndx{os.getpid()}"
    run("ip", "netns", "add", f"{prefix}-node1")
    try:
        theirs = identity(str(NETNS_DIR / f"{prefix}-node1"))
        with pytest.raises(LabError, match=f"{prefix}-node1 exists and this lab did not make it"):
            SimNode.create(prefix=prefix)
        assert names_of(prefix) == [f"{prefix}-node1"]
        assert identity(str(NETNS_DIR / f"{prefix}-node1")) == theirs
        assert lab_files(prefix) == []
    finally:
        run("ip", "netns", "del", f"{prefix}-node1", check=False)


def test_state_file_link_planted_before_start_is_refused(tmp_path: Path) -> None:
    prefix = f"ndy{os.getpid()}"
    target = tmp_path / "precious"
    target.write_text('{"namespaces": [], "ids": {}}')
    state = STATE_DIR / f"lab-{prefix}.json"
    state.symlink_to(target)
    try:
        with pytest.raises(LabError, match="symbolic link|Too many levels"):
            SimNode.create(prefix=prefix)
        assert target.read_text() == '{"namespaces": [], "ids": {}}' and names_of(prefix) == []
    finally:
        state.unlink()


@pytest.mark.parametrize("problem", ["link", "others-write", "other-owner", "file"])
def test_untrusted_state_dir_is_refused(problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state_dir = tmp_path / "netdrop"
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    if problem == "link":
        state_dir.symlink_to(real)
    elif problem == "file":
        state_dir.write_text("")
    else:
        state_dir.mkdir(mode=0o700)
        if problem == "others-write":
            state_dir.chmod(0o777)
        else:
            os.chown(state_dir, 65534, 65534)
    monkeypatch.setattr("tracer.lab.ownership.STATE_DIR", state_dir)
    prefix = f"ndz{os.getpid()}"
    with pytest.raises(LabError, match="refusing the lab's state directory") as exc:
        SimNode.create(prefix=prefix)
    assert "\n" not in str(exc.value)
    assert names_of(prefix) == [] and list(real.iterdir()) == []


def test_cli_demo_refuses_a_bad_prefix_as_a_user_runs_it() -> None:
    from ..conftest import NETDROP

    res = subprocess.run([*NETDROP, "demo", "--prefix", "../../etc/x"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "invalid prefix" in res.stderr


def fake_plugins(where: Path, mode: int = 0o755, owner: int = 0) -> Path:
    """bridge and host-local that would leave a mark if they were ever run."""
    where.mkdir(mode=0o755)
    mark = where / "ran"
    for name in CNI_PLUGINS:
        plugin = where / name
        plugin.write_text(f"#!/bin/sh\ntouch {mark}\n")
        plugin.chmod(mode)
        os.chown(plugin, owner, owner)
    return mark


@pytest.mark.parametrize("problem", ["others-write", "other-owner", "link-of-another"])
def test_cni_plugins_others_can_change_are_never_run(problem: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = tmp_path / "cni"
    if problem == "link-of-another":
        mark = fake_plugins(tmp_path / "real")
        plugins.mkdir(mode=0o755)
        for name in CNI_PLUGINS:
            (plugins / name).symlink_to(tmp_path / "real" / name)
            os.chown(plugins / name, 65534, 65534, follow_symlinks=False)
    else:
        mark = fake_plugins(plugins, *((0o757, 0) if problem == "others-write" else (0o755, 65534)))
    monkeypatch.setattr("tracer.lab.cni.CNI_DIR", plugins)
    monkeypatch.delenv(CNI_ENV, raising=False)
    prefix = f"ndc{os.getpid()}"
    for choice in (None, True):
        with pytest.raises(LabError, match="the CNI plugin") as exc:
            SimNode.create(prefix=prefix, cni=choice).destroy()     # (should it ever be built)
        assert "\n" not in str(exc.value)
    assert not mark.exists() and names_of(prefix) == [] and lab_files(prefix) == []


def test_plugins_used_when_installed_unless_told_not_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CNI_ENV, raising=False)
    monkeypatch.setattr("tracer.lab.cni.CNI_DIR", tmp_path / "none")
    assert cni_wanted(None) is None
    with pytest.raises(LabError, match="not installed"):
        cni_wanted(True)
    fake_plugins(tmp_path / "cni")
    monkeypatch.setattr("tracer.lab.cni.CNI_DIR", tmp_path / "cni")
    assert cni_wanted(None) == tmp_path / "cni"
    monkeypatch.setenv(CNI_ENV, "0")
    assert cni_wanted(None) is None and cni_wanted(False) is None


def lease(net: Path, ip: str) -> list[str]:
    """host-local's reservation of ip: [container id, interface], [] when there is none."""
    try:
        return (net / ip).read_text().split()
    except FileNotFoundError:
        return []


def test_pods_are_made_by_the_cni_plugins_and_deleted_by_them(monkeypatch: pytest.MonkeyPatch) -> None:
    if cni_plugins() is None:
        pytest.skip("containernetworking-plugins are not installed (scripts/setup installs them)")
    monkeypatch.setattr("tracer.lab.node.CNI_DEL_BUDGET", CNI_DEL_BUDGET * TIME_SCALE)
    prefix = f"ndk{os.getpid()}"
    host_leases = {p.name for p in Path("/var/lib/cni/networks/cbr0").glob("*")}
    sim = SimNode.create(prefix=prefix, cni=True)
    try:
        assert sim.cni_dir == CNI_DIR
        net = sim.ipam_dir / CNI_NETWORK
        pods = [p for p in sim.pods.values() if p.node == sim.node1 and not p.host_network]
        assert len(pods) == 3
        for pod in pods:
            # host-local's reservations in the lab's own dataDir, both families, for this sandbox.
            assert pod.ipv6 is not None and pod.container_id is not None
            for ip in (pod.ipv4, pod.ipv6):
                assert lease(net, ip) == [pod.container_id, "eth0"], ip
            # The bridge plugin's veth: a port of cni0 at the pods' MTU, the pod's eth0 behind it.
            link = json.loads(run("ip", "-n", sim.node1, "-j", "-d", "link", "show", "dev", pod.host_veth))[0]
            assert link["master"] == "cni0" and link["mtu"] == POD_MTU
            eth0 = json.loads(run("ip", "-j", "addr", "show", "dev", "eth0", ns=pod.netns))[0]
            assert {a["local"] for a in eth0["addr_info"]} >= {pod.ipv4, pod.ipv6}
            assert "default via 10.244.1.1" in run("ip", "route", ns=pod.netns)
        # cni0 is the plugin's (gateway addresses on it), with the lab's fixed MAC.
        br = json.loads(run("ip", "-n", sim.node1, "-j", "-d", "addr", "show", "dev", "cni0"))[0]
        assert br["linkinfo"]["info_kind"] == "bridge" and br["address"] == "0e:00:00:00:01:02"
        assert {"10.244.1.1", "fd00:10:244:1::1"} <= {a["local"] for a in br["addr_info"]}
        api = sim.pods["api"]
        assert lease(ipam_dir_of(sim.owned.lab_dir, 2) / CNI_NETWORK, api.ipv4) == [api.container_id, "eth0"]
        # A restarted pod: DEL frees the old sandbox's addresses and veth, ADD reserves the new ones.
        old = sim.pods["web"]
        new = sim.recreate_pod("web", host=12)
        assert lease(net, old.ipv4) == [] and lease(net, new.ipv4) == [new.container_id, "eth0"]
        assert run("ip", "-n", sim.node1, "link", "show", "dev", str(old.host_veth), check=False) == ""
        # destroy() deletes each pod through the plugins before its namespace goes (its files kept
        # here to look: destroy() removes the lab's directory only once it has checked it).
        sim.owned.files_checked = False
        sim.destroy()
        assert [ip for ip in (new.ipv4, "10.244.1.11", "10.244.1.13") if lease(net, ip)] == []
        assert names_of(prefix) == []
    finally:
        sim.destroy()
        sim.owned.cleanup_leftovers()
    assert lab_files(prefix) == []
    # Nothing of the lab's in the host's own CNI state.
    assert {p.name for p in Path("/var/lib/cni/networks/cbr0").glob("*")} == host_leases
