"""The plugin's view of a capture's reports: listed once, then every write seen through a watch."""

import time
from pathlib import Path

import pytest

from tracer.captures.api import CaptureClient, ReportFollower
from tracer.captures.report import Report
from tracer.captures.spec import parse_capture
from tracer.lab import api as labapi
from tracer.pods.kube import KubeClient



@pytest.fixture
def lab(tmp_path: Path):
    server = labapi.KubeAPI()
    server.start()
    # One kubeconfig for both sides here: the agent's user may also do what a responder does.
    server.bind_cluster_role(labapi.AGENT_USER, "netdrop-capturer")
    yield server, str(server.write_kubeconfig(tmp_path / "kubeconfig"))
    server.stop()


def until(predicate, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def report_lists(server: labapi.KubeAPI) -> int:
    """GETs of the report collection that are not watches (the lab logs GETs by path alone)."""
    return sum(r.startswith("/") and r.split("?")[0].endswith("/netdropcapturereports") and "watch=" not in r
               for r in server.requests)


def test_each_report_written_reaches_the_follower_without_a_list_per_look(lab):
    server, kubeconfig = lab
    kube = KubeClient(kubeconfig)
    client = CaptureClient(kube)
    made = kube.call_json(client.custom.create_namespaced_custom_object, "netdrop.io", "v1alpha1", "shop",
                          "netdropcaptures", {"apiVersion": "netdrop.io/v1alpha1", "kind": "NetdropCapture",
                                              "metadata": {"name": "web", "namespace": "shop"},
                                              "spec": {"pods": {"selector": "app=web"}, "duration": "1m"}})
    cap = parse_capture(made)
    client.write_report(cap, Report("web", cap.uid, "node-1", "Recording", packets=1))
    follower = ReportFollower(kube, client.custom, "shop", "web")
    assert follower.list()
    follower.start()
    try:
        assert set(follower.reports()[0]) == {"node-1"}
        lists = report_lists(server)
        client.write_report(cap, Report("web", cap.uid, "node-2", "Recording", packets=2))
        client.write_report(cap, Report("web", cap.uid, "node-1", "Done", packets=5))
        assert until(lambda: {n: (r.state, r.packets) for n, r in follower.reports()[0].items()}
                     == {"node-1": ("Done", 5), "node-2": ("Recording", 2)})
        for _ in range(20):
            follower.reports()
        # another capture's report is not followed; no list was needed to see the writes
        client.write_report(parse_capture({**made, "metadata": {**made["metadata"], "name": "other"}}),
                            Report("other", cap.uid, "node-3", "Done"))
        time.sleep(0.3)
        assert set(follower.reports()[0]) == {"node-1", "node-2"} and follower.reports()[1] is None
        assert report_lists(server) == lists == 1
    finally:
        follower.close()
        client.close()
