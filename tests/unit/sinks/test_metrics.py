"""sinks.metrics: counter keys -> Prometheus series (labels, folding, TTL, never backwards), on plain data."""

from collections import namedtuple

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tracer.kernel import event, pktfacts
from tracer.pods.attribute import DIRECTIONS, NO_POD, Attribution, PodRef
from tracer.sinks.metrics import OTHER, AgentState, DropCollector, Series, Tally, tally

REASONS = {1: "NOT_SPECIFIED", 2: "NO_SOCKET", 3: "PKT_TOO_BIG", 4: "QUEUE_PURGE", 5: "NETFILTER_DROP"}
LOCATIONS = {0x10: "__udp4_lib_rcv", 0x20: "ip_forward", 0x30: "skb_queue_purge_reason", 0x40: "nft_do_chain",
             0x50: "__udp4_lib_rcv"}
IN_POD, FROM_POD, TO_POD = (next(k for k, v in DIRECTIONS.items() if v == d) for d in ("in-pod", "from-pod", "to-pod"))


class Names:
    def reason_name(self, code):
        return REASONS.get(code)

    def location_name(self, addr):
        return LOCATIONS.get(addr)


PODS = {1: PodRef("default", "web-7d9f8c6b5-x2k4q", "u1", "n1"), 2: PodRef("default", "db-0", "u2", "n1"),
        3: PodRef("shop", "api-1", "u3", "n1"), 4: PodRef("default", "db-0", "u4", "n1")}   # 4: db-0 recreated


def attribute(tag):
    ref = PODS.get(tag >> 2)
    return Attribution(ref, DIRECTIONS.get(tag & 3)) if ref else NO_POD


def workload(who):
    return {"u1": "web"}.get(who.pod.uid, who.pod.name)


def series(**kw):
    return Series(Names(), attribute, workload, **kw)


def tag(pid, direction):
    return pid << 2 | direction


def key(reason=2, loc=0x10, pod=0, netns=4026531840, facts=0):
    return (netns, reason, loc, pod, facts)


NETLINK = pktfacts.make(pktfacts.PACKET_HOST, event.ND_DST_NOT_IP)


def test_keys_that_differ_in_facts_are_one_series_unless_benign_differs():
    """The packet facts label nothing but benign: a place with netlink messages and IP packets
    purged is two series (one benign), two IP packets of different frames are one."""
    ours, copy = pktfacts.make(pktfacts.PACKET_HOST), pktfacts.make(pktfacts.PACKET_OUTGOING)
    out = series().update({key(4, 0x30, facts=NETLINK): 7, key(4, 0x30, facts=ours): 2,
                           key(4, 0x30, facts=copy): 3}, None, 0.0)
    assert out == {("", "", "", "", "other", "QUEUE_PURGE", "true"): Tally(7),
                   ("", "", "", "", "other", "QUEUE_PURGE", "false"): Tally(5)}


def test_unicast_refused_on_udps_no_socket_path_is_labelled_ipsec_and_never_benign():
    """NOT_SPECIFIED at __udp4_lib_rcv: a broadcast nobody wants is benign, unicast to our own
    address (refused by an inbound IPsec policy) is category ipsec, by the key's facts alone."""
    bcast = pktfacts.make(pktfacts.PACKET_BROADCAST, event.ND_DST_BROADCAST)
    out = series().update({key(1, 0x50, facts=bcast): 4, key(1, 0x50, facts=pktfacts.make(pktfacts.PACKET_HOST)): 25},
                          None, 0.0)
    assert out == {("", "", "", "", "other", "NOT_SPECIFIED", "true"): Tally(4),
                   ("", "", "", "", "ipsec", "NOT_SPECIFIED", "false"): Tally(25)}


def test_labels_from_the_registry_the_pod_index_and_the_workload():
    s = series()
    out = s.update({key(): 3, key(2, 0x10, tag(1, IN_POD)): 5, key(4, 0x30, facts=NETLINK): 7,
                    key(3, 0x20, tag(1, FROM_POD)): 2}, None, 0.0)
    assert out == {
        ("", "", "", "", "no-socket", "NO_SOCKET", "false"): Tally(3),
        ("default", "web-7d9f8c6b5-x2k4q", "web", "in-pod", "no-socket", "NO_SOCKET", "false"): Tally(5),
        ("", "", "", "", "other", "QUEUE_PURGE", "true"): Tally(7),
        ("default", "web-7d9f8c6b5-x2k4q", "web", "from-pod", "mtu", "PKT_TOO_BIG", "false"): Tally(2),
    }


def test_keys_of_one_label_set_add_up_namespaces_and_locations_alike():
    s = series()
    out = s.update({key(netns=1): 3, key(netns=2): 4, key(2, 0x40): 1, key(5, 0x40): 1}, None, 0.0)
    assert out[("", "", "", "", "no-socket", "NO_SOCKET", "false")] == Tally(8)
    assert out[("", "", "", "", "netfilter", "NETFILTER_DROP", "false")] == Tally(1)
    assert len(out) == 2


def test_bytes_when_the_kernel_counts_them_and_only_then():
    Count = namedtuple("Count", "packets bytes")
    assert tally(5) == Tally(5, None) and tally(Count(5, 7500)) == Tally(5, 7500) and tally((1, 2)) == Tally(1, 2)
    s = series()
    out = s.update({key(netns=1): Count(2, 3000), key(netns=2): Count(1, 40)}, None, 0.0)
    assert out[("", "", "", "", "no-socket", "NO_SOCKET", "false")] == Tally(3, 3040)


def test_past_max_series_new_label_sets_fold_into_other_and_stay_there():
    s = series(max_series=2)
    first = s.update({key(2, 0x10, tag(1, IN_POD)): 10, key(2, 0x10, tag(2, IN_POD)): 5}, set(PODS), 0.0)
    assert len(first) == 2 and s.folded == 0
    # Two more label sets: the bigger would have won on the first scrape; now both fold.
    out = s.update({key(2, 0x10, tag(1, IN_POD)): 11, key(2, 0x10, tag(2, IN_POD)): 5,
                    key(2, 0x10, tag(3, IN_POD)): 100, key(2, 0x10, tag(3, TO_POD)): 1}, set(PODS), 1.0)
    other = (OTHER, OTHER, OTHER, "", "no-socket", "NO_SOCKET", "false")
    assert out[other] == Tally(101) and s.folded == 2 and len(out) == 3
    assert out[("default", "web-7d9f8c6b5-x2k4q", "web", "in-pod", "no-socket", "NO_SOCKET", "false")] == Tally(11)


def test_within_one_scrape_the_biggest_new_label_sets_keep_their_names():
    s = series(max_series=1)
    out = s.update({key(2, 0x10, tag(1, IN_POD)): 1, key(2, 0x10, tag(2, IN_POD)): 50}, None, 0.0)
    assert ("default", "db-0", "db-0", "in-pod", "no-socket", "NO_SOCKET", "false") in out


def test_a_gone_pods_series_is_removed_after_the_ttl_and_never_comes_back():
    s = series(ttl=300)
    counts = {key(2, 0x10, tag(2, IN_POD)): 4, key(): 1}
    db = ("default", "db-0", "db-0", "in-pod", "no-socket", "NO_SOCKET", "false")
    assert db in s.update(counts, {2}, 0.0)
    assert db in s.update(counts, set(), 10.0)         # gone since 10 s
    assert db in s.update(counts, set(), 309.0)        # not yet 300 s
    out = s.update(counts, set(), 310.0)
    assert db not in out and out == {("", "", "", "", "no-socket", "NO_SOCKET", "false"): Tally(1)}
    # The kernel's counter stays; the series does not come back from it.
    assert db not in s.update({**counts, key(2, 0x10, tag(2, IN_POD)): 6}, set(), 400.0)


def test_a_pod_back_within_the_ttl_keeps_its_series():
    s = series(ttl=300)
    counts = {key(2, 0x10, tag(2, IN_POD)): 4}
    s.update(counts, set(), 0.0)
    s.update(counts, {2}, 200.0)
    assert len(s.update(counts, set(), 450.0)) == 1      # gone again only since 450


def test_a_recreated_pod_keeps_its_series_growing_while_the_old_one_expires():
    s = series(ttl=300)
    db = ("default", "db-0", "db-0", "in-pod", "no-socket", "NO_SOCKET", "false")
    counts = {key(2, 0x10, tag(2, IN_POD)): 4}
    s.update(counts, {2}, 0.0)
    counts[key(2, 0x10, tag(4, IN_POD))] = 1          # db-0 again, a new uid
    assert s.update(counts, {4}, 10.0)[db] == Tally(5)
    assert s.update(counts, {4}, 1000.0)[db] == Tally(5)   # the old pod's 4 stay: never backwards


def test_folded_pods_leaving_keep_other_from_going_back():
    s = series(max_series=1, ttl=60)
    other = (OTHER, OTHER, OTHER, "", "no-socket", "NO_SOCKET", "false")
    counts = {key(2, 0x10, tag(1, IN_POD)): 50, key(2, 0x10, tag(2, IN_POD)): 3, key(2, 0x10, tag(3, IN_POD)): 4}
    assert s.update(counts, {1, 2, 3}, 0.0)[other] == Tally(7)
    s.update(counts, {1, 3}, 10.0)
    out = s.update({**counts, key(2, 0x10, tag(3, IN_POD)): 6}, {1, 3}, 100.0)
    assert out[other] == Tally(9)                      # pod 2 retired, its 3 kept in _other
    assert s.update({**counts, key(2, 0x10, tag(3, IN_POD)): 6}, {1, 3}, 200.0)[other] == Tally(9)


def test_no_pod_series_never_expire():
    s = series(ttl=1)
    assert len(s.update({key(): 1}, set(), 0.0)) == 1
    assert len(s.update({key(): 1}, set(), 100.0)) == 1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.dictionaries(st.sampled_from([key(r, loc, tag(p, d)) for r in (2, 3, 5)
                                                             for loc in (0x10, 0x40) for p in (0, 1, 2, 3, 4)
                                                             for d in (IN_POD, FROM_POD)]),
                                          st.integers(0, 20), max_size=12),
                          st.sets(st.integers(1, 4)), st.floats(0, 200)), min_size=1, max_size=12),
       st.integers(1, 6), st.sampled_from([50.0, 1e9]))
def test_a_live_series_never_goes_backwards(steps, max_series, ttl):
    """Any growth of the kernel counters, pods coming and going, any pace:
    every series exported twice in a row grew or stayed, and at most
    max_series series are not _other."""
    s = series(max_series=max_series, ttl=ttl)
    counts: dict = {}
    now, before = 0.0, {}
    for growth, live, dt in steps:
        for k, n in growth.items():            # kernel counters only grow, keys never vanish
            counts[k] = counts.get(k, 0) + n
        now += dt
        out = s.update(dict(counts), live, now)
        for labels, value in out.items():
            if labels in before:
                assert value.packets >= before[labels].packets, labels
        assert sum(1 for lb in out if lb[1] != OTHER) <= max_series
        before = out
    if ttl > 1e8:      # nothing expired: every drop counted is in exactly one series
        assert sum(v.packets for v in before.values()) == sum(counts.values())


def collector(values_counts, conntrack=None):
    s = series()
    c = DropCollector("node-a", s, lambda: values_counts,
                      lambda counts: AgentState(events_lost=2, ungrouped=0,
                                                hooks=(("tracepoint skb:kfree_skb", True), ("fentry ip_forward",
                                                                                            False)),
                                                conntrack=conntrack),
                      lambda: None, "0.1.0", "6.18.0")
    reg = CollectorRegistry(auto_describe=False)
    reg.register(c)
    return generate_latest(reg).decode()


def test_exposition_has_every_metric_with_its_labels():
    text = collector({key(2, 0x10, tag(1, IN_POD)): 5, key(4, 0x30, facts=NETLINK): 1},
                     {"clash_resolve": 3, "insert_failed": 1, "drop": 0})
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    drops = {tuple(sorted(s.labels.items())): s.value for s in fams["netdrop_drops"].samples}
    assert drops[tuple(sorted({"node": "node-a", "namespace": "default", "pod": "web-7d9f8c6b5-x2k4q",
                               "workload": "web", "direction": "in-pod", "category": "no-socket",
                               "reason": "NO_SOCKET", "benign": "false"}.items()))] == 5
    assert any(s.labels["benign"] == "true" and s.labels["pod"] == "" for s in fams["netdrop_drops"].samples)
    assert "netdrop_drop_bytes_total" not in text       # the kernel counts no bytes yet: no made-up numbers
    races = {s.labels["outcome"]: s.value for s in fams["netdrop_conntrack_insert_races"].samples}
    assert races == {"resolved": 3, "failed": 1}
    assert 'netdrop_events_lost_total{node="node-a"} 2.0' in text
    assert 'netdrop_hook_attached{hook="fentry ip_forward",node="node-a"} 0.0' in text
    assert 'netdrop_build_info{kernel="6.18.0",node="node-a",version="0.1.0"} 1.0' in text
    assert 'netdrop_series{node="node-a"} 2.0' in text


def test_exposition_of_hostile_pod_names_stays_one_line_each():
    PODS[9] = PodRef("default", 'evil"}\nnetdrop_drops_total{pod="x', "u9", "n1")
    try:
        text = collector({key(2, 0x10, tag(9, IN_POD)): 1})
    finally:
        del PODS[9]
    fams = list(text_string_to_metric_families(text))
    pods = [s.labels["pod"] for f in fams if f.name == "netdrop_drops" for s in f.samples]
    assert pods == ['evil"}\nnetdrop_drops_total{pod="x']


def test_the_fast_rendering_says_what_prometheus_client_would_in_both_formats():
    """render() writes the drop series itself (speed): parsed back, the same
    families and samples as prometheus_client's own encoders give, hostile
    names included; the OpenMetrics text ends with its # EOF."""
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families

    from tracer.agent.endpoints import Agent

    PODS[9] = PodRef("default", 'evil"}\\\nx', "u9", "n1")
    try:
        counts = {key(2, 0x10, tag(9, IN_POD)): 1, key(4, 0x30): 7, key(2, 0x10, tag(1, FROM_POD)): 3}
        s = series()
        c = DropCollector("node-a", s, lambda: counts,
                          lambda k: AgentState(0, 0, (("tracepoint skb:kfree_skb", True),), None), lambda: None,
                          "0.1.0", "6.18")
        agent = Agent()
        agent.collector = c
        for accept, parse in (("text/plain", text_string_to_metric_families),
                              ("application/openmetrics-text;version=1.0.0", om_families)):
            body, ctype = agent.scrape(accept)
            encoder, _ = choose_encoder(accept)
            reg = CollectorRegistry(auto_describe=False)
            reg.register(c)
            reference = encoder(reg).decode()

            def samples(text, parse=parse):
                return sorted((smp.name, tuple(sorted(smp.labels.items())), smp.value)
                              for f in parse(text) if f.name.startswith("netdrop") for smp in f.samples)
            assert samples(body.decode()) == samples(reference)
            assert len([x for x in samples(body.decode()) if x[0] == "netdrop_drops_total"]) == 3
            if "openmetrics" in accept:
                assert body.decode().endswith("# EOF\n") and body.decode().count("# EOF") == 1
    finally:
        del PODS[9]


def test_the_loaders_counts_export_drop_bytes_in_both_renderings():
    """Tracer.counts() gives loader.Count (packets, bytes): both renderings then
    export netdrop_drop_bytes_total with the bytes of each series, added up
    over the keys of one label set."""
    from prometheus_client.exposition import choose_encoder

    from tracer.kernel.loader import Count
    from tracer.agent.endpoints import Agent

    counts = {key(netns=1): Count(2, 3000), key(netns=2): Count(1, 40), key(2, 0x10, tag(1, IN_POD)): Count(5, 640)}
    c = DropCollector("node-a", series(), lambda: counts,
                      lambda k: AgentState(0, 0, (("tracepoint skb:kfree_skb", True),), None), lambda: None,
                      "0.1.0", "6.18")
    agent = Agent()
    agent.collector = c
    body, _ = agent.scrape("text/plain")
    reg = CollectorRegistry(auto_describe=False)
    reg.register(c)
    reference = choose_encoder("text/plain")[0](reg).decode()
    for text in (body.decode(), reference):
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        got = {(smp.labels["pod"], smp.labels["reason"]): smp.value for smp in fams["netdrop_drop_bytes"].samples}
        assert got == {("", "NO_SOCKET"): 3040, ("web-7d9f8c6b5-x2k4q", "NO_SOCKET"): 640}
        drops = {(smp.labels["pod"], smp.labels["reason"]): smp.value for smp in fams["netdrop_drops"].samples}
        assert drops == {("", "NO_SOCKET"): 3, ("web-7d9f8c6b5-x2k4q", "NO_SOCKET"): 5}


def test_a_scrape_while_another_forgets_the_text_of_expired_series_both_succeed():
    """Two Prometheus replicas scrape at once while series expire: one render
    forgets the label text of the expired series while the other adds the
    text of new ones. The moment is made, not waited for: the first render is
    held where it first hashes a label after its read (its pruning of the text
    cache) for the second to run then, if the collector lets it."""
    import itertools
    import threading

    pods = {"live": set(range(1, 2001))}
    ticks = itertools.count()
    pruning, inserted = threading.Event(), threading.Event()
    first: list[threading.Thread] = []
    read_done = threading.Event()

    def state(counts):
        if first and threading.current_thread() is first[0]:
            read_done.set()
        return AgentState(0, 0, (), None)

    class Workload(str):
        __slots__ = ()

        def __hash__(self):
            if read_done.is_set() and threading.current_thread() is first[0] and not pruning.is_set():
                pruning.set()
                pods["live"] = set(range(5001, 6001))     # new pods: the second scrape adds their text
                inserted.wait(1.0)      # the second render runs now, if the collector lets it
            return str.__hash__(self)

    def attribute(t):
        return Attribution(PodRef("default", f"web-{t >> 2}", f"u{t >> 2}", "n1"), "in-pod")

    s = Series(Names(), attribute, lambda who: Workload("web"), ttl=0.0)
    c = DropCollector("node-a", s, lambda: {key(2, 0x10, tag(pid, IN_POD)): 1 for pid in pods["live"]},
                      state, lambda: set(pods["live"]), "0.1.0", "6.18", clock=lambda: float(next(ticks)))
    assert c.render()[0].count(b"\nnetdrop_drops_total{") == 2000
    pods["live"] = set()
    c.render()                  # the pods are gone; their series expire at the next read (ttl 0)
    bodies: dict[str, bytes] = {}
    failures: list[BaseException] = []

    def scrape(name):
        try:
            bodies[name] = c.render()[0]
        except BaseException as exc:  # noqa: BLE001 - any failure is the finding
            failures.append(exc)
        finally:
            if name == "second":
                inserted.set()

    first.append(threading.Thread(target=scrape, args=("first",)))
    first[0].start()
    assert pruning.wait(10)
    second = threading.Thread(target=scrape, args=("second",))
    second.start()
    for t in (first[0], second):
        t.join(10)
    assert failures == []
    assert bodies["first"].count(b"\nnetdrop_drops_total{") == 0
    assert bodies["second"].count(b"\nnetdrop_drops_total{") == 1000
    assert c.scrapes == 4
