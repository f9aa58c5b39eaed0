"""evidence: the node's facts parsed from what `ip`, `bridge`, `bpftool` and
/proc said (golden files recorded on kernel 6.18), any input survived, and the
cache that keeps them off the event path."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer.explain import evidence as E
from tracer.kernel.decode import Drop

from ..strategies import mutated_lines

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "evidence"
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def golden(name: str) -> str:
    return (GOLDEN / name).read_text()


def drop(netns: int = 7) -> Drop:
    return Drop(datetime(2026, 1, 1, tzinfo=UTC), "QDISC_DROP", 64, "__dev_queue_xmit", 1, netns, 2, "veth1",
                1500, None, None, None, 4, "udp", "10.0.0.1", "10.0.0.2", 1, 2, 100, False, False, None)


def test_links_recorded():
    devs = {d.name: d for d in E.parse_links(golden("ip-link.json"))}
    veth, vx, br = devs["veth7c1f"], devs["flannel.1"], devs["cni0"]
    assert veth.kind == "veth" and veth.master == "cni0" and veth.peer_ifindex is not None
    assert veth.up and not veth.carrier and veth.oper == "DOWN" and veth.state == "UP, no carrier"
    assert veth.port_state is not None and veth.port_state != E.FORWARDING    # a port without carrier
    assert vx.vxlan == E.Vxlan(1, 8472, "192.168.100.1", None, None)
    assert br.kind == "bridge" and br.vxlan is None and br.port_state is None
    assert E.peer_netnsids(golden("ip-link.json")) == {veth.ifindex: 0}
    assert E.parse_netns_ids(golden("netns-list-id.json")) == {0: "ndeg-golden-b"}


def test_sysctls_xfrm_fdb_memory_recorded():
    sysctls = E.parse_sysctls(golden("sysctls.txt"))
    assert sysctls[("cni0", "route_localnet")] is True and sysctls[("veth7c1f", "disable_ipv6")] is False
    x = E.parse_xfrm(golden("xfrm-policy-count.txt"), golden("xfrm-state-count.txt"))
    assert x is not None and (x.count("in"), x.count("out"), x.count("fwd"), x.states) == (0, 1, 0, 0)
    assert E.parse_fdb(golden("fdb.json")) == (2, ("192.168.100.2",))
    mem = E.parse_memory(golden("meminfo.txt"), golden("pressure-memory.txt"))
    assert mem is not None and mem.total_kb and mem.available_kb is not None and mem.psi_some_avg10 is not None
    assert "MiB available" in str(mem) and "PSI" in str(mem)


def test_bpftool_views():
    net = json.dumps([{"xdp": [{"devname": "eth0", "ifindex": 2, "generic": {"id": 5, "name": "xdp_fw"}}],
                       "tc": [{"devname": "b0", "ifindex": 3, "kind": "clsact/ingress", "name": "drop_all",
                               "id": 42}], "flow_dissector": []}])
    progs = E.parse_bpftool_net(net)
    assert progs == [E.Program("eth0", "xdp", 5, "xdp_fw"), E.Program("b0", "tc ingress", 42, "drop_all")]
    cg = json.dumps([{"cgroup": "/sys/fs/cgroup/unified/kubepods/pod1",
                      "programs": [{"id": 7, "attach_type": "cgroup_inet_egress", "attach_flags": "multi",
                                    "name": "deny"}]}])
    found = E.parse_bpftool_cgroup(cg)
    assert found is not None and found[0].hook == "cgroup_inet_egress" and found[0].prog_id == 7
    owners = E.parse_bpftool_owners(json.dumps([{"id": 7, "pids": [{"pid": 9, "comm": "agent"}]}]))
    assert owners == {7: ("agent(9)",)}
    assert str(E.Program("b0", "tc ingress", 42, "drop_all", ("agent(9)",))) == \
        "tc ingress program 'drop_all' id 42 on b0 held by agent(9)"
    assert E.parse_bpftool_net("") is None and E.parse_bpftool_net("[]") == []
    assert E.parse_lsm("lockdown,capability,apparmor,bpf\n") == ("lockdown", "capability", "apparmor", "bpf")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["ifindex", "ifname", "flags", "linkinfo", "info_kind", "info_data", "info_slave_kind",
                         "info_slave_data", "state", "id", "port", "link_index", "link_netnsid", "nsid", "name",
                         "devname", "tc", "xdp", "kind", "cgroup", "programs", "attach_type", "pids", "comm",
                         "pid", "dst", "generic", "mtu", "operstate", "master"]) | st.text(max_size=5),
        inner, max_size=6),
    max_leaves=30)

JSON_PARSERS = (E.parse_links, E.parse_netns_ids, E.peer_netnsids, E.parse_fdb, E.parse_bpftool_net,
                E.parse_bpftool_cgroup, E.parse_bpftool_owners)


@FAST
@given(json_values)
def test_json_parsers_survive_any_document(doc):
    text = json.dumps(doc)
    for parse in JSON_PARSERS:
        parse(text)
        parse("[" + text + "]")


@FAST
@given(st.sampled_from(["ip-link.json", "fdb.json", "netns-list-id.json", "sysctls.txt", "xfrm-policy-count.txt",
                        "xfrm-state-count.txt", "meminfo.txt", "pressure-memory.txt"]).flatmap(
    lambda name: mutated_lines(golden(name))))
def test_text_parsers_survive_mutated_golden_files(text):
    for parse in JSON_PARSERS:
        parse(text)
    devices = E.parse_links(text)
    assert len(devices) <= E.MAX_DEVICES and all(len(d.name) <= E.NAME_MAX for d in devices)
    E.parse_sysctls(text)
    E.parse_xfrm(text, text)
    E.parse_memory(text, text)
    E.parse_lsm(text)


@FAST
@given(st.text(max_size=300))
def test_any_text_is_survived(text):
    for parse in JSON_PARSERS:
        parse(text)
    E.parse_sysctls(text)
    E.parse_xfrm(text, text)
    E.parse_memory(text, text)
    E.parse_lsm(text)


def test_device_names_from_pods_are_cut_and_programs_bounded():
    huge = json.dumps([{"ifindex": i, "ifname": "x" * 500} for i in range(E.MAX_DEVICES + 10)])
    devs = E.parse_links(huge)
    assert len(devs) == E.MAX_DEVICES and all(len(d.name) == E.NAME_MAX for d in devs)
    many = json.dumps([{"tc": [{"devname": "e", "name": "p", "id": i} for i in range(500)]}])
    assert len(E.parse_bpftool_net(many) or []) == E.MAX_PROGRAMS


class FakeReads:
    def __init__(self):
        self.reads: list[int] = []
        self.gate = threading.Event()

    def paths(self, wanted):
        return {ino: f"/run/netns/x{ino}" for ino in wanted if ino != 404}

    def read(self, netns, path, node, now, stop=None):
        self.reads.append(netns)
        self.gate.set()
        return E.Evidence(netns, (), None, (), node, now)


def test_the_cache_never_reads_on_the_event_path():
    clock = [0.0]
    fake = FakeReads()
    cache = E.EvidenceCache(fake.paths, fake.read, node=lambda stop=None: E.NodeFacts(None, None, None), ttl=5,
                            clock=lambda: clock[0])
    assert cache(drop()) is None and fake.reads == []       # asked, not read: the thread will
    first = cache.refresh(7)
    assert first is not None and cache(drop()) is first and fake.reads == [7]
    clock[0] = 6.0                                           # stale: still answered, read again in the background
    assert cache(drop()) is first and fake.reads == [7]
    assert cache.refresh(404) is None                        # a namespace gone


def test_the_cache_thread_reads_what_drops_ask_for_and_stops():
    fake = FakeReads()
    cache = E.EvidenceCache(fake.paths, fake.read, node=lambda stop=None: E.NodeFacts(None, None, None))
    cache.start()
    try:
        assert cache(drop(11)) is None
        assert fake.gate.wait(5)
        for _ in range(100):
            if cache(drop(11)) is not None:
                break
            threading.Event().wait(0.01)
        assert cache(drop(11)) is not None and fake.reads == [11]
    finally:
        cache.close()


def test_a_read_something_waits_for_comes_first_and_begins_after_it_was_asked():
    clock = [0.0]
    fake = FakeReads()
    cache = E.EvidenceCache(fake.paths, fake.read, node=lambda stop=None: E.NodeFacts(None, None, None), ttl=5,
                            clock=lambda: clock[0])
    cache.refresh(5)                       # read at 0.0: fresh for the TTL, but from before what waits
    clock[0] = 1.0
    assert cache.answered(5, 0.0) and not cache.answered(5, 1.0)
    for ino in (1, 2, 3):
        cache(drop(ino))                   # plain asks, first in line
    cache.ask(5, 1.0)
    cache.ask(404, 1.0)                    # a namespace gone: its read is answered too (nothing to wait for)
    cache.start()
    try:
        for _ in range(500):
            if cache.answered(5, 1.0) and cache.answered(404, 1.0):
                break
            threading.Event().wait(0.01)
        assert cache.answered(5, 1.0) and cache.answered(404, 1.0)
        assert fake.reads[:2] == [5, 5]    # read again, before the plain asks
    finally:
        cache.close()


def test_the_cache_is_bounded():
    fake = FakeReads()
    cache = E.EvidenceCache(fake.paths, fake.read, node=lambda stop=None: E.NodeFacts(None, None, None),
                            max_namespaces=3)
    for ino in range(10):
        cache.refresh(ino)
        cache(drop(100 + ino))
    assert len(cache._known) == 3 and len(cache._wanted) == 3
    assert cache(drop(9)) is not None and cache(drop(0)) is None


def test_flannel_vnis_from_node_objects():
    from tracer.doctor.links import flannel_vnis
    nodes = [{"metadata": {"name": "n1", "annotations": {"flannel.alpha.coreos.com/backend-data":
                                                         '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}'}}},
             {"metadata": {"name": "n2", "annotations": {"flannel.alpha.coreos.com/backend-data": "null"}}},
             {"metadata": {"name": "n3"}}, "junk", None]
    assert flannel_vnis(nodes) == {"n1": 1}


@FAST
@given(json_values, json_values)
def test_flannel_vnis_survive_any_node_object(meta, data):
    from tracer.doctor.links import flannel_vnis
    flannel_vnis([{"metadata": meta}, {"metadata": {"name": "n", "annotations": {
        "flannel.alpha.coreos.com/backend-data": json.dumps(data)}}}, meta])


def test_a_namespaces_commands_run_together_and_a_hung_one_is_killed(tmp_path):
    from tracer.node.nsexec import read_many_in_netns

    pid_file = tmp_path / "pid"
    t0 = time.monotonic()
    out = read_many_in_netns(None, [("sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"), ("echo", "ok"),
                                    ("false",), ("/nonexistent/netdrop-test",)], timeout=0.5)
    took = time.monotonic() - t0
    assert out == [None, "ok\n", None, None] and took < 10      # bounded by the timeout, not by sleep 30
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()     # killed and reaped


def test_closing_the_cache_kills_the_commands_of_a_read_in_flight(tmp_path):
    """A hung command in a namespace's read neither holds the stop nor outlives it."""
    from tracer.node.nsexec import read_many_in_netns

    pid_file = tmp_path / "pid"
    started = threading.Event()

    def read(netns, path, node, now, stop=None):
        started.set()
        read_many_in_netns(None, [("sh", "-c", f"echo $$ > {pid_file}; exec sleep 30")], timeout=30, stop=stop)
        return E.Evidence(netns, (), None, (), node, now)

    cache = E.EvidenceCache(lambda wanted: {ino: None for ino in wanted}, read,
                            node=lambda stop=None: E.NodeFacts(None, None, None))
    cache.start()
    cache.ask(7, 0.0)
    assert started.wait(10)
    until = time.monotonic() + 10
    while (not pid_file.exists() or not pid_file.read_text().strip()) and time.monotonic() < until:
        time.sleep(0.01)
    t0 = time.monotonic()
    cache.close()
    assert time.monotonic() - t0 < 1.0          # generous: the stop is polled every 50 ms
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()     # killed and reaped


def test_closing_the_cache_kills_a_node_read_in_flight(tmp_path):
    """The node's facts (bpftool) are read on the same thread: a hung one is killed at close too."""
    from tracer.node.nsexec import read_many_in_netns

    pid_file = tmp_path / "pid"

    def node(stop=None):
        read_many_in_netns(None, [("sh", "-c", f"echo $$ > {pid_file}; exec sleep 30")], timeout=30, stop=stop)
        return E.NodeFacts(None, None, None)

    cache = E.EvidenceCache(lambda wanted: {ino: None for ino in wanted},
                            lambda netns, path, node_, now, stop=None: E.Evidence(netns, (), None, (), node_, now),
                            node=node)
    cache.start()
    cache.ask(7, 0.0)
    until = time.monotonic() + 10
    while (not pid_file.exists() or not pid_file.read_text().strip()) and time.monotonic() < until:
        time.sleep(0.01)
    t0 = time.monotonic()
    cache.close()
    assert time.monotonic() - t0 < 1.0
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()
