"""agent.podevents: which Events on pods, from counter keys a real Series folds, with the clock passed in."""

import re
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer.agent import podevents
from tracer.agent.podevents import Outcome, PodEvents, event_name, pod_id, pod_uid
from tracer.agent.podeventswriter import EventWriter, PodEventsAgent
from tracer.kernel.decode import Drop
from tracer.lab import api as labapi
from tracer.lab.api import write_kubeconfig
from tracer.lab.hostile import Hostile
from tracer.pods.kube import KubeClient
from tracer.pods.attribute import DIRECTIONS, NO_POD, Attribution, PodRef
from tracer.sinks.metrics import Series

from ...timing import allowed
from ..helpers import wait_for

REASONS = {1: "NETFILTER_DROP", 2: "NO_SOCKET", 3: "PKT_TOO_BIG", 4: "IP_OUTNOROUTES"}
LOCATIONS = {0x10: "nf_hook_slow", 0x20: "__udp4_lib_rcv", 0x30: "ip_forward", 0x40: "ip_route_output_key_hash"}
NETFILTER, NO_SOCKET, MTU, NO_ROUTE = (1, 0x10), (2, 0x20), (3, 0x30), (4, 0x40)
IN_POD, FROM_POD, TO_POD = (next(k for k, v in DIRECTIONS.items() if v == d) for d in ("in-pod", "from-pod", "to-pod"))
NODE = "node-1"
T0 = datetime(2026, 12, 7, 11, 0, 0, tzinfo=UTC)
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class Names:
    def reason_name(self, code):
        return REASONS.get(code)

    def location_name(self, addr):
        return LOCATIONS.get(addr)


PODS = {1: PodRef("shop", "web-0", "uid-web-0", NODE), 2: PodRef("shop", "api-1", "uid-api-1", NODE),
        3: PodRef("shop", "web-0", "uid-web-0-again", NODE),     # web-0 recreated: another pod
        4: PodRef("kube-system", "exporter", "uid-exp", NODE, host_network=True),
        5: PodRef(None, None, None, NODE, known=False, sandbox="cni-1234"),
        6: PodRef("shop", "Not_A_Pod_Name", "uid-6", NODE)}
for i in range(10, 200):
    PODS[i] = PodRef("load", f"pod-{i}", f"uid-{i}", NODE)


def attribute(tag):
    ref = PODS.get(tag >> 2)
    return Attribution(ref, DIRECTIONS.get(tag & 3)) if ref else NO_POD


def tag(pid, direction=IN_POD):
    return pid << 2 | direction


def key(what, pod=0, netns=4026532000):
    reason, loc = what
    return (netns, reason, loc, pod, 0)


class Agent:
    """PodEvents fed as serve feeds it: the counters folded by a Series of its own, the clock in seconds."""

    def __init__(self, **kw):
        self.series = Series(Names(), attribute, pod_uid)
        self.events = PodEvents(NODE, now=0.0, **kw)
        self.counts = {}

    def drops(self, k, n):
        self.counts[k] = self.counts.get(k, 0) + n

    def at(self, seconds):
        values = self.series.update(dict(self.counts), None, seconds)
        return self.events.update(values, seconds, T0 + timedelta(seconds=seconds))

    def settle(self, writes, outcome=Outcome.WRITTEN, seconds=0.0):
        for w in writes:
            self.events.settled(w, outcome, seconds)

    def sample(self, k, **fields):
        netns, reason, loc, pod, facts = k
        d = drop(reason=REASONS.get(reason), reason_raw=reason, location=LOCATIONS.get(loc), location_raw=loc,
                 netns=netns, pod_raw=pod, facts=facts, **fields)
        self.events.observe(self.series.labels_of(k), d)


def drop(**fields):
    base = dict(time=T0, reason="NETFILTER_DROP", reason_raw=1, location="nf_hook_slow", location_raw=0x10,
                netns=4026532000, ifindex=3, ifname="eth0", dev_mtu=1500, out_ifindex=None, out_ifname=None,
                mtu=None, family=4, proto="udp", src="10.244.1.5", dst="10.96.0.10", sport=40000, dport=53,
                len=80, df=False, fragment=False, icmp_sent=None)
    base.update(fields)
    return Drop(**base)


def test_only_path_breaking_drops_of_a_pod_make_events():
    """A pod's conntrack/netfilter, MTU and no-route drops are Events; its no-socket drops (an endpoint
    said no), the node's own drops and a sandbox the API never named are not."""
    a = Agent()
    a.drops(key(NETFILTER, tag(1)), 42)
    a.drops(key(MTU, tag(1, FROM_POD)), 3)
    a.drops(key(NO_ROUTE, tag(2, FROM_POD)), 5)
    a.drops(key(NO_SOCKET, tag(1)), 900)
    a.drops(key(NETFILTER), 70)                 # no pod: the node's
    a.drops(key(MTU, tag(5)), 8)                # a sandbox without its pod's name
    writes = a.at(0.0)
    got = {(w.pod.name, w.key[1], w.key[2]): w.count for w in writes}
    assert got == {("web-0", "netfilter", "NETFILTER_DROP"): 42, ("web-0", "mtu", "PKT_TOO_BIG"): 3,
                   ("api-1", "no-route", "IP_OUTNOROUTES"): 5}
    assert all(w.create for w in writes)
    assert {"mtu", "netfilter", "conntrack", "no-route", "neighbor", "overlay", "rp-filter"} <= podevents.PATH_BREAKING
    assert not podevents.PATH_BREAKING & {"no-socket", "tcp", "socket-buffer", "qdisc", "memory", "malformed", "other"}


def test_a_hostnetwork_pod_gets_only_the_drops_attributed_to_it():
    """The node's namespace is the hostNetwork pod's too, but only drops attributed to it (a port it
    alone declares) are its drops."""
    a = Agent()
    a.drops(key(NETFILTER, netns=4026531840), 500)
    a.drops(key(NETFILTER, tag(4, TO_POD), netns=4026531840), 7)
    assert [(w.pod.name, w.count) for w in a.at(0.0)] == [("exporter", 7)]


def test_a_series_sums_its_directions_and_a_recreated_pod_is_another_series():
    a = Agent()
    a.drops(key(NETFILTER, tag(1, IN_POD)), 10)
    a.drops(key(NETFILTER, tag(1, FROM_POD)), 5)
    a.drops(key(NETFILTER, tag(1, TO_POD)), 2)
    a.drops(key(NETFILTER, tag(3)), 4)          # web-0 again, a new uid
    writes = sorted(a.at(0.0), key=lambda w: w.pod.uid)
    assert [(w.pod.uid, w.count) for w in writes] == [("uid-web-0", 17), ("uid-web-0-again", 4)]
    assert len({w.name for w in writes}) == 2 and all(w.name.startswith("web-0.") for w in writes)


def test_the_count_is_patched_at_most_every_interval():
    a = Agent(interval=60.0)
    k = key(NETFILTER, tag(1))
    a.drops(k, 3)
    [first] = a.at(0.0)
    a.settle([first], seconds=0.0)
    a.drops(k, 4)
    assert a.at(5.0) == [] and a.at(59.0) == []         # grown, but written less than 60 s ago
    [again] = a.at(60.0)
    assert (again.create, again.name, again.count) == (False, first.name, 7)
    assert again.first == first.first == T0 and again.last == T0 + timedelta(seconds=5)
    a.settle([again], seconds=60.0)
    assert a.at(200.0) == []                            # no new drop: nothing to write
    a.drops(k, 1)
    [third] = a.at(205.0)
    assert third.patch() == {"count": 8, "lastTimestamp": "2026-12-07T11:03:25Z",
                             "message": "8 packets dropped: a firewall rule or chain policy dropped packets (node-1)"}


def test_one_write_per_series_in_flight():
    a = Agent(interval=10.0)
    k = key(NETFILTER, tag(1))
    a.drops(k, 1)
    [w] = a.at(0.0)
    a.drops(k, 1)
    assert a.at(30.0) == []                     # the create has not come back
    a.settle([w], seconds=31.0)
    assert a.at(40.0) == [] and [x.count for x in a.at(41.0)] == [2]


def test_the_node_writes_a_burst_of_25_then_one_every_5_seconds():
    """190 pods start dropping at once: 25 Events, then one every 5 s; new series before updates."""
    a = Agent(interval=60.0)
    for i in range(10, 200):
        a.drops(key(MTU, tag(i)), 1)
    first = a.at(0.0)
    assert len(first) == 25 and a.at(4.9) == []
    assert len(a.at(5.0)) == 1
    assert len(a.at(10.0)) == 1 and a.at(12.0) == []
    assert sum(len(a.at(s)) for s in range(15, 300, 5)) == (300 - 15) // 5     # one per 5 s, whatever is due
    assert a.events.refused > 0


def test_new_series_are_written_before_older_ones_are_updated():
    a = Agent(interval=1.0, burst=2, refill=5.0)
    a.drops(key(MTU, tag(10)), 1)
    a.drops(key(MTU, tag(11)), 1)
    a.settle(a.at(0.0), seconds=0.0)
    a.drops(key(MTU, tag(10)), 1)
    a.drops(key(MTU, tag(11)), 1)
    a.drops(key(MTU, tag(12)), 1)
    [w] = a.at(5.0)
    assert (w.pod.name, w.create) == ("pod-12", True)


def test_message_names_the_most_frequent_destination_and_what_happened():
    a = Agent()
    k = key(NETFILTER, tag(1, FROM_POD))
    a.drops(k, 42)
    for _ in range(3):
        a.sample(k, cause="ct-insert-failed")
    a.sample(k, cause="ct-insert-failed", dst="10.96.0.11")
    a.sample(key(NO_SOCKET, tag(1)), dst="10.0.0.99")  # another category: not this Event's destination
    [w] = a.at(0.0)
    assert w.message == "42 packets to 10.96.0.10:53 dropped: conntrack insert race, udp/53 (node-1)"


def test_message_without_sampled_drops_says_no_destination():
    a = Agent()
    a.drops(key(MTU, tag(2)), 1)
    [w] = a.at(0.0)
    assert w.message == "1 packet dropped: packets larger than the path MTU were dropped (node-1)"


def test_message_of_ipv6_and_of_an_mtu_drop():
    a = Agent()
    k = key(MTU, tag(2))
    a.drops(k, 9)
    a.sample(k, family=6, src="fd00::5", dst="fd00::a", dport=8443, proto="tcp", len=1500, mtu=1400,
             out_ifname="vxlan0", df=False)
    [w] = a.at(0.0)
    assert w.message == "9 packets to [fd00::a]:8443 dropped: MTU 1400 vxlan0, 1500-byte (node-1)"


def test_message_is_one_line_within_1_kib_whatever_the_node_names():
    a = Agent()
    k = key(NO_ROUTE, tag(2))
    a.drops(k, 2)
    a.sample(k, ifname="\x1b[31m" + "é" * 2000)
    [w] = a.at(0.0)
    assert len(w.message.encode()) <= 1024 and "\x1b" not in w.message and "\n" not in w.message
    assert w.message.startswith("2 packets to 10.96.0.10:53 dropped: no route to 10.96.0.10 on \\x1b[31m")


def test_the_event_is_what_kubectl_describe_pod_lists():
    a = Agent()
    a.drops(key(NETFILTER, tag(1)), 42)
    [w] = a.at(0.0)
    ev = w.event()
    assert ev["metadata"] == {"name": w.name, "namespace": "shop"}
    assert ev["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "web-0",
                                    "uid": "uid-web-0"}
    assert (ev["reason"], ev["type"], ev["count"]) == ("PacketsDropped", "Warning", 42)
    assert ev["source"] == {"component": "netdrop", "host": NODE}
    assert (ev["reportingComponent"], ev["reportingInstance"]) == ("netdrop.io/agent", NODE)
    assert ev["firstTimestamp"] == ev["lastTimestamp"] == "2026-12-07T11:00:00Z"
    assert re.fullmatch(r"web-0\.[0-9a-f]+", w.name)


def test_an_expired_event_is_created_again_with_the_series_count():
    a = Agent(interval=60.0)
    k = key(NETFILTER, tag(1))
    a.drops(k, 5)
    [w] = a.at(0.0)
    a.settle([w], seconds=0.0)
    a.drops(k, 5)
    [p] = a.at(60.0)
    a.settle([p], Outcome.GONE, seconds=60.0)
    [c] = a.at(65.0)
    assert (c.create, c.count, c.first) == (True, 10, T0) and c.name != w.name


def test_a_failed_write_keeps_the_counts_and_is_tried_again_later():
    a = Agent(interval=60.0)
    k = key(NETFILTER, tag(1))
    a.drops(k, 5)
    [w] = a.at(0.0)
    a.settle([w], Outcome.FAILED, seconds=1.0)
    a.drops(k, 2)
    assert a.at(5.0) == []
    [again] = a.at(11.0)
    assert (again.create, again.count) == (True, 7)
    a.settle([again], Outcome.FAILED, seconds=11.0)
    assert a.at(25.0) == [] and [x.count for x in a.at(31.0)] == [7]     # 10 s, then 20 s


def test_series_are_bounded_and_one_found_again_counts_from_then():
    a = Agent(max_series=3, burst=100)
    for i in range(10, 15):
        a.drops(key(MTU, tag(i)), 100)
    a.settle(a.at(0.0), seconds=0.0)
    assert len(a.events) == 3 and a.events.forgotten == 2
    assert a.at(100.0) == []                        # forgotten, not grown: not written again
    a.drops(key(MTU, tag(10)), 3)                   # forgotten first (least recently grown): drops again
    [w] = a.at(200.0)
    assert (w.pod.name, w.create, w.count) == ("pod-10", True, 3)
    assert len(a.events) == 3


def test_sampled_destinations_are_bounded():
    a = Agent(max_series=4)
    for i in range(10, 60):
        for _ in range(40):
            a.sample(key(MTU, tag(i)))
    assert len(a.events._recent) == 4 and all(len(r) == podevents.RECENT for r in a.events._recent.values())


def test_a_pod_whose_names_kubernetes_would_refuse_gets_no_event():
    a = Agent()
    a.drops(key(NETFILTER, tag(6)), 3)
    assert a.at(0.0) == []


def test_event_names_like_client_gos_within_253():
    assert event_name("web-0", 0x1878c3a5b2d04e00) == "web-0.1878c3a5b2d04e00"
    long = "a" * 240 + "-b" * 6
    name = event_name(long, 0x1878c3a5b2d04e00)
    assert len(name) <= 253 and DNS_SUBDOMAIN.fullmatch(name)


@given(st.text(max_size=300), st.text(max_size=300), st.text(max_size=200), st.integers(0, 2**64))
def test_any_pod_names_give_no_event_or_a_valid_one(namespace, name, uid, ns):
    who = pod_id(namespace, name, uid)
    if who is None:
        return
    assert len(who.namespace) <= 63 and len(who.name) <= 253 and len(who.uid) <= 128
    got = event_name(who.name, ns)
    assert len(got) <= 253 and DNS_SUBDOMAIN.fullmatch(got)


def test_a_write_settled_after_its_series_was_forgotten_is_ignored():
    a = Agent(max_series=1, burst=100)
    a.drops(key(MTU, tag(10)), 1)
    [w] = a.at(0.0)
    a.drops(key(MTU, tag(11)), 1)
    [x] = a.at(1.0)
    a.settle([w, x], seconds=2.0)                   # w's series was forgotten for x's: w changes nothing
    assert len(a.events) == 1
    a.drops(key(MTU, tag(11)), 1)
    [p] = a.at(62.0)
    assert (p.create, p.name, p.count) == (False, x.name, 2)


# ---------------------------------------------------------------- the writer, against API servers

def one_write(agent=None):
    a = agent or Agent()
    a.drops(key(NETFILTER, tag(1)), 42)
    [w] = a.at(0.0)
    return w


def outcomes(writer, n=1, seconds=10.0):
    got = []
    wait_for(lambda: got.extend(writer.results()) or len(got) >= n, seconds)
    return got


@pytest.fixture
def hostile(tmp_path):
    servers = []

    def start(mode):
        server = Hostile(mode)
        servers.append(server)
        server.start()
        return server.write_kubeconfig(tmp_path / f"kubeconfig-{mode}")

    yield start
    for server in servers:
        server.stop()


def test_a_failing_api_keeps_the_write_for_later_and_says_so_once(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}", "token")
    said = []
    writer = EventWriter(lambda: KubeClient(str(config)), said.append)
    try:
        for _ in range(3):
            assert writer.submit(one_write())
        got = outcomes(writer, 3)
    finally:
        writer.close()
    assert [o for _, o in got] == [Outcome.FAILED] * 3 and writer.failed == 3
    assert said == [f"Events on pods: not written, tried again later: cannot reach the API server at "
                    f"http://127.0.0.1:{port}: NewConnectionError"]


def test_close_cuts_off_the_call_in_flight(hostile):
    config = hostile("silent")
    writer = EventWriter(lambda: KubeClient(str(config)))
    writer.submit(one_write())
    time.sleep(0.3)                 # the call is waiting for an answer that never comes
    started = time.monotonic()
    writer.close()
    assert time.monotonic() - started < allowed(1.0)
    assert not writer._thread.is_alive()


def test_a_full_queue_refuses_and_the_series_waits_for_the_next_check(hostile):
    config = hostile("silent")
    writer = EventWriter(lambda: KubeClient(str(config)), max_queue=2)
    try:
        a = Agent(burst=100)
        for i in range(10, 20):
            a.drops(key(MTU, tag(i)), 1)
        accepted = [writer.submit(w) for w in a.at(0.0)]
    finally:
        writer.close()
    assert accepted.count(True) <= 3 and accepted.count(False) >= 7     # one taken by the thread, two waiting


# ---------------------------------------------------------------- the writer and the loop, against the lab's API



@pytest.fixture
def lab(tmp_path):
    server = labapi.KubeAPI()
    server.start()
    server.kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")     # the agent's service account
    yield server
    server.stop()


def listed(lab, namespace, pod):
    """The pod's Events as kubectl describe pod lists them (the lab's store: the agent may not list)."""
    return [e for (ns, _), e in sorted(lab.store.objects["events"].items())
            if ns == namespace and e["involvedObject"]["name"] == pod]


class Loop:
    """PodEventsAgent as serve runs it, on counts given here and a clock of its own, writing to the lab."""

    def __init__(self, lab, interval=60.0):
        self.counts, self.now = {}, 0.0
        self.said = []
        self.writer = EventWriter(lambda: KubeClient(str(lab.kubeconfig)), self.said.append)
        self.agent = PodEventsAgent(PodEvents(NODE, interval, 0.0), Series(Names(), attribute, pod_uid),
                                    lambda: dict(self.counts), None, lambda: None, self.writer, 0.0,
                                    wall=lambda: T0 + timedelta(seconds=self.now))

    def at(self, seconds):
        """A tick at `seconds`, then the writer's answers taken in (as the next ticks would)."""
        self.now = seconds
        self.agent.tick([], seconds)
        assert wait_for(lambda: self.agent.tick([], seconds) or self.agent.events.pending() == 0, 10.0)


def test_the_series_is_created_then_patched_and_created_again_once_expired(lab):
    loop = Loop(lab)
    try:
        loop.counts[key(NETFILTER, tag(1))] = 42
        loop.at(0.0)
        [ev] = listed(lab, "shop", "web-0")
        assert (ev["count"], ev["reason"], ev["type"]) == (42, "PacketsDropped", "Warning")
        assert ev["message"] == "42 packets dropped: a firewall rule or chain policy dropped packets (node-1)"
        loop.counts[key(NETFILTER, tag(1))] = 50
        loop.at(30.0)
        assert listed(lab, "shop", "web-0")[0]["count"] == 42      # within the interval: not yet
        loop.at(60.0)
        [patched] = listed(lab, "shop", "web-0")
        assert (patched["metadata"]["name"], patched["count"]) == (ev["metadata"]["name"], 50)
        assert datetime.fromisoformat(patched["lastTimestamp"]) == T0 + timedelta(seconds=30)
        # The API server let it expire (--event-ttl): the next patch finds nothing, and it is created again.
        lab.store.delete("events", "shop", ev["metadata"]["name"], labapi.AGENT_USER)
        loop.counts[key(NETFILTER, tag(1))] = 51
        loop.at(120.0)
        loop.at(125.0)
        [again] = listed(lab, "shop", "web-0")
        assert again["metadata"]["name"] != ev["metadata"]["name"]
        assert (again["count"], datetime.fromisoformat(again["firstTimestamp"])) == (51, T0)
        assert loop.said == []
    finally:
        loop.agent.close()


def test_an_event_name_taken_fails_and_the_next_try_takes_another(lab):
    loop = Loop(lab)
    try:
        loop.counts[key(MTU, tag(2))] = 3
        loop.agent.events._last_ns = int((T0 + timedelta(seconds=9)).timestamp() * 1e9)
        taken = event_name("api-1", loop.agent.events._last_ns + 1)
        lab.store.create("events", "shop", {"metadata": {"name": taken}, "involvedObject": {"name": "x"},
                                            "reason": "Other"}, "someone-else")
        loop.at(0.0)
        assert listed(lab, "shop", "api-1") == [] and len(loop.said) == 1 and "409" in loop.said[0]
        loop.at(10.0)
        [ev] = listed(lab, "shop", "api-1")
        assert ev["count"] == 3 and ev["metadata"]["name"] != taken
        assert loop.said[1] == "Events on pods: written again"
    finally:
        loop.agent.close()


def test_serve_flags():
    from tracer import cli
    from tracer.errors import UserError

    opts = cli.parse(["serve"])
    assert (opts.pod_events, opts.events_interval) == (True, 60.0)
    opts = cli.parse(["serve", "--no-pod-events", "--events-interval", "2m"])
    assert (opts.pod_events, opts.events_interval) == (False, 120.0)
    assert cli.parse(["serve", "--events-interval", "15"]).events_interval == 15.0
    for bad in ("0.5", "2h", "x", "-1"):
        with pytest.raises((UserError, SystemExit)):
            cli.parse(["serve", "--events-interval", bad])
