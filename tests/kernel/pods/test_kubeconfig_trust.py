"""A kubeconfig that another user can change does not make root run its exec
plugin: written by a real unprivileged user (setpriv as nobody) or left
writable by others, from --kubeconfig, $KUBECONFIG or ~/.kube/config. The
plugin would create a marker file: it must never exist."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import NETDROP

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def kubeconfig(plugin: Path) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "admin"}}],
        "users": [{"name": "admin", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(plugin),
            "interactiveMode": "Never"}}}]})


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    """An exec credential plugin (root's own, in root's directory) that leaves a marker when run."""
    marker = tmp_path / "plugin-ran"
    script = tmp_path / "plugin"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n"
                      'echo \'{"apiVersion":"client.authentication.k8s.io/v1beta1",'
                      '"kind":"ExecCredential","status":{"token":"t"}}\'\n')
    script.chmod(0o700)
    return script


def marker(plugin: Path) -> Path:
    return plugin.with_name("plugin-ran")


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory anyone may write in, like /tmp (sticky): where nobody leaves its file."""
    path = Path(tempfile.mkdtemp(prefix="netdrop-trust-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def as_nobody(*cmd: str) -> None:
    subprocess.run([*NOBODY, *cmd], check=True, timeout=10)


def nobodys_kubeconfig(shared: Path, plugin: Path, rel: str = "config") -> Path:
    path = shared / rel
    as_nobody("mkdir", "-p", str(path.parent))
    subprocess.run([*NOBODY, "sh", "-c", f"umask 077; cat > '{path}'"], input=kubeconfig(plugin), text=True,
                   check=True, timeout=10)
    assert path.stat().st_uid == 65534
    return path


def netdrop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    return subprocess.run([*NETDROP, *args], capture_output=True, text=True, timeout=60, env={**base, **(env or {})})


def assert_refused(res: subprocess.CompletedProcess, path: Path, why: str, plugin: Path) -> None:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"netdrop: error: cannot use kubeconfig {path}: {why}"), lines[0]
    assert "its user 'admin' runs a command (exec)" in lines[0] and "use a kubeconfig owned by root" in lines[0]
    assert not marker(plugin).exists(), "root ran the plugin of a kubeconfig others can change"


def test_explicit_kubeconfig_of_another_user(shared, plugin):
    path = nobodys_kubeconfig(shared, plugin)
    res = netdrop("watch", "--json", "--duration", "1", "--kubeconfig", str(path))
    assert_refused(res, path, "it belongs to another user (uid 65534)", plugin)


def test_kubeconfig_writable_by_others(tmp_path, plugin):
    path = tmp_path / "config"
    path.write_text(kubeconfig(plugin))
    path.chmod(0o666)
    res = netdrop("watch", "--json", "--duration", "1", "--kubeconfig", str(path))
    assert_refused(res, path, "group or others may write it (mode 0666)", plugin)


def test_kubeconfig_env_and_home_of_another_user(shared, plugin):
    path = nobodys_kubeconfig(shared, plugin)
    assert_refused(netdrop("doctor", "--pod", "x", env={"KUBECONFIG": str(path)}), path,
                   "it belongs to another user (uid 65534)", plugin)
    home = shared / "home"
    path = nobodys_kubeconfig(shared, plugin, "home/.kube/config")
    assert_refused(netdrop("doctor", "--pod", "x", env={"HOME": str(home)}), path,
                   "it belongs to another user (uid 65534)", plugin)


def test_roots_own_kubeconfig_runs_its_plugin(tmp_path, plugin):
    """The same kubeconfig, root's and private: the plugin runs (the marker above can appear)."""
    path = tmp_path / "config"
    path.write_text(kubeconfig(plugin))
    path.chmod(0o600)
    res = netdrop("doctor", "--pod", "x", "--kubeconfig", str(path))
    assert "Traceback" not in res.stderr, res.stderr
    assert marker(plugin).exists(), res.stderr
