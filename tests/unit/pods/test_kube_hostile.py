"""The API client's hard limits (pods/apicall, KubeClient) against API servers that
misbehave (lab/hostile.py) and against hostile objects on a well-behaved one (the
lab's API): each call ends by its deadline or its byte cap with one line that
says which, memory stays small, a stop cuts every call off at once."""

import json
import socket
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from tracer.lab import api as labapi
from tracer.lab.api import write_kubeconfig
from tracer.lab.hostile import Hostile
from tracer.pods import apicall, kube
from tracer.pods.attribute import Attribution, PodRef
from tracer.pods.workload import workload_of
from tracer.sinks.metrics import AgentState, DropCollector, Series

from ...timing import allowed
from ..helpers import wait_for


@pytest.fixture
def hostile(tmp_path):
    servers = []

    def start(mode: str) -> kube.KubeClient:
        server = Hostile(mode)
        servers.append(server)
        server.start()
        k = kube.KubeClient(str(server.write_kubeconfig(tmp_path / f"kubeconfig-{mode}")))
        k.hostile = server
        return k

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("mode,says", [
    ("drip", "did not answer within 1.5 s"),
    ("silent", "did not answer within 1.5 s"),
    ("flood", "sent more than 4 MiB in one answer"),
    ("huge-headers", "sent more than 4 MiB in one answer"),
    ("random", "broke off its answer or did not speak HTTP (BadStatusLine)"),
    ("not-http", "broke off its answer or did not speak HTTP (BadStatusLine)"),
    ("bad-json", "answered something that is not JSON"),
    ("gzip-bomb", "answered something that is not JSON"),      # never inflated
])
def test_every_call_ends_within_its_deadline_and_its_byte_cap(hostile, monkeypatch, mode, says):
    monkeypatch.setattr(apicall, "CALL_SECONDS", 1.5)
    k = hostile(mode)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(apicall.KubeUnavailable) as err:
            k.list_pods("node-a")
        took = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"the API server at {k.server} {says}" == str(err.value)
    # One call's deadline (a flood's page is asked again with fewer objects: three calls at most).
    assert took < allowed(3 * 1.5), f"{took:.1f} s"
    # The cap (4 MiB) and the copies http.client makes of it (header lines joined, decoded,
    # parsed: 16 MiB measured), not the gigabytes a flood sends.
    assert peak < 8 * apicall.MAX_RESPONSE_BYTES, f"{peak >> 20} MiB"


def test_within_bounds_all_the_calls_together(hostile):
    k = hostile("drip")
    started = time.monotonic()
    with pytest.raises(apicall.KubeUnavailable, match="did not answer in time"), k.within(1.0):
        k.node_name(None, {"10.0.0.1"})
    assert time.monotonic() - started < allowed(1.0)


def listing_in_a_thread(k: kube.KubeClient) -> tuple[threading.Thread, list[str]]:
    """k.list_pods() running in a thread of its own; the errors it raised, as they come."""
    errors: list[str] = []

    def call() -> None:
        try:
            k.list_pods("node-a")
        except apicall.KubeUnavailable as exc:
            errors.append(str(exc))
    t = threading.Thread(target=call, daemon=True)
    t.start()
    return t, errors


@pytest.mark.parametrize("mode", ["drip", "silent"])
def test_close_cuts_a_call_in_flight_off_at_once(hostile, mode):
    k = hostile(mode)
    t, errors = listing_in_a_thread(k)
    time.sleep(0.5)
    started = time.monotonic()
    k.close()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - started < allowed(0.5)
    assert errors == [f"the API server at {k.server} was cut off: netdrop is stopping"]
    with pytest.raises(apicall.KubeUnavailable, match="was not asked: netdrop is stopping"):
        k.list_pods("node-a")


def kubeconfig_for(path, url):
    return str(write_kubeconfig(path, url, "t"))


def test_a_connect_that_never_completes_is_cut_off_too(monkeypatch, tmp_path):
    """A SYN nobody answers (a listener whose queue is full drops it): the socket is the
    call's before connect(), so close() ends the connect too."""
    monkeypatch.setattr(apicall, "CONNECT_SECONDS", 30.0)
    monkeypatch.setattr(apicall, "CALL_SECONDS", 30.0)
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        queued = socket.create_connection(full.getsockname())     # the one the queue holds
        try:
            k = kube.KubeClient(kubeconfig_for(tmp_path / "kubeconfig", f"http://127.0.0.1:{full.getsockname()[1]}"))
            t, errors = listing_in_a_thread(k)
            time.sleep(1.0)
            assert t.is_alive()         # still connecting
            started = time.monotonic()
            k.close()
            t.join(5)
        finally:
            queued.close()
    assert not t.is_alive() and time.monotonic() - started < allowed(0.5)
    assert errors == [f"the API server at {k.server} was cut off: netdrop is stopping"]


@pytest.mark.parametrize("mode,says", [
    ("watch-flood", "sent a line longer than 4 MiB in the pod watch; relisting"),
    ("watch-drip", "did not end the pod watch within 2 s"),
])
def test_a_bad_watch_ends_relists_and_says_the_same_each_time(hostile, monkeypatch, mode, says):
    """Each bad watch ends with its one line and a relist; the same line each time
    and nothing in between, so PodSource warns once (it warns on a change)."""
    monkeypatch.setattr(kube, "WATCH_SECONDS", 1)
    monkeypatch.setattr(kube, "WATCH_GRACE", 1.0)
    monkeypatch.setattr(kube, "WATCH_BACKOFF", (0.1, 0.2))
    k = hostile(mode)
    said, seen, stop = [], [], threading.Event()
    t = threading.Thread(target=k.watch_pods, args=("node-a", None, seen.append, stop, said.append), daemon=True)
    t.start()
    try:
        lists = lambda: sum(1 for r in k.hostile.requests if "watch=" not in r)     # noqa: E731
        assert wait_for(lambda: lists() >= 3, 30)        # relisted after each bad watch
    finally:
        stop.set()
        k.close()
        t.join(5)
    assert not t.is_alive() and len(seen) >= 3
    assert said and set(said) == {f"the API server at {k.server} {says}"}


# -- hostile objects on a well-behaved API server --

class Names:
    def reason_name(self, code):
        return "NO_SOCKET"

    def location_name(self, addr):
        return "__udp4_lib_rcv"


def scrape(info) -> bytes:
    ref = PodRef(info.namespace, info.name, info.uid, info.node)
    series = Series(Names(), lambda tag: Attribution(ref, "in-pod"), lambda who: workload_of(info).name)
    collector = DropCollector("node-a", series, lambda: {(1, 2, 0x10, 1 << 2 | 1, 0): 3},
                              lambda counts: AgentState(0, 0, (), None), lambda: None, "0.1.0", "6.1.0")
    return collector.render()[0]


@pytest.fixture
def api(tmp_path):
    server = labapi.KubeAPI()
    server.start()
    server.kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    yield server
    server.stop()


def test_a_huge_owner_name_costs_a_scrape_what_a_name_may_cost(api):
    """A 1.4 MB ownerReference name (the API server checks only that it is not empty)
    made every scrape 5.6 MB."""
    api.put_pod(labapi.pod_object("web-0", "default", "node-a", ["10.244.1.10"], "192.168.1.5", owner="w" * 1_400_000))
    [pod] = kube.KubeClient(str(api.kubeconfig)).list_pods("node-a")[0]
    body = scrape(pod)
    assert len(body) < 2048 and b"w" * 200 in body


def test_a_lone_surrogate_from_the_api_never_reaches_a_scrape(api):
    """JSON may say "\\ud800"; that text cannot be written as UTF-8: every scrape failed with a 500."""
    api.put_pod(labapi.pod_object("web-0", "default", "node-a", ["10.244.1.10"], "192.168.1.5", owner="web\ud800"))
    [pod] = kube.KubeClient(str(api.kubeconfig)).list_pods("node-a")[0]
    assert b'workload="web\\\\ud800~' in scrape(pod)


class Paging(BaseHTTPRequestHandler):
    """Pods listed a page at a time (limit and continue, as the API server does); one
    pod's name has a byte that is not UTF-8."""

    pods = [{"metadata": {"name": f"pod-{i}", "namespace": "default", "uid": f"u{i}",
                          "annotations": {"padding": "x" * 10_000}}, "spec": {"nodeName": "node-a"}}
            for i in range(30)]
    limits: list[int] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        q = {k: v[-1] for k, v in parse_qs(urlparse(self.path).query).items()}
        limit, start = int(q.get("limit", 500)), int(q.get("continue", 0))
        self.limits.append(limit)
        items = self.pods[start:start + limit]
        more = start + limit < len(self.pods)
        body = json.dumps({"kind": "PodList", "metadata": {"resourceVersion": "7",
                                                           **({"continue": str(start + limit)} if more else {})},
                           "items": items}).encode().replace(b"pod-7", b"pod-\xff7")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_pages_too_large_are_asked_again_with_fewer_objects(tmp_path, monkeypatch):
    monkeypatch.setattr(apicall, "MAX_RESPONSE_BYTES", 64 << 10)    # 6 pods of 10 KiB
    server = ThreadingHTTPServer(("127.0.0.1", 0), Paging)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        path = kubeconfig_for(tmp_path / "kubeconfig", f"http://127.0.0.1:{server.server_address[1]}")
        pods, rv = kube.KubeClient(path).list_pods("node-a")
    finally:
        server.shutdown()
        server.server_close()
    assert len(pods) == 30 and rv == "7"
    assert Paging.limits[:2] == [100, 10] and set(Paging.limits[2:]) == {1}
    # One odd byte does not lose the list: replaced, and the name made safe.
    assert pods[7].name.startswith("pod-\ufffd7~")


def test_an_object_too_large_to_read_alone_is_left_out_and_the_list_goes_on(tmp_path, monkeypatch):
    """A pod whose JSON alone is over the cap (text that JSON escapes six-fold makes a
    1.5 MiB object 9 MiB): left out with one warning, every other pod listed."""
    monkeypatch.setattr(apicall, "MAX_RESPONSE_BYTES", 64 << 10)
    monkeypatch.setattr(Paging, "pods", [dict(p) for p in Paging.pods])
    monkeypatch.setattr(Paging, "limits", [])
    Paging.pods[12] = {"metadata": {"name": "huge", "namespace": "default", "uid": "u-huge",
                                    "annotations": {"padding": "\x01" * 20_000}}}      # 120 KB as JSON
    Paging.pods[29] = dict(Paging.pods[12], metadata=dict(Paging.pods[12]["metadata"], name="huge-last"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Paging)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    warnings: list[str] = []
    try:
        k = kube.KubeClient(kubeconfig_for(tmp_path / "kubeconfig", f"http://127.0.0.1:{server.server_address[1]}"),
                            warn=warnings.append)
        pods, _ = k.list_pods("node-a")
        again, _ = k.list_pods("node-a")
    finally:
        server.shutdown()
        server.server_close()
    assert [p.name for p in pods] == [p.name for p in again] == \
        [f"pod-{i}" if i != 7 else pods[7].name for i in range(30) if i not in (12, 29)]
    assert k.left_out == 4 and warnings == [f"pods: an object from the API server at {k.server} is over 64 KiB "
                                            f"as JSON: left out (told once)"]


class Endless(BaseHTTPRequestHandler):
    """Ignores `limit`: every page 50,000 tiny pods, and always one more page."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        page = json.dumps({"kind": "PodList", "metadata": {"resourceVersion": "1", "continue": "more"},
                           "items": [{"metadata": {"name": "p"}}] * 50_000}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)


def test_a_list_without_end_ends(tmp_path):
    """Pages of tiny objects, without end: the list stops at MAX_OBJECTS, small in memory."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    tracemalloc.start()
    try:
        k = kube.KubeClient(kubeconfig_for(tmp_path / "kubeconfig", f"http://127.0.0.1:{server.server_address[1]}"))
        with pytest.raises(apicall.KubeUnavailable, match="listed more than 20,000 objects"):
            k.list_pods("node-a")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        server.shutdown()
        server.server_close()
    assert peak < 8 * apicall.MAX_RESPONSE_BYTES, f"{peak >> 20} MiB"
