"""serve: --listen parsed, and the agent's HTTP side (/metrics, /healthz, bounded clients) on 127.0.0.1."""

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer import serve
from tracer.errors import UserError
from tracer.kernel.loader import Hook, Stats
from tracer.pods.attribute import NO_POD
from tracer.sinks.metrics import AgentState, DropCollector, Series


@pytest.mark.parametrize("text,want", [
    ("0.0.0.0:10303", ("0.0.0.0", 10303)), (":9", ("0.0.0.0", 9)), ("[::1]:10303", ("::1", 10303)),
    ("127.0.0.1:65535", ("127.0.0.1", 65535)), ("[::]:1", ("::", 1))])
def test_listen_addresses(text, want):
    got = serve.parse_listen(text)
    assert (got.host, got.port) == want


@pytest.mark.parametrize("text,says", [
    ("10303", "expected ADDR:PORT"), ("localhost:10303", "not an IP address"), ("::1:80", "in brackets"),
    ("1.2.3.4:0", "from 1 to 65535"), ("1.2.3.4:65536", "from 1 to 65535"), ("1.2.3.4:x", "from 1 to 65535"),
    ("[1.2.3.4]:80", "brackets are for IPv6"), ("1.2.3.4:-1", "from 1 to 65535")])
def test_bad_listen_addresses_are_one_clear_line(text, says):
    with pytest.raises(UserError, match=says):
        serve.parse_listen(text)


@given(st.text(max_size=60))
def test_any_listen_text_is_an_address_or_a_user_error(text):
    try:
        got = serve.parse_listen(text)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert 0 < got.port < 65536


class FakeTracer:
    hooks = [Hook("tracepoint skb:kfree_skb", True), Hook("fentry ip_forward", False, "refused")]

    def __init__(self):
        self.broken = False

    def stats(self, counts):
        if self.broken:
            raise Exception("Bad file descriptor")  # noqa: TRY002 - bcc's bare Exception
        return Stats(matched=sum(counts.values()))

    def counts(self):
        return {(1, 2, 0x10, 0): 42}


class Names:
    def reason_name(self, code):
        return "NO_SOCKET"

    def location_name(self, addr):
        return "__udp4_lib_rcv"


@pytest.fixture
def agent():
    a = serve.Agent()
    server = serve._Server(serve.Listen("127.0.0.1", 0), a)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    a.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield a
    server.shutdown()
    server.server_close()


def load(a):
    tracer = FakeTracer()
    collector = DropCollector("node-a", Series(Names(), lambda tag: NO_POD, lambda who: ""), tracer.counts,
                              lambda counts: AgentState(0, 0, (("tracepoint skb:kfree_skb", True),), None),
                              lambda: None, "0.1.0", "6.18")
    a.collector, a.tracer = collector, tracer
    return tracer


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_healthz_says_starting_until_the_program_is_loaded_then_ok(agent):
    assert get(agent.url + "/healthz") == (503, "starting: loading the BPF program\n")
    load(agent)
    assert get(agent.url + "/healthz") == (200, "ok: programs attached, counters readable\n")


def test_healthz_503_with_the_reason_when_counters_cannot_be_read_or_the_loop_stalls(agent):
    tracer = load(agent)
    tracer.broken = True
    status, body = get(agent.url + "/healthz")
    assert status == 503 and body == "the counters cannot be read: Bad file descriptor\n"
    tracer.broken = False
    agent.beat = time.monotonic() - 60
    status, body = get(agent.url + "/healthz")
    assert status == 503 and "has not run for 60 s" in body


def test_metrics_are_read_when_scraped(agent):
    load(agent)
    status, body = get(agent.url + "/metrics")
    assert status == 200
    assert ('netdrop_drops_total{node="node-a",namespace="",pod="",workload="",direction="",category="no-socket",'
            'reason="NO_SOCKET",benign="false"} 42\n') in body
    assert "process_resident_memory_bytes" in body
    assert agent.collector.scrapes == 1
    assert get(agent.url + "/nothing")[0] == 404


def test_clients_beyond_the_limit_are_closed_at_once(agent):
    load(agent)
    host, port = agent.url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port))) for _ in range(serve.MAX_CLIENTS)]
    try:
        time.sleep(0.3)     # each holds a handler thread, waiting for its request
        extra = socket.create_connection((host, int(port)), timeout=5)
        assert extra.recv(1) == b""        # closed without an answer
        extra.close()
    finally:
        for s in idle:
            s.close()
    time.sleep(0.3)
    assert get(agent.url + "/healthz")[0] == 200     # the slots came back
