"""Kubeconfigs root does not trust: which entries make the client run code or
send files, read from any data without raising; and the refusal itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer.errors import UserError
from tracer.pods import kube


def config(users: list, contexts: list | None = None, current: object = "c") -> dict:
    if contexts is None:
        contexts = [{"name": "c", "context": {"cluster": "c", "user": "u"}}]
    return {"apiVersion": "v1", "kind": "Config", "current-context": current,
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
            "contexts": contexts, "users": users}


EXEC = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/tmp/x"}}


def test_exec_auth_provider_and_token_file_of_the_chosen_user():
    assert kube.privileged_entries(config([{"name": "u", "user": EXEC}])) == [("u", "runs a command (exec)")]
    gcp = {"auth-provider": {"name": "gcp", "config": {"cmd-path": "/tmp/x"}}}
    assert kube.privileged_entries(config([{"name": "u", "user": gcp}]))[0][1].endswith("(auth-provider)")
    assert kube.privileged_entries(config([{"name": "u", "user": {"tokenFile": "/etc/shadow"}}])) == \
        [("u", "sends a file to the API server as its token (tokenFile)")]


def test_tokens_and_certificates_run_nothing():
    assert kube.privileged_entries(config([{"name": "u", "user": {"token": "t"}}])) == []
    cert = {"client-certificate": "/a.crt", "client-key": "/a.key"}
    assert kube.privileged_entries(config([{"name": "u", "user": cert}])) == []


def test_only_the_current_contexts_user_counts():
    users = [{"name": "u", "user": {"token": "t"}}, {"name": "other", "user": EXEC}]
    assert kube.privileged_entries(config(users)) == []


@pytest.mark.parametrize("current,contexts", [
    (None, None),                                   # no current context
    ("nope", None),                                 # one that does not exist
    ("c", [{"name": "c", "context": None}]),        # a context without a user
    ("c", "not a list"),
])
def test_when_the_chosen_user_cannot_be_told_every_user_counts(current, contexts):
    users = [{"name": "u", "user": {"token": "t"}}, {"name": "other", "user": EXEC}]
    assert kube.privileged_entries(config(users, contexts, current)) == [("other", "runs a command (exec)")]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                               st.sampled_from(["name", "user", "users", "contexts", "context", "exec",
                                                "current-context", "tokenFile", "auth-provider", "x"]),
                               inner, max_size=5),
                           max_leaves=30)


@given(json_values)
def test_any_data_is_read_without_raising(doc):
    found = kube.privileged_entries(doc)
    assert isinstance(found, list) and all(isinstance(u, str) and isinstance(d, str) for u, d in found)


def write(path: Path, doc: object, mode: int) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    path.chmod(mode)
    return path


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(kube.os, "geteuid", lambda: 0)


def test_writable_by_others_with_exec_is_refused_in_one_line(as_root, tmp_path):
    path = write(tmp_path / "config", config([{"name": "u", "user": EXEC}]), 0o666)
    with pytest.raises(UserError) as err:
        kube.check_kubeconfig_trust(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "mode 0666" in msg
    assert "its user 'u' runs a command (exec)" in msg and "use a kubeconfig owned by root" in msg


def test_writable_by_others_with_a_token_is_used(as_root, tmp_path):
    kube.check_kubeconfig_trust(write(tmp_path / "config", config([{"name": "u", "user": {"token": "t"}}]),
                                      0o666))


def test_untrusted_and_not_yaml_is_one_clear_line(as_root, tmp_path):
    path = write(tmp_path / "config", "users: [\n  - {name: u, user: {exec: ", 0o666)
    with pytest.raises(UserError, match=f"kubeconfig {path} is not valid YAML"):
        kube.check_kubeconfig_trust(path)


def test_explicit_kubeconfig_the_client_cannot_use_is_one_line(tmp_path):
    path = write(tmp_path / "config", {"apiVersion": "v1", "kind": "Config", "users": 5}, 0o600)
    with pytest.raises(UserError) as err:
        kube.KubeClient(str(path))
    assert str(err.value).startswith(f"cannot use kubeconfig {path}: ") and "\n" not in str(err.value)
