"""Events on pods from `netdrop serve` (docs/captures.md, "Events on pods"): the agent of the
simulated node1 (--node-netns) against the lab's API server, pods dropping for real. The Events
are read as `kubectl describe pod` lists them (a fieldSelector on involvedObject.name), through
the real kubernetes client, by a user allowed to list events; the agent writes them with its own
service account, which the lab authorizes by deploy/rbac.yaml."""

import re
import time

import pytest

from tracer.lab import api as labapi
from tracer.lab.cases import CASES
from tracer.pods.kube import KubeClient

from ...timing import allowed
from ..helpers import Agent, nstat
from ..prometheus import free_port

READER = "system:serviceaccount:kube-system:event-exporter"


@pytest.fixture
def reader(node, tmp_path):
    """A client of a user who may list events (an event exporter, kubectl describe)."""
    token = node.api.add_user(READER, ("system:serviceaccounts",))
    node.api.grant(READER, "list", "events")
    config = labapi.write_kubeconfig(tmp_path / "reader-kubeconfig", node.api.url, token)
    client = KubeClient(str(config))
    yield client
    node.api.revoke(READER, "list", "events")
    client.close()


def events_of(reader: KubeClient, pod, but: frozenset[str] = frozenset()) -> list[dict]:
    """The pod's drop Events, as kubectl describe pod lists them; but: names of Events of earlier
    agents of the session's node (every serve writes them unless told not to)."""
    got = reader.call_json(reader.v1.list_namespaced_event, pod.namespace,
                           field_selector=f"involvedObject.name={pod.name}")
    return [e for e in got["items"] if e["reason"] == "PacketsDropped" and e["metadata"]["name"] not in but]


def names(events: list[dict]) -> frozenset[str]:
    return frozenset(e["metadata"]["name"] for e in events)


def wait_events(reader: KubeClient, pod, but: frozenset[str], done, seconds: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + allowed(seconds)
    got = events_of(reader, pod, but)
    while not done(got) and time.monotonic() < deadline:
        time.sleep(0.5)
        got = events_of(reader, pod, but)
    return got


@pytest.fixture
def agent(node):
    started = []

    def start(*args: str) -> Agent:
        a = Agent("serve", "--listen", f"127.0.0.1:{free_port()}", "--kubeconfig", str(node.kubeconfig),
                  "--node-netns", node.node1, *args)
        started.append(a)
        return a.wait_ready()

    yield start
    for a in started:
        a.kill()


def test_a_pods_path_breaking_drops_are_one_event_with_the_kernels_count(node, reader, agent):
    """web's 1500-byte DF packets to api die on node1's 1450-byte overlay: one Warning on web,
    PacketsDropped, whose count is what the kernel counted (FragFails), updated as more die;
    db's drops to a closed port (no-socket: the endpoint said no) are no Event."""
    web, api, db = node.pods["web"], node.pods["api"], node.pods["db"]
    earlier = names(events_of(reader, web)) | names(events_of(reader, db))
    a = agent("--events-interval", "2")
    before = nstat(node.node1, "IpFragFails")
    # Enough packets that the kernel samples at least one of them whatever serve's event budget.
    CASES["mtu"].play(node, 130)
    CASES["udp-closed"].play(node, 5)
    frag = nstat(node.node1, "IpFragFails") - before
    assert frag >= 130

    def counted(n):
        return lambda got: len(got) == 1 and got[0]["count"] == n

    got = wait_events(reader, web, earlier, counted(frag))
    assert [e["count"] for e in got] == [frag], [e["message"] for e in got]
    [ev] = got
    assert (ev["type"], ev["reason"]) == ("Warning", "PacketsDropped")
    assert ev["involvedObject"]["kind"] == "Pod" and ev["involvedObject"]["name"] == web.name
    assert ev["involvedObject"]["uid"] == node.api.pods[(web.namespace, web.name)]["metadata"]["uid"]
    assert ev["source"] == {"component": "netdrop", "host": "sim-node1"}
    assert (ev["reportingComponent"], ev["reportingInstance"]) == ("netdrop.io/agent", "sim-node1")
    assert re.fullmatch(rf"{frag} packets to {re.escape(api.ipv4)}:5000 dropped: .+ \(sim-node1\)", ev["message"]), \
        ev["message"]
    assert ev["metadata"]["name"].startswith(f"{web.name}.")

    # More of the same: the same Event, its count patched to the kernel's new count.
    CASES["mtu"].play(node, 4)
    frag = nstat(node.node1, "IpFragFails") - before
    got = wait_events(reader, web, earlier, counted(frag))
    assert [(e["metadata"]["name"], e["count"]) for e in got] == [(ev["metadata"]["name"], frag)]
    assert got[0]["firstTimestamp"] == ev["firstTimestamp"]
    assert events_of(reader, db, earlier) == []

    a.stop()
    assert "Traceback" not in a.stderr and "Events on pods: not written" not in a.stderr, a.stderr
    # Created once, then patched (the lab logs a GET as its path alone).
    methods = {r.split(" ", 1)[0] for r in node.api.requests if "/events" in r and " " in r}
    assert methods == {"POST", "PATCH"}


def test_no_pod_events_writes_none(node, reader, agent):
    web = node.pods["web"]
    earlier = names(events_of(reader, web))
    a = agent("--events-interval", "1", "--no-pod-events")
    CASES["mtu"].play(node, 3)
    time.sleep(allowed(4.0))       # the Events would have been written within a check (1 s) and a call
    assert events_of(reader, web, earlier) == []
    a.stop()
