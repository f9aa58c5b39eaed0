"""The plugin run as a user meets it: the lab's API server, a kubeconfig, output read as strings."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tracer.env import Environment
from tracer.kubectl import cli
from tracer.kubectl.kubeapi import Target, connect
from tracer.kubectl.wiring import Wiring
from tracer.lab import api as labapi


@dataclass
class Run:
    status: int
    out: str
    err: str


@dataclass
class Plugin:
    """kubectl-netdrop with its kubeconfig given through $KUBECONFIG, as a user has it."""

    kubeconfig: Path | None
    home: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def wiring(self, **kw: Any) -> Wiring:
        env = {"HOME": str(self.home), **({"KUBECONFIG": str(self.kubeconfig)} if self.kubeconfig else {})}
        environment = Environment(stdout=io.StringIO(), stderr=io.StringIO(), stdout_tty=False, stderr_tty=False,
                                  color=False, width=80, columns=80)

        def connect_as_user(target: Target) -> Any:
            return connect(target, env)
        return Wiring(env=environment, connect=connect_as_user, **{**self.extra, **kw})

    def __call__(self, *argv: str, **kw: Any) -> Run:
        w = self.wiring(**kw)
        status = cli.main(list(argv), w)
        out, err = w.env.stdout.getvalue(), w.env.stderr.getvalue()   # type: ignore[attr-defined]
        assert "Traceback" not in err
        return Run(int(status), out, err)


def write_kubeconfig(path: Path, contexts: dict[str, tuple[str, str, str | None]], current: str | None) -> Path:
    """contexts: name -> (server, token, namespace)."""
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": n, "cluster": {"server": s}} for n, (s, _, _) in contexts.items()],
           "users": [{"name": n, "user": {"token": t}} for n, (_, t, _) in contexts.items()],
           "contexts": [{"name": n, "context": {"cluster": n, "user": n, **({"namespace": ns} if ns else {})}}
                        for n, (_, _, ns) in contexts.items()]}
    if current:
        doc["current-context"] = current
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


@pytest.fixture
def lab(tmp_path):
    """The lab's API server with two nodes, web pods on both, a db pod, and an agent pod per node."""
    server = labapi.KubeAPI()
    server.start()
    for i, node in enumerate(("node-1", "node-2", "node-3")):
        server.add_node(labapi.node_object(node, [f"192.168.100.{i + 1}"]))
        server.put_pod(labapi.pod_object(f"netdrop-{'abc'[i]}x{i}", "netdrop", node, [f"192.168.100.{i + 1}"],
                                         f"192.168.100.{i + 1}", labels={"app.kubernetes.io/name": "netdrop"},
                                         host_network=True))
    server.put_pod(labapi.pod_object("web-0", "shop", "node-1", ["10.244.1.5"], "192.168.100.1",
                                     labels={"app": "web"}))
    server.put_pod(labapi.pod_object("web-1", "shop", "node-2", ["10.244.2.5"], "192.168.100.2",
                                     labels={"app": "web"}))
    server.put_pod(labapi.pod_object("db-0", "shop", "node-3", ["10.244.3.5"], "192.168.100.3",
                                     labels={"app": "db"}))
    yield server
    server.stop()


@pytest.fixture
def plugin(lab, tmp_path):
    """The plugin as the agent's user of the lab (the only user main's lab API server serves reads to)."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"lab": (lab.url, lab.token, "shop")}, "lab")
    return Plugin(kubeconfig, tmp_path)
