"""serve: --listen parsed, and the agent's HTTP side (/metrics, /healthz, shared renders, gzip) on 127.0.0.1."""

import gzip
import threading
import time
import urllib.error
import urllib.request

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer.agent import endpoints as serve
from tracer.agent import httpd
from tracer.agent.access import Open
from tracer.errors import UserError
from tracer.kernel.loader import Hook, Stats
from tracer.pods.attribute import NO_POD
from tracer.sinks.metrics import AgentState, DropCollector, Series

from ...timing import allowed
from ..helpers import request


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
        return {(1, 2, 0x10, 0, 0): 42}


class Names:
    def reason_name(self, code):
        return "NO_SOCKET"

    def location_name(self, addr):
        return "__udp4_lib_rcv"


@pytest.fixture
def agent():
    a = serve.Agent()
    server = httpd.Server("127.0.0.1", 0, a.routes(), Open())
    server.start()
    a.url = f"http://127.0.0.1:{server.port}"
    a.port = server.port
    yield a
    server.close()


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


def fetch(agent, path="/metrics", method="GET", **headers):
    return request(agent.port, path, method, **headers)


def test_scrapes_at_once_share_one_render_and_a_second_later_a_new_one(agent):
    """Eight scrapers at once (two Prometheus replicas, say) cost one read of
    the kernel's maps, not eight; a scrape a second later reads them again."""
    tracer = load(agent)
    reads = []
    slow = threading.Event()

    def counts():
        reads.append(time.monotonic())
        slow.wait(0.3)          # a render that takes a while: the others come during it
        return {(1, 2, 0x10, 0, 0): 42 + len(reads)}

    tracer.counts = counts
    agent.collector._counts = counts
    got = []
    threads = [threading.Thread(target=lambda: got.append(fetch(agent))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert [status for status, _, _ in got] == [200] * 8
    assert len({body for _, _, body in got}) == 1 and b"} 43\n" in got[0][2]
    assert len(reads) == 1
    time.sleep(serve.RENDER_SECONDS + 0.1)
    status, _, body = fetch(agent)
    assert status == 200 and b"} 44\n" in body and len(reads) == 2
    assert agent.served == 9


def test_healthz_answers_while_a_render_reads_the_maps(agent):
    """A render of 10,000 series on a busy node takes a while; the probe does not wait for it."""
    tracer = load(agent)
    release, reading = threading.Event(), threading.Event()

    def counts():
        reading.set()
        release.wait(10)
        return tracer.counts()

    agent.collector._counts = counts
    scrape = threading.Thread(target=fetch, args=(agent,))
    scrape.start()
    try:
        assert reading.wait(5)
        t0 = time.monotonic()
        assert get(agent.url + "/healthz")[0] == 200
        assert time.monotonic() - t0 < allowed(1.0)     # not the 10 s the render is held
    finally:
        release.set()
        scrape.join(10)


def test_each_format_is_rendered_for_itself(agent):
    load(agent)
    _, text_headers, text = fetch(agent, Accept="text/plain;version=0.0.4")
    _, om_headers, om = fetch(agent, Accept="application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
    assert text_headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert om_headers["Content-Type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert om.endswith(b"# EOF\n") and b"# EOF" not in text
    # A version of the client's own making never comes back (nor makes a new cache entry).
    _, headers, _ = fetch(agent, Accept="application/openmetrics-text;version=9.9.9\tx")
    assert headers["Content-Type"] == serve.OPENMETRICS
    assert set(agent.bodies._slots) == {False, True}


def test_gzip_when_asked_the_same_text_compressed(agent):
    load(agent)
    status, headers, plain = fetch(agent)
    assert status == 200 and "Content-Encoding" not in headers and headers["Vary"] == "Accept-Encoding"
    status, headers, packed = fetch(agent, **{"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
    assert int(headers["Content-Length"]) == len(packed) < len(plain)
    assert gzip.decompress(packed) == plain
    assert "Content-Encoding" not in fetch(agent, **{"Accept-Encoding": "gzip;q=0, identity"})[1]


def test_head_gives_the_get_headers_and_no_body(agent):
    load(agent)
    _, get_headers, body = fetch(agent)
    status, headers, nothing = fetch(agent, method="HEAD")
    assert status == 200 and nothing == b""
    assert headers["Content-Length"] == get_headers["Content-Length"] == str(len(body))
    assert fetch(agent, "/healthz", method="HEAD")[:3:2] == (200, b"")


def test_a_failed_read_of_the_counters_is_one_line_and_the_agent_goes_on(agent):
    tracer = load(agent)

    def broken():
        raise OSError("Bad file descriptor")

    agent.collector._counts = broken
    status, _, body = fetch(agent)
    assert (status, body) == (500, b"netdrop: cannot read the counters: Bad file descriptor\n")
    agent.collector._counts = tracer.counts
    assert fetch(agent)[0] == 200       # a failure is not kept: the next scrape renders


def test_only_get_and_head(agent):
    load(agent)
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        status, headers, body = fetch(agent, method=method)
        assert (status, headers.get("Allow")) == (405, "GET, HEAD"), method
    assert fetch(agent, "/")[0] == 200


@given(st.text(max_size=80) | st.lists(st.sampled_from(
    ["application/openmetrics-text", "text/plain", "gzip", "x-gzip", "*", "identity", ";q=0", ";q=0.5", ";Q=1",
     ";q=nan", ";q=", ";version=1.0.0", ",", " "]), max_size=8).map("".join))
def test_any_accept_field_gives_one_of_the_two_formats(accept):
    """Parsers of what any client sends: an answer for every text, never an exception."""
    om = serve.wants_openmetrics(accept)
    gz = httpd.accepts_gzip(accept)
    assert om in (True, False) and gz in (True, False)
    if om:
        assert "application/openmetrics-text" in accept.lower()
    if gz:
        assert "gzip" in accept.lower() or "*" in accept


@pytest.mark.parametrize("field,want", [
    ("gzip", True), ("gzip, deflate", True), ("deflate, GZIP;q=0.1", True), ("x-gzip", True), ("*", True),
    ("gzip;q=0", False), ("*;q=0", False), ("identity", False), ("", False), (None, False),
    ("gzip;q=0, *", False), ("gzip;q=nan", False), ("gzip;q=bad", False)])
def test_accept_encoding_as_rfc_9110_reads_it(field, want):
    assert httpd.accepts_gzip(field) is want
