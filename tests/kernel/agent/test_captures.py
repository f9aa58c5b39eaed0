"""A NetdropCapture carried out by the agents of the simulated cluster: one
`netdrop serve` per node (--node-netns) against the lab's API server, the
capture created through the real kubernetes client as a responder would.
Drops made in the selected pod before the capture exists (its `since`) and
while it runs are in the node's Done report exactly as the kernel counted
them (UdpNoPorts in the pod's namespace); the node without a selected pod
writes nothing; the files are in the node's capture directory, their
summary.json saying what the report says.
"""

import json
import signal
import time

import kubernetes
import pytest

from tracer.lab import api as labapi

from ...timing import allowed
from ..conftest import Netdrop
from ..prometheus import free_port
from .test_serve_prometheus import snmp

GROUP, VERSION = "netdrop.io", "v1alpha1"
RESPONDER = "system:serviceaccount:oncall:responder"


class Agent(Netdrop):
    READY = "netdrop: serving"


def responder_api(node, tmp_path) -> kubernetes.client.CustomObjectsApi:
    token = node.api.add_user(RESPONDER)
    node.api.bind_cluster_role(RESPONDER, "netdrop-capturer")
    path = tmp_path / "responder.kubeconfig"
    labapi.write_kubeconfig(path, node.api.url, token)
    return kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(str(path)))


@pytest.fixture
def agents(node, tmp_path):
    started = {}
    try:
        for netns in (node.node1, node.node2):
            port = free_port()
            started[netns] = Agent("serve", "--listen", f"127.0.0.1:{port}", "--kubeconfig", str(node.kubeconfig),
                                   "--node-netns", netns, "--capture-dir", str(tmp_path / "store" / netns))
        for agent in started.values():
            agent.wait_ready()
        yield started
    finally:
        for agent in started.values():
            agent.kill()


def reports(api, namespace: str, capture: str) -> dict[str, dict]:
    got = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "netdropcapturereports",
                                            label_selector=f"netdrop.io/capture={capture}")
    return {r["report"]["node"]: r["report"] for r in got["items"]}


def test_a_pod_capture_reports_the_kernels_count_since_before_it_was_created(node, agents, tmp_path):
    api = responder_api(node, tmp_path)
    db = node.pods["db"]
    time.sleep(6)       # the agents' flight recorders have a counter edge (every 5 s) before the first drop
    before = snmp(db.netns, "Udp", "NoPorts")
    node.traffic(node.client, "udp", "--dst", db.ipv4, "--port", "9999", "--count", "17", "--size", "100")
    time.sleep(1)
    cap = api.create_namespaced_custom_object(GROUP, VERSION, "default", "netdropcaptures", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "NetdropCapture",
        "metadata": {"name": "db-drops", "namespace": "default"},
        "spec": {"pods": {"names": [db.name]}, "duration": "10s", "since": "1m"}})
    time.sleep(2)
    node.traffic(node.client, "udp", "--dst", db.ipv4, "--port", "9999", "--count", "9", "--size", "100")
    kernel = snmp(db.netns, "Udp", "NoPorts") - before
    assert kernel == 26

    node1 = "sim-node1"
    deadline = time.monotonic() + allowed(30.0)
    got: dict = {}
    while time.monotonic() < deadline:
        got = reports(api, "default", "db-drops")
        if got.get(node1, {}).get("state") in ("Done", "Failed"):
            break
        time.sleep(0.5)
    report = got.get(node1)
    assert report is not None, (got, agents[node.node1].stderr_now())
    assert report["state"] == "Done", (report, agents[node.node1].stderr_now())
    # The kernel's UdpNoPorts are the pod's NO_SOCKET drops; its other drops (IPv6 multicast nobody
    # joined, benign) are in the total too.
    no_socket = [g for g in report["groups"] if g["reason"] == "NO_SOCKET"]
    assert [(g["pod"], g["packets"]) for g in no_socket] == [(f"default/{db.name}", kernel)], report["groups"]
    assert report["total"]["packets"] == sum(g["packets"] for g in report["groups"]), report
    assert report["capture"]["uid"] == cap["metadata"]["uid"]
    assert report["message"].startswith("since cut to"), report      # the agent is younger than a minute
    assert report["pods"] == [{"namespace": "default", "name": db.name, "packets": report["total"]["packets"]}]
    assert report["endpoint"].startswith("http://127.0.0.1:")
    # node2 hosts no selected pod: no report of its own, ever.
    assert set(got) == {node1}
    # The files, where the node keeps them; summary.json says what the report says.
    (summary_path,) = (tmp_path / "store" / node.node1).glob("default/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["totals"]["drops"] == report["total"]["packets"]
    assert {f["name"] for f in report["files"]} >= {"summary.json", "events.jsonl"}
    assert not list((tmp_path / "store" / node.node2).glob("default/*"))


def test_a_stop_during_a_capture_ends_serve_within_2s_with_its_report_failed(node, agents, tmp_path):
    api = responder_api(node, tmp_path)
    db = node.pods["db"]
    api.create_namespaced_custom_object(GROUP, VERSION, "default", "netdropcaptures", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "NetdropCapture",
        "metadata": {"name": "long", "namespace": "default"},
        "spec": {"pods": {"names": [db.name]}, "duration": "10m"}})
    deadline = time.monotonic() + allowed(15.0)
    while time.monotonic() < deadline and "sim-node1" not in reports(api, "default", "long"):
        time.sleep(0.3)
    assert reports(api, "default", "long")["sim-node1"]["state"] == "Recording"
    agent = agents[node.node1]
    t0 = time.monotonic()
    agent.stop(settle=0, sig=signal.SIGTERM)
    took = time.monotonic() - t0
    assert took < allowed(2.0), f"SIGTERM took {took:.1f} s"
    assert agent.proc.returncode == 0 and "Traceback" not in agent.stderr, agent.stderr
    final = reports(api, "default", "long")["sim-node1"]
    assert (final["state"], final["message"]) == ("Failed", "agent stopped")
