"""`kubectl netdrop` end to end in the simulated cluster (issue 23's "Done when").

Two simulated nodes, each with a real `netdrop serve` (--node-netns, the lab's
kubeconfig, HTTPS with a certificate of the test's CA, --advertise, a capture
directory of its own), pods of the test's own labelled app=web on both nodes
and an unselected one beside them. A responder bound to the netdrop-capturer
ClusterRole in the pods' namespace (a RoleBinding, as deploy/rbac.yaml
advises) runs `kubectl-netdrop` as a subprocess, as kubectl runs a plugin,
with a kubeconfig of their own. Drops are made before the command runs and
while it runs: UDP to a closed port of each selected pod (the kernel counts
UdpNoPorts in the pod's namespace) and 1500-byte DF packets from each
selected pod to the other node's, dropped by the sending node's ip_forward()
on the 1450-byte overlay (FragFails in that node's namespace; path-breaking:
the mtu category, so an Event on the sending pod). What the plugin writes,
node by node and merged, is what the kernel counted; the pods' Events, read as
`kubectl describe pod` reads them, carry the kernel's count too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes
import pytest

import tracer
from tracer.kubectl.wiring import GRACE_SECONDS
from tracer.lab import api as labapi
from tracer.lab.node import SimNode

from ...timing import allowed
from ..agent.test_serve_prometheus import Serving
from ..helpers import Agent, LabelledPod, labelled_pods, nstat
from ..prometheus import free_port


NS = "e2e"
GROUP, VERSION = "netdrop.io", "v1alpha1"
CAPTURER = "system:serviceaccount:oncall:e2e-responder"
READER = "system:serviceaccount:kube-system:e2e-event-reader"
_installed = Path(sys.executable).with_name("kubectl-netdrop")
# What `kubectl netdrop ...` executes: the plugin from the package (it imports tracer from $PYTHONPATH first,
# so a worktree's run tests the worktree's code), else the module.
PLUGIN = [str(_installed)] if _installed.exists() else [sys.executable, "-m", "tracer.kubectl.cli"]
CREATED = re.compile(r"kubectl netdrop: capture (?P<ns>[a-z0-9-]+)/(?P<name>[a-z0-9.-]+) created")
NODE1, NODE2 = "sim-node1", "sim-node2"


@dataclass
class Cluster:
    node: SimNode
    pods: dict[str, LabelledPod]        # a: app=web on node1, b: app=web on node2, c: app=db on node1
    agents: dict[str, Agent]            # by Kubernetes node name
    stores: dict[str, Path]             # each agent's --capture-dir
    env: dict[str, str]                 # the responder's environment: $KUBECONFIG, $HOME
    capturer: kubernetes.client.CustomObjectsApi
    reader: kubernetes.client.CoreV1Api
    runs: list[subprocess.Popen[str]] = field(default_factory=list)

    def start_plugin(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([*PLUGIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env)
        self.runs.append(proc)
        return proc

    def plugin(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([*PLUGIN, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        assert "Traceback" not in res.stderr, res.stderr
        return res

    def reports(self, name: str) -> dict[str, dict]:
        got = self.capturer.list_namespaced_custom_object(GROUP, VERSION, NS, "netdropcapturereports",
                                                          label_selector=f"netdrop.io/capture={name}")
        return {r["report"]["node"]: r for r in got["items"]}

    def agents_said(self) -> str:
        return "\n".join(f"--- {n}:\n{a.stderr_now()}" for n, a in self.agents.items())


def _kubeconfig(node: SimNode, path: Path, user: str) -> Path:
    assert node.api is not None
    return labapi.write_kubeconfig(path, node.api.url, node.api.add_user(user))


@pytest.fixture
def cluster(node: SimNode, tmp_path: Path) -> Iterator[Cluster]:
    assert node.api is not None and node.kubeconfig is not None
    tag = secrets.token_hex(2)      # pods of this test only: Events of earlier tests' pods are not theirs
    specs = [(f"web-7c5d9f6b8-{tag}a", NS, 1, 200, {"app": "web", "zone": "a"}),
             (f"web-7c5d9f6b8-{tag}b", NS, 2, 200, {"app": "web", "zone": "b"}),
             (f"db-5b8c7d6f9-{tag}c", NS, 1, 201, {"app": "db"})]
    node.api.bind_cluster_role(CAPTURER, "netdrop-capturer", NS)
    node.api.grant(READER, "list", "events")
    serving = Serving(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    capturer_config = _kubeconfig(node, tmp_path / "responder.kubeconfig", CAPTURER)
    reader_config = _kubeconfig(node, tmp_path / "reader.kubeconfig", READER)
    agents: dict[str, Agent] = {}
    with labelled_pods(node, specs) as made:
        try:
            stores = {}
            for name, netns in ((NODE1, node.node1), (NODE2, node.node2)):
                port = free_port()
                stores[name] = tmp_path / "store" / name
                agents[name] = Agent("serve", "--listen", f"127.0.0.1:{port}", "--advertise", f"127.0.0.1:{port}",
                                     "--kubeconfig", str(node.kubeconfig), "--node-netns", netns,
                                     *serving.args(), "--capture-dir", str(stores[name]), "--events-interval", "2")
            for agent in agents.values():
                agent.wait_ready()
            c = Cluster(node, dict(zip("abc", made, strict=True)), agents, stores,
                        {"PATH": "/usr/bin:/bin", "HOME": str(home), "KUBECONFIG": str(capturer_config),
                         **({"PYTHONPATH": p} if (p := os.environ.get("PYTHONPATH")) else {})},
                        kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(
                            str(capturer_config))),
                        kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(reader_config))))
            yield c
            for proc in c.runs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        finally:
            for agent in agents.values():
                agent.kill()
            node.api.revoke(READER, "list", "events")


# -- the drops, and what the kernel counted of them --

def closed_port(c: Cluster, pod: LabelledPod, n: int) -> None:
    """n UDP packets from the lab's client to a port nobody listens on: UdpNoPorts in the pod's namespace."""
    assert c.node.traffic(c.node.client, "udp", "--dst", pod.ipv4, "--port", "9999", "--count", str(n),
                          "--size", "100") == n


def too_big(c: Cluster, src: LabelledPod, dst: LabelledPod, n: int) -> None:
    """n 1500-byte DF packets from src to dst on the other node: src's node cannot forward them
    over its 1450-byte overlay (ip_forward(): FragFails in the node's namespace)."""
    assert c.node.traffic(src.netns, "udp", "--dst", dst.ipv4, "--port", "5000", "--size", "1472", "--df",
                          "--count", str(n)) == n


def kernel(c: Cluster) -> dict[str, int]:
    """The kernel's own counters of the pods' drops: per pod its UdpNoPorts, per node its FragFails."""
    return {"a": nstat(c.pods["a"].netns, "UdpNoPorts"), "b": nstat(c.pods["b"].netns, "UdpNoPorts"),
            "c": nstat(c.pods["c"].netns, "UdpNoPorts"),
            NODE1: nstat(c.node.node1, "IpFragFails"), NODE2: nstat(c.node.node2, "IpFragFails")}


def counted(summary: dict) -> dict[tuple[str, str], int]:
    """A summary's exact counts by (pod name, category) of the pods of NS, benign drops left out:
    the pods' IPv6 multicast nobody joined (their neighbours' router solicitations, which Linux
    repeats with a back-off) is dropped in ip6_mc_input() and counted by no SNMP counter to
    compare with; summaries keep it apart (totals.benign_drops)."""
    out: dict[tuple[str, str], int] = {}
    for g in summary["groups"]:
        pod = g.get("pod") or {}
        if pod.get("namespace") == NS and not g.get("benign"):
            key = (pod["name"], g["category"])
            out[key] = out.get(key, 0) + g["count"]
    return out


def created(proc: subprocess.Popen[str], lines: list[str]) -> tuple[str, str]:
    """(namespace, name) of the capture once the plugin says it created it; its stderr read on in a thread."""
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if m := CREATED.match(line):
            threading.Thread(target=lines.extend, args=(proc.stderr,), daemon=True).start()
            return m["ns"], m["name"]
    raise AssertionError(f"the plugin created no capture: {''.join(lines)}")


def wait_for(what, seconds: float, step: float = 0.5):
    deadline = time.monotonic() + allowed(seconds)
    got = what()
    while not got and time.monotonic() < deadline:
        time.sleep(step)
        got = what()
    return got


def drop_events(c: Cluster, pod: LabelledPod) -> list[dict]:
    """The pod's drop Events, listed as `kubectl describe pod` lists a pod's Events (its fieldSelector)."""
    got = c.reader.list_namespaced_event(
        NS, field_selector=f"involvedObject.name={pod.name},involvedObject.namespace={NS}")
    return [e.to_dict() for e in got.items if e.reason == "PacketsDropped"]


def test_capture_by_label_writes_each_nodes_files_and_the_merge_with_the_kernels_counts(cluster, tmp_path):
    c = cluster
    a, b, other = c.pods["a"], c.pods["b"], c.pods["c"]
    # The plugin runs this checkout's code (conftest.py's PYTHONPATH).
    here = subprocess.run([sys.executable, "-c", "import tracer; print(tracer.__file__)"], env=c.env,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert here == tracer.__file__
    out = tmp_path / "out"
    t0 = time.monotonic()
    before = kernel(c)
    # Before the command runs: the minutes before anyone noticed.
    closed_port(c, a, 17)
    closed_port(c, b, 9)
    closed_port(c, other, 5)        # not selected: counted by the kernel, in no report
    too_big(c, a, b, 40)
    too_big(c, b, a, 30)
    time.sleep(2)           # well before the capture's creation: only `since` brings them in
    err: list[str] = []
    proc = c.start_plugin("capture", "-l", "app=web", "-n", NS, "--duration", "30s", "--since", "2m",
                          "--output", str(out))
    ns, name = created(proc, err)
    assert ns == NS
    # While it runs.
    closed_port(c, a, 8)
    closed_port(c, b, 5)
    too_big(c, a, b, 20)
    too_big(c, b, a, 10)
    after = kernel(c)
    stdout, _ = proc.communicate(timeout=allowed(30 + GRACE_SECONDS + 10))
    took = time.monotonic() - t0
    stderr = "".join(err)
    assert proc.returncode == 0, (stderr, c.agents_said())
    assert "Traceback" not in stderr
    k = {key: after[key] - before[key] for key in before}
    assert (k["a"], k["b"], k["c"]) == (25, 14, 5), k
    assert (k[NODE1], k[NODE2]) == (60, 40), k      # each DF packet dropped once, by its sender's node
    want = {NODE1: {(a.name, "no-socket"): k["a"], (a.name, "mtu"): k[NODE1]},
            NODE2: {(b.name, "no-socket"): k["b"], (b.name, "mtu"): k[NODE2]}}

    # DIR/<node>/: each node's files; the counts per node are the kernel's, those from before included.
    for n in (NODE1, NODE2):
        assert (out / n / "events.jsonl").is_file() and (out / n / "summary.json").is_file(), list(out.rglob("*"))
        summary = json.loads((out / n / "summary.json").read_text())
        assert counted(summary) == want[n], (n, summary["groups"])
        assert summary["node"]["kubernetes_node"] == n
    assert sorted(p.name for p in out.iterdir()) == [NODE1, NODE2, "summary.json"]
    # DIR/summary.json: the merge; its totals the sum of the nodes', the kernel's.
    merged = json.loads((out / "summary.json").read_text())
    assert [p["node"]["kubernetes_node"] for p in merged["nodes"]] == [NODE1, NODE2]
    assert counted(merged) == {**want[NODE1], **want[NODE2]}
    totals = merged["totals"]
    assert totals["drops"] == sum(p["totals"]["drops"] for p in merged["nodes"])
    assert totals["drops"] - totals["benign_drops"] == sum(k[key] for key in ("a", "b", NODE1, NODE2)), \
        merged["groups"]
    assert {c: n for c, n in merged["by_category"].items() if c != "other"} == \
        {"mtu": k[NODE1] + k[NODE2], "no-socket": k["a"] + k["b"]}
    # The printed summary is the merged one.
    assert f"{merged['totals']['drops']}" in stdout.replace(",", "")
    # Only nodes that host a selected pod took part (sim-node3 hosts none, and runs no agent).
    reports = c.reports(name)
    assert sorted(reports) == [NODE1, NODE2]
    for n, r in reports.items():      # the report's groups: the same exact counts as the node's summary.json
        summary = json.loads((out / n / "summary.json").read_text())
        assert r["report"]["total"]["packets"] == summary["totals"]["drops"], (r["report"], summary["totals"])
        assert {(g["pod"], g["category"]): g["packets"] for g in r["report"]["groups"]
                if g["category"] != "other"} == {(f"{NS}/{p}", cat): m for (p, cat), m in want[n].items()}
    assert all(r["report"]["state"] == "Done" for r in reports.values())
    print(f"\ncapture: kernel {k}; {took:.1f} s from the first drop to the plugin's exit")

    # `describe`-style reads: each sending pod has one PacketsDropped Warning with the kernel's count.
    for pod, dst, n in ((a, b, NODE1), (b, a, NODE2)):
        got = wait_for(lambda pod=pod, n=n: [e for e in drop_events(c, pod) if e["count"] == k[n]], 15)
        events = drop_events(c, pod)
        assert [e["count"] for e in events] == [k[n]], ([e["message"] for e in events], c.agents_said())
        ev = events[0]
        assert ev["type"] == "Warning" and ev["source"] == {"component": "netdrop", "host": n}
        assert re.fullmatch(rf"{k[n]} packets to {re.escape(dst.ipv4)}:5000 dropped: .+ \({n}\)", ev["message"]), \
            ev["message"]
        assert got
    assert drop_events(c, other) == []      # no-socket is not path-breaking

    # get, list, delete against what the agents wrote.
    res = c.plugin("get", name, "-n", NS)
    assert res.returncode == 0, res.stderr
    table = res.stdout.split("\n\n")[0]     # the node table; each node's groups follow it
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.startswith("sim-node")}
    for n in (NODE1, NODE2):
        assert rows[n][1:3] == ["Done", f"{reports[n]['report']['total']['packets']:,}"], res.stdout
    res = c.plugin("list", "-n", NS)
    assert res.returncode == 0, res.stderr
    (line,) = [ln.split() for ln in res.stdout.splitlines() if ln.startswith(name)]
    assert line[2:5] == ["2", "2", "0"], res.stdout      # NODES DONE FAILED
    uid = c.capturer.get_namespaced_custom_object(GROUP, VERSION, NS, "netdropcaptures", name)["metadata"]["uid"]
    dirs = {n: c.stores[n] / NS / f"{name}-{uid[:8]}" for n in (NODE1, NODE2)}     # capturefiles.py's names
    assert all(d.is_dir() for d in dirs.values()), list(c.stores[NODE1].rglob("*"))
    res = c.plugin("delete", name, "-n", NS)
    assert (res.returncode, res.stdout) == (0, f"netdropcapture.netdrop.io/{name} deleted\n"), res.stderr
    assert wait_for(lambda: not c.reports(name), 10), c.reports(name)      # the garbage collector
    assert wait_for(lambda: not any(d.exists() for d in dirs.values()), 10), (dirs, c.agents_said())
    res = c.plugin("get", name, "-n", NS)
    assert res.returncode == 2 and f"no capture {name} in namespace {NS}" in res.stderr


def test_a_node_without_selected_pods_writes_nothing(cluster, tmp_path):
    c = cluster
    a = c.pods["a"]
    out = tmp_path / "out"
    before = kernel(c)
    closed_port(c, a, 6)
    closed_port(c, c.pods["b"], 4)
    res = c.plugin("capture", "-l", "app=web,zone=a", "-n", NS, "--duration", "3s", "--since", "1m",
                   "--output", str(out), "--name", "zone-a", timeout=allowed(3 + GRACE_SECONDS + 10))
    k = {key: v - before[key] for key, v in kernel(c).items()}
    assert res.returncode == 0, (res.stderr, c.agents_said())
    assert "1 node expected" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [NODE1, "summary.json"]
    merged = json.loads((out / "summary.json").read_text())
    assert merged == json.loads((out / NODE1 / "summary.json").read_text())     # one node: its own
    assert counted(merged) == {(a.name, "no-socket"): k["a"]} and k["a"] == 6
    time.sleep(2)       # node2's agent had the capture's whole life to (wrongly) take part
    assert sorted(c.reports("zone-a")) == [NODE1]
    assert not list(c.stores[NODE2].glob(f"{NS}/*"))


def test_a_node_whose_agent_is_down_is_named_and_the_capture_completes(cluster, tmp_path):
    c = cluster
    a, b = c.pods["a"], c.pods["b"]
    c.agents[NODE2].stop()
    out = tmp_path / "out"
    before = kernel(c)
    closed_port(c, a, 7)
    closed_port(c, b, 3)
    t0 = time.monotonic()
    res = c.plugin("capture", "-l", "app=web", "-n", NS, "--duration", "3s", "--since", "1m", "--output", str(out),
                   timeout=allowed(3 + GRACE_SECONDS + 10))
    took = time.monotonic() - t0
    k = {key: v - before[key] for key, v in kernel(c).items()}
    # Exit 1: some nodes did not report (the others' summary written: cli.py's exit statuses).
    assert res.returncode == 1, (res.stderr, c.agents_said())
    assert (f"kubectl netdrop: no report from {NODE2}: is its netdrop agent running? "
            f"kubectl -n netdrop get pods -o wide --field-selector spec.nodeName={NODE2}") in res.stderr.splitlines()
    assert re.search(rf"^{NODE2}\s+no report", res.stderr, re.M), res.stderr
    assert "the merged summary of 1 node; 1 failed" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [NODE1, "summary.json"]
    assert (out / NODE1 / "events.jsonl").is_file()
    merged = json.loads((out / "summary.json").read_text())
    assert counted(merged) == {(a.name, "no-socket"): k["a"]} and k["a"] == 7
    # It waited the capture's duration and the grace, no longer.
    assert 3 + GRACE_SECONDS <= took < allowed(3 + GRACE_SECONDS + 5), took
