"""A capture's files from the agent to the user: GET /captures/<namespace>/<name>/<file> on the
agent's real HTTPS server, its gate asking the lab API server (TokenReview, SubjectAccessReview)
through the real kubernetes client, and kubectl/fetch.py on the other end, trusting exactly the
certificate the report names."""

import hashlib
import http.client
import os
import socket
import ssl
import time
from datetime import UTC, datetime

import pytest

from tracer.agent import endpoints, httpd
from tracer.agent.access import Attributes, Identity, KubeGate, check
from tracer.agent.capturefiles import CaptureStore
from tracer.agent.reviews import KubeReviewer
from tracer.captures.spec import Capture, CaptureSpec, PodSelection
from tracer.kubectl.fetch import NO_TOKEN, FetchError, fetch, token_of
from tracer.lab import api as labapi
from tracer.pods.kube import KubeClient
from tracer.tlsconf import load_pem, make_certificate

from ...timing import allowed

NODE = Attributes("get", "nodes", "metrics", "node-a")
SPEC = CaptureSpec(PodSelection(("web-0",)), None, 60.0)
EVENTS = os.urandom(3 * 1024 * 1024 + 17)       # several pieces, and not a whole number of them
SUMMARY = b'{"total": 42}\n'


def store_with_captures(root):
    store = CaptureStore(root)
    for ns, name, uid, files in (("shop", "web-drops", "0a1b2c3d-1", {"events.jsonl": EVENTS,
                                                                      "summary.json": SUMMARY}),
                                 ("other", "db-drops", "4e5f6a7b-2", {"summary.json": b"{}\n"})):
        out = store.open(Capture(ns, name, uid, datetime(2026, 12, 7, tzinfo=UTC), SPEC))
        try:
            for f, data in files.items():
                with os.fdopen(out.create(f), "wb") as w:
                    w.write(data)
        finally:
            out.close()
    return store


class Site:
    """The lab API server, users, and one node's agent serving its capture store over HTTPS."""

    def __init__(self, tmp_path, piece_seconds=10.0):
        self.api = labapi.KubeAPI()
        self.api.start()
        kubeconfig = self.api.write_kubeconfig(tmp_path / "kubeconfig")
        self.alice = self.api.add_user("alice")          # may fetch shop/web-drops' files
        self.bob = self.api.add_user("bob")              # may fetch nothing
        self.prom = self.api.add_user("prom")            # may scrape the node's metrics
        self.api.grant("alice", "get", "netdropcaptures", "files", "web-drops", group="netdrop.io", namespace="shop")
        self.api.grant("prom", "get", "nodes", "metrics", "node-a")
        cert_pem, key_pem = make_certificate("node-a", ["127.0.0.1"])
        self.sha256 = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem.decode())).hexdigest()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        load_pem(context, cert_pem, key_pem)
        self.agent = endpoints.Agent()
        self.agent.files.store = store_with_captures(tmp_path / "captures")
        self.agent.files.piece_seconds = piece_seconds
        gate = KubeGate(KubeReviewer(KubeClient(str(kubeconfig))), NODE)
        limits = httpd.Limits(request_seconds=2.0, idle_seconds=2.0)
        self.server = httpd.Server("127.0.0.1", 0, self.agent.routes(), gate, context, limits)
        self.server.start()
        self.endpoint = f"https://127.0.0.1:{self.server.port}"

    def fetch(self, token, namespace, name, file, dest, max_bytes=1 << 30, sha256=None):
        return fetch(self.endpoint, self.sha256 if sha256 is None else sha256, token, namespace, name, file,
                     dest, max_bytes)

    def get(self, path, token=None):
        """A raw HTTPS request, the certificate unchecked: what any client on the network may send."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        c = http.client.HTTPSConnection("127.0.0.1", self.server.port, context=context, timeout=10)
        try:
            c.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def close(self):
        self.server.close()
        self.agent.files.close()
        self.api.stop()


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.close()


def test_a_granted_user_fetches_the_stored_bytes(site, tmp_path):
    dest = tmp_path / "node-a-events.jsonl"
    assert site.fetch(site.alice, "shop", "web-drops", "events.jsonl", dest) == len(EVENTS)
    assert dest.read_bytes() == EVENTS
    assert os.stat(dest).st_mode & 0o777 == 0o600
    site.fetch(site.alice, "shop", "web-drops", "summary.json", tmp_path / "summary.json")
    assert (tmp_path / "summary.json").read_bytes() == SUMMARY


def test_no_token_is_401_and_a_user_without_the_grant_403(site, tmp_path):
    status, body = site.get("/captures/shop/web-drops/events.jsonl")
    assert status == 401
    with pytest.raises(FetchError, match="403 bob may not get netdropcaptures/files shop/web-drops"):
        site.fetch(site.bob, "shop", "web-drops", "events.jsonl", tmp_path / "x")
    # The node's metrics and a capture's files are separate grants, both ways.
    with pytest.raises(FetchError, match="403 prom may not get netdropcaptures/files"):
        site.fetch(site.prom, "shop", "web-drops", "events.jsonl", tmp_path / "x")
    assert site.get("/metrics", site.alice)[0] == 403
    assert site.get("/metrics", site.prom)[0] == 200
    with pytest.raises(FetchError, match="no bearer token"):
        site.fetch(None, "shop", "web-drops", "events.jsonl", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_capture_the_grant_does_not_name_is_not_served(site, tmp_path):
    with pytest.raises(FetchError, match="403 alice may not get netdropcaptures/files other/db-drops"):
        site.fetch(site.alice, "other", "db-drops", "summary.json", tmp_path / "x")
    # Her grant is a RoleBinding in shop: the same name in another namespace is not hers.
    with pytest.raises(FetchError, match="403 alice may not get netdropcaptures/files other/web-drops"):
        site.fetch(site.alice, "other", "web-drops", "summary.json", tmp_path / "x")
    with pytest.raises(FetchError, match="404 no such capture file"):
        site.fetch(site.alice, "shop", "web-drops", "drops.pcapng", tmp_path / "x")     # never made
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("path", [
    "/captures/shop/web-drops/.netdrop-capture.json", "/captures/shop/../../../etc/passwd",
    "/captures/shop/web-drops/../web-drops/events.jsonl", "/captures/shop/web-drops%2fevents.jsonl",
    "/captures/shop/web-drops/events.jsonl/", "/captures/", "/captures/shop/web-drops",
])
def test_nothing_but_a_capture_file_is_served(site, path):
    # Asked as any path that names no capture (the node's metrics): prom may, and finds nothing.
    status, body = site.get(path, site.prom)
    assert status == 404 and body == b"no such capture file on this node\n"
    assert site.get(path, site.alice)[0] == 403


def test_fetch_refuses_a_certificate_with_another_fingerprint_before_sending_the_token(site, tmp_path):
    reviews = dict(site.api.reviews)
    other = hashlib.sha256(b"another certificate").hexdigest()
    with pytest.raises(FetchError, match=r"not the one its report names \(.*\); refused, the token was not sent"):
        site.fetch(site.alice, "shop", "web-drops", "events.jsonl", tmp_path / "x", sha256=other)
    assert site.api.reviews == reviews and not (tmp_path / "x").exists()
    for bad in ("", "zz" * 32):         # no certificate named, or no SHA-256: refused, no plain http either
        with pytest.raises(FetchError, match="certificate|SHA-256"):
            site.fetch(site.alice, "shop", "web-drops", "events.jsonl", tmp_path / "x", sha256=bad)
    assert site.api.reviews == reviews


def test_fetch_writes_a_new_file_only_and_within_its_byte_bound(site, tmp_path):
    dest = tmp_path / "events.jsonl"
    dest.write_bytes(b"kept")
    with pytest.raises(FetchError, match="exists already"):
        site.fetch(site.alice, "shop", "web-drops", "events.jsonl", dest)
    assert dest.read_bytes() == b"kept"
    target = tmp_path / "target"
    target.write_bytes(b"kept too")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(FetchError, match="cannot create"):
        site.fetch(site.alice, "shop", "web-drops", "events.jsonl", tmp_path / "link")
    assert target.read_bytes() == b"kept too"
    with pytest.raises(FetchError, match="more than the 1000000 allowed"):
        site.fetch(site.alice, "shop", "web-drops", "events.jsonl", tmp_path / "big", max_bytes=1_000_000)
    assert not (tmp_path / "big").exists()


def test_a_client_that_stops_reading_is_cut_and_the_agent_goes_on(tmp_path):
    site = Site(tmp_path, piece_seconds=0.5)
    big = os.urandom(64 * 1024 * 1024)          # more than any socket buffers between the two
    out = site.agent.files.store.open(Capture("shop", "big", "99999999-x", datetime(2026, 12, 7, tzinfo=UTC), SPEC))
    with os.fdopen(out.create("events.jsonl"), "wb") as w:
        w.write(big)
    out.close()
    site.api.grant("alice", "get", "netdropcaptures", "files", "big", group="netdrop.io", namespace="shop")
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)       # before connecting: a small window
        raw.connect(("127.0.0.1", site.server.port))
        stuck = context.wrap_socket(raw)
        stuck.sendall(b"GET /captures/shop/big/events.jsonl HTTP/1.1\r\nHost: x\r\n"
                      b"Authorization: Bearer " + site.alice.encode() + b"\r\n\r\n")
        time.sleep(0.2)
        t0 = time.monotonic()
        got = 0
        # Nothing read for a while, then read: the connection has been cut long before the file's end.
        time.sleep(allowed(0.5))
        stuck.settimeout(5)
        try:
            while chunk := stuck.recv(65536):
                got += len(chunk)
        except (ConnectionResetError, ssl.SSLError):
            pass
        assert got < len(big) // 2 and time.monotonic() - t0 < allowed(5.0)
        stuck.close()
        # Meanwhile and after: others are served, whole.
        assert site.fetch(site.alice, "shop", "web-drops", "events.jsonl", tmp_path / "x") == len(EVENTS)
    finally:
        site.close()


def test_a_grant_in_one_namespace_is_asked_for_that_namespace_and_metrics_as_before():
    """What the gate asks the API server, per path (a RoleBinding's namespace decides)."""
    asked = []

    class Reviewer:
        def authenticate(self, token):
            return Identity("alice") if token == "alice" else None

        def authorize(self, who, attrs):
            asked.append(attrs)
            return attrs.namespace == "shop"

    g = KubeGate(Reviewer(), NODE)
    assert check(g, "/captures/shop/web-drops/events.jsonl", "Bearer alice").allowed
    assert check(g, "/captures/other/web-drops/events.jsonl", "Bearer alice").status == 403
    assert check(g, "/metrics", "Bearer alice").status == 403
    assert check(g, "/captures/shop/web-drops/summary.json", "Bearer alice").allowed      # kept: not asked again
    assert asked == [Attributes("get", "netdropcaptures", "files", "web-drops", "shop", "netdrop.io"),
                     Attributes("get", "netdropcaptures", "files", "web-drops", "other", "netdrop.io"), NODE]


def test_token_of_a_kubeconfig_with_a_token_and_one_with_client_certificates():
    class Configuration:
        def __init__(self, api_key):
            self.api_key = api_key

    assert token_of(Configuration({"authorization": "Bearer abc.def"})) == "abc.def"
    assert token_of(Configuration({})) is None
    assert "TokenReview" in NO_TOKEN and "\n" not in NO_TOKEN
