"""httpd: the agent's HTTP server against hostile clients, with plain sockets on 127.0.0.1.

Deadlines per request (not per read), header limits, idle connections that
cost no thread, the oldest waiting connection dropped past the cap, GET/HEAD
only, the Gate asked for every path but the probes', TLS, and a quick close.
Limits are made small here so that each test takes a second or two; what
must happen within a time is allowed the slack of a busy machine (timing.py).
"""

import http.client
import re
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer.agent import httpd
from tracer.agent.access import ALLOWED, Open, Verdict

from ...timing import allowed
from ..helpers import request

FAST = httpd.Limits(request_seconds=1.0, idle_seconds=1.0, connections=32)


def ok(request):
    return httpd.Response(200, b"ok\n")


def metrics(request):
    return httpd.Response(200, b"metrics\n")


ROUTES = {"/healthz": httpd.Route(ok, gated=False), "/metrics": httpd.Route(metrics)}


class Server:
    def __init__(self, gate=None, limits=FAST, routes=ROUTES, tls=None):
        self.server = httpd.Server("127.0.0.1", 0, routes, gate or Open(), tls, limits)
        self.server.start()
        self.port = self.server.port

    def connect(self, timeout=10.0):
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def get(self, path="/healthz", method="GET", timeout=5.0, **headers):
        return request(self.port, path, method, timeout, **headers)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.server.close()


def exchange(sock, data, wait=5.0):
    """Send data, then read until the server closes: what it answered."""
    if data:
        sock.sendall(data)
    sock.settimeout(wait)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got


def status_of(answer):
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    return int(m.group(1)) if m else None


def closed(sock, within):
    """True once the server has closed the connection (EOF or reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def rss_kib():
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def test_a_slow_header_client_is_cut_at_the_deadline_while_probes_answer(server):
    """A byte every 0.1 s never lets a per-read timeout fire; the deadline counts
    from the accept, so the request is cut at ~1 s, and /healthz answers all along."""
    slow = [server.connect() for _ in range(20)]
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    t0 = time.monotonic()
    cut_at: dict[int, float] = {}
    probes = []
    i = 0
    while len(cut_at) < len(slow) and time.monotonic() - t0 < 10:
        for n, s in enumerate(slow):
            if n in cut_at:
                continue
            try:
                s.send(request[i:i + 1])
            except OSError:
                cut_at[n] = time.monotonic() - t0
        i += 1
        p0 = time.monotonic()
        status, _, body = server.get()
        probes.append((status, time.monotonic() - p0))
        time.sleep(0.1)
    for s in slow:
        s.close()
    assert len(cut_at) == len(slow), "slow clients were never cut"
    assert all(0.9 <= t < allowed(FAST.request_seconds) for t in cut_at.values()), sorted(cut_at.values())
    assert probes and all(status == 200 for status, _ in probes)
    assert max(took for _, took in probes) < allowed(1.0), max(took for _, took in probes)     # the kubelet's 1 s


def test_many_idle_connections_cost_no_thread_and_past_the_cap_the_oldest_go():
    s = Server(limits=httpd.Limits(request_seconds=30, idle_seconds=30, connections=64))
    try:
        threads = set(threading.enumerate())
        idle = [s.connect() for _ in range(200)]
        status, _, _ = s.get()          # the probe gets in: the oldest waiting one made room
        assert status == 200
        # No thread of its own per connection (a thread another test left may end meanwhile).
        assert not set(threading.enumerate()) - threads
        deadline = time.monotonic() + 10
        while s.server.connections > 64 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.server.connections <= 64
        # The first ones were dropped, the last 63 are still held.
        assert all(closed(sock, 5) for sock in idle[:100])
        assert not any(closed(sock, 0.01) for sock in idle[-40:])
        for sock in idle:
            sock.close()
    finally:
        s.server.close()


def test_the_answer_in_the_making_survives_the_cap():
    """Past the cap, connections waiting for their request go first: one whose
    answer is in the making (a slow render) keeps its place."""
    release = threading.Event()

    def slow(request):
        release.wait(5)
        return httpd.Response(200, b"rendered\n")

    s = Server(limits=httpd.Limits(request_seconds=10, idle_seconds=10, connections=4),
               routes={**ROUTES, "/slow": httpd.Route(slow)})
    try:
        busy = s.connect()
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(0.3)
        others = [s.connect() for _ in range(6)]
        time.sleep(0.3)
        release.set()
        answer = exchange(busy, b"")
        assert status_of(answer) == 200 and answer.endswith(b"rendered\n")
        assert closed(others[0], 5) and closed(others[1], 5)     # the oldest waiting ones went instead
        for sock in others:
            sock.close()
    finally:
        s.server.close()


def test_oversized_headers_are_refused_431_and_their_memory_not_kept(server):
    """What grew the old server by 220 MiB: requests of 99 headers of 64 KiB.
    Each is refused once its headers pass the limit; the server has read a few
    KiB of it, not 6 MiB, and keeps nothing."""
    field = b"X-Big: " + b"a" * 65536 + b"\r\n"
    before = rss_kib()
    for _ in range(3):
        socks = [server.connect() for _ in range(8)]
        for sock in socks:
            answer = exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + field)
            assert status_of(answer) == 431, answer[:100]
            assert b"Connection: close" in answer
            sock.close()
    grown = (rss_kib() - before) / 1024
    assert grown < 32, f"{grown:.0f} MiB kept"
    assert server.get()[0] == 200


def test_too_many_header_fields_are_refused_431(server):
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(FAST.headers + 1))
    with server.connect() as sock:
        assert status_of(exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")) == 431
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(FAST.headers - 2))   # with Host and Connection: the limit
    with server.connect() as sock:
        answer = exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fields + b"\r\n")
        assert status_of(answer) == 200


@pytest.mark.parametrize("request_bytes,status", [
    (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 405),
    (b"DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    (b"GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\n\r\n", 400),                   # HTTP/1.1 without Host
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400),   # TLS to a plain server
])
def test_what_is_not_a_plain_get_is_refused_and_closed(server, request_bytes, status):
    with server.connect() as sock:
        answer = exchange(sock, request_bytes)
    assert status_of(answer) == status, answer[:200]
    assert b"Connection: close" in answer
    if status == 405:
        assert b"Allow: GET, HEAD\r\n" in answer


def test_keep_alive_serves_requests_in_turn_until_idle(server):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for _ in range(3):
        c.request("GET", "/healthz")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"ok\n")
    sock = c.sock
    assert closed(sock, FAST.idle_seconds + 3)         # the idle timeout closes it
    c.close()
    with server.connect() as sock:        # two requests sent at once are answered in turn
        answer = exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200 ") == 2 and answer.endswith(b"metrics\n")


class Tokens:
    """A gate: token "good" may read everything, "weak" is known but not permitted."""

    def __init__(self, delay=0.0):
        self.asked = []
        self.delay = delay

    def cached(self, path, authorization):
        return None         # every request asked, in a worker thread

    def ask(self, path, authorization):
        self.asked.append((path, authorization))
        time.sleep(self.delay)
        if authorization == "Bearer good":
            return ALLOWED
        if authorization == "Bearer weak":
            return Verdict(403, f"forbidden: cannot get {path}")
        return Verdict(401, "a bearer token is needed")


def test_the_gate_is_asked_for_every_path_but_the_probes():
    gate = Tokens()
    s = Server(gate=gate)
    try:
        assert s.get("/healthz")[0] == 200
        assert gate.asked == []
        status, headers, body = s.get("/metrics")
        assert (status, body) == (401, b"a bearer token is needed\n")
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert s.get("/metrics", Authorization="Bearer weak")[::2] == (403, b"forbidden: cannot get /metrics\n")
        assert s.get("/metrics", Authorization="Bearer good")[::2] == (200, b"metrics\n")
        # An unknown path says nothing before the gate has said yes.
        assert s.get("/nothing")[0] == 401
        assert s.get("/nothing?x=1", Authorization="Bearer good")[0] == 404
        assert gate.asked == [("/metrics", None), ("/metrics", "Bearer weak"), ("/metrics", "Bearer good"),
                              ("/nothing", None), ("/nothing", "Bearer good")]
        with s.connect() as sock:
            answer = exchange(sock, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\n"
                                    b"Authorization: Bearer weak\r\nConnection: close\r\n\r\n")
        assert status_of(answer) == 400
    finally:
        s.server.close()


def test_a_gate_slower_than_the_deadline_holds_neither_the_probes_nor_the_exit():
    s = Server(gate=Tokens(delay=3.0))
    try:
        stuck = [s.connect() for _ in range(8)]
        for sock in stuck:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\n\r\n")
        t0 = time.monotonic()
        assert s.get()[0] == 200 and time.monotonic() - t0 < allowed(1.0)
        assert all(closed(sock, allowed(1.0)) for sock in stuck)   # cut at the 1 s deadline, not answered at 3 s
        for sock in stuck:
            sock.close()
    finally:
        t0 = time.monotonic()
        s.server.close()
        assert time.monotonic() - t0 < allowed(0.5)


def test_close_is_quick_with_connections_and_a_blocked_answer():
    release = threading.Event()
    s = Server(limits=httpd.Limits(request_seconds=30, idle_seconds=30),
               routes={**ROUTES, "/block": httpd.Route(lambda r: release.wait(10) and ok(r))})
    held = [s.connect() for _ in range(50)]
    blocked = s.connect()
    blocked.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    t0 = time.monotonic()
    s.server.close()
    took = time.monotonic() - t0
    release.set()
    assert took < allowed(0.5), took
    assert all(closed(sock, 2) for sock in [*held, blocked])
    with pytest.raises(OSError):
        s.connect(timeout=1).close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_tls_serves_and_a_silent_handshake_is_cut_at_the_deadline(certificate):
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    s = Server(tls=context, gate=Tokens())
    try:
        client = ssl.create_default_context(cafile=str(cert))
        c = http.client.HTTPSConnection("127.0.0.1", s.port, context=client, timeout=5)
        for _ in range(2):          # kept alive
            c.request("GET", "/metrics", headers={"Authorization": "Bearer good"})
            r = c.getresponse()
            assert (r.status, r.read()) == (200, b"metrics\n")
        c.close()
        with client.wrap_socket(s.connect(), server_hostname="127.0.0.1") as tls:   # refused, read whole
            answer = exchange(tls, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n")
        assert status_of(answer) == 431 and answer.endswith(b"request headers too large\n")
        silent = [s.connect() for _ in range(10)]       # connect, never say hello
        dripping = s.connect()
        hello = b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + b"\x00" * 200
        t0 = time.monotonic()
        cut = None
        for i in range(60):
            try:
                dripping.send(hello[i:i + 1])
            except OSError:
                cut = time.monotonic() - t0
                break
            time.sleep(0.1)
        t1 = time.monotonic()
        plain = http.client.HTTPSConnection("127.0.0.1", s.port, context=client, timeout=5)
        plain.request("GET", "/healthz")
        assert plain.getresponse().status == 200 and time.monotonic() - t1 < allowed(1.0)
        assert cut is not None and cut < allowed(FAST.request_seconds), cut
        assert all(closed(sock, allowed(1.0)) for sock in silent)
        for sock in [*silent, dripping]:
            sock.close()
    finally:
        s.server.close()


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | st.builds(lambda a, b: a + b"\r\n" + b, st.sampled_from(
    [b"GET / HTTP/1.1", b"HEAD /healthz HTTP/1.0", b"GET /metrics HTTP/1.1\r\nHost: x"]), st.binary(max_size=200)))
def test_any_bytes_get_an_http_answer_or_a_close_and_the_server_goes_on(server, data):
    with server.connect() as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = exchange(sock, b"", wait=5)
    assert answer == b"" or status_of(answer) in (200, 400, 404, 405, 431), answer[:200]


def test_after_hostile_input_the_server_still_answers(server):
    for data in (b"\x00" * 100, b"GET /\xff HTTP/1.1\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\r\n" * 5000):
        with server.connect() as sock:
            exchange(sock, data)
    assert server.get()[0] == 200


def test_calls_waiting_for_busy_threads_are_bounded():
    """Every thread blocked (an API server that does not answer): past WAITING_CALLS queued,
    new calls are refused at once instead of piling up with their requests' memory."""
    pool = httpd._Workers("test", 1)
    pool.start()
    release = threading.Event()
    try:
        first = pool.submit(release.wait, 10)
        deadline = time.monotonic() + 5
        while not first.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        waiting = [pool.submit(lambda: None) for _ in range(httpd.WAITING_CALLS)]
        with pytest.raises(httpd.Busy):
            pool.submit(lambda: None)
        release.set()
        for f in waiting:
            f.result(5)
        pool.submit(lambda: None).result(5)     # room again once the threads took them
    finally:
        release.set()
        pool.stop()
