"""netdrop serve scraped by a real Prometheus: two agents serve the two nodes of
the simulated cluster (--node-netns), drops are made in pods of both, and
PromQL through Prometheus's HTTP API gives per node, pod and category exactly
what the kernel itself counted (UdpNoPorts in each pod's namespace, FragFails
in node1's). promtool accepts /metrics; every dashboard panel's query runs on
that Prometheus and returns series. Prometheus (Debian's) runs on 127.0.0.1
with its own configuration and TSDB in a temporary directory, removed after.

Prometheus scrapes as deploy/'s example does: HTTPS (a certificate from a
Secret: here one of a CA the test makes) with the bearer token of its service
account, which the lab's API server accepts and lets get nodes/metrics.
"""

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tracer.lab.cases import CASES

from tracer.lab.shell import in_netns
from tracer.tlsconf import make_certificate

from ...timing import allowed
from ..conftest import NETDROP, Netdrop
from ..prometheus import Prometheus, free_port, get

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "deploy" / "grafana-dashboard.json"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif((PROMETHEUS is None or PROMTOOL is None) and os.environ.get("CI") != "true",
                                reason="Debian's prometheus is not installed (scripts/setup installs it)")


class Agent(Netdrop):
    READY = "netdrop: serving"


PROMETHEUS_USER = "system:serviceaccount:monitoring:prometheus-k8s"


class Serving:
    """A CA, the agents' serving certificate from it (127.0.0.1), and a client context that trusts it."""

    def __init__(self, tmp: Path):
        ca = make_certificate("test-ca", [], ca=True)
        cert, key = make_certificate("netdrop", ["127.0.0.1"], issuer_pem=ca)
        self.ca_file, self.cert_file, self.key_file = tmp / "ca.crt", tmp / "tls.crt", tmp / "tls.key"
        self.ca_file.write_bytes(ca[0])
        self.cert_file.write_bytes(cert)
        self.key_file.write_bytes(key)
        self.key_file.chmod(0o600)
        self.client = ssl.create_default_context(cafile=str(self.ca_file))

    def args(self) -> list[str]:
        return ["--auth", "kubernetes", "--tls-cert-file", str(self.cert_file), "--tls-key-file", str(self.key_file)]


def snmp(ns: str, table: str, field: str) -> int:
    """A counter of /proc/net/snmp as the namespace sees it: the kernel's own count."""
    text = subprocess.run([*in_netns(ns), "cat", "/proc/net/snmp"], capture_output=True, text=True,
                          check=True).stdout
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith(f"{table}:")]
    return int(dict(zip(rows[0], rows[1], strict=True))[field])


@pytest.fixture
def serving(tmp_path):
    return Serving(tmp_path)


@pytest.fixture
def scraper(node):
    """The token of Prometheus's service account, allowed to get nodes/metrics of both nodes."""
    token = node.api.add_user(PROMETHEUS_USER, ("system:serviceaccounts",))
    node.api.grant(PROMETHEUS_USER, "get", "nodes", "metrics")
    yield token
    node.api.revoke(PROMETHEUS_USER, "get", "nodes", "metrics")


@pytest.fixture
def cluster(node, tmp_path, serving, scraper):
    """Two agents, one per simulated node, and Prometheus scraping both over HTTPS with a token."""
    agents = {}
    node.api.requests.clear()       # from here on, the agents' calls only
    try:
        for netns in (node.node1, node.node2):
            port = free_port()
            agents[netns] = (Agent("serve", "--listen", f"127.0.0.1:{port}", "--kubeconfig", str(node.kubeconfig),
                                   "--node-netns", netns, *serving.args()), port)
        for agent, _ in agents.values():
            agent.wait_ready()
        prom = Prometheus(tmp_path, [f"127.0.0.1:{port}" for _, port in agents.values()],
                          {"scheme": "https", "tls_config": {"ca_file": str(serving.ca_file)}}, scraper)
        try:
            yield prom, agents, serving, scraper
        finally:
            prom.stop()
    finally:
        for agent, _ in agents.values():
            agent.kill()


def settle(prom: Prometheus, promql: str, by: tuple[str, ...], want: dict, seconds: float = 30) -> dict:
    """Prometheus's answer once it has scraped what the kernel counted (or the last one)."""
    deadline = time.monotonic() + seconds
    got: dict = {}
    while time.monotonic() < deadline:
        got = prom.values(promql, *by)
        if got == want:
            break
        time.sleep(0.5)
    return got


def api_calls(requests: list[str]) -> set[tuple[str, str]]:
    """(verb, resource) of each request the lab's API server saw, as RBAC names them."""
    calls = set()
    for line in requests:
        method, _, path = line.rpartition(" ")
        url = urllib.parse.urlparse(path)
        parts = [p for p in url.path.split("/") if p]
        resource = parts[-1] if parts[-1].endswith("s") else parts[-2]
        if method == "POST":
            verb = "create"
        elif "watch=true" in url.query.lower() or "watch=1" in url.query:
            verb = "watch"
        else:
            verb = "list" if parts[-1] == resource else "get"
        calls.add((verb, resource))
    return calls


def agent_may(verb: str, resource: str) -> bool:
    """What deploy/rbac.yaml grants the agent's service account (its role, and system:auth-delegator's
    create on the two reviews)."""
    import yaml

    docs = [d for d in yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "netdrop"]
    delegated = any(d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == "system:auth-delegator"
                    for d in docs)
    if delegated and verb == "create" and resource in ("tokenreviews", "subjectaccessreviews"):
        return True
    return any(verb in r["verbs"] and resource in r["resources"] for r in role["rules"])


def test_promql_gives_the_kernels_own_counts_per_node_pod_and_category(node, cluster):
    prom, agents, serving, token = cluster
    db, api = node.pods["db"], node.pods["api"]
    before = {"db": snmp(db.netns, "Udp", "NoPorts"), "api": snmp(api.netns, "Udp", "NoPorts"),
              "frag": snmp(node.node1, "Ip", "FragFails")}
    node.traffic(node.client, "udp", "--dst", db.ipv4, "--port", "9999", "--count", "17", "--size", "100")
    node.traffic(node.client, "udp", "--dst", api.ipv4, "--port", "9999", "--count", "9", "--size", "300")
    CASES["mtu"].play(node, 6)    # web -> api, 1500-byte DF packets over node1's 1450 overlay
    kernel = {("sim-node1", "default", "db-0", "db-0", "no-socket"): snmp(db.netns, "Udp", "NoPorts") - before["db"],
              ("sim-node2", "shop", api.name, "api-5c6d7b9f4", "no-socket"):
                  snmp(api.netns, "Udp", "NoPorts") - before["api"]}
    assert kernel[("sim-node1", "default", "db-0", "db-0", "no-socket")] == 17
    by = ("node", "namespace", "pod", "workload", "category")
    got = settle(prom, 'sum by (node, namespace, pod, workload, category) '
                       '(netdrop_drops_total{reason="NO_SOCKET", direction="in-pod"})', by, kernel)
    assert got == kernel
    frag = snmp(node.node1, "Ip", "FragFails") - before["frag"]
    assert frag >= 6
    mtu = {("sim-node1", "web", "from-pod"): float(frag)}
    got = settle(prom, 'sum by (node, workload, direction) (netdrop_drops_total{category="mtu"})',
                 ("node", "workload", "direction"), mtu)
    assert got == mtu
    # Bytes, counted in the kernel: each packet's IP length (UDP: 20 + 8 + payload; the MTU case's 1500).
    by_bytes = {("sim-node1", "db-0", "no-socket"): 17 * 128.0, ("sim-node2", api.name, "no-socket"): 9 * 328.0}
    got = settle(prom, 'sum by (node, pod, category) '
                       '(netdrop_drop_bytes_total{reason="NO_SOCKET", direction="in-pod"})',
                 ("node", "pod", "category"), by_bytes)
    assert got == by_bytes
    mtu_bytes = {("sim-node1", "web", "from-pod"): frag * 1500.0}
    got = settle(prom, 'sum by (node, workload, direction) (netdrop_drop_bytes_total{category="mtu"})',
                 ("node", "workload", "direction"), mtu_bytes)
    assert got == mtu_bytes
    # Each agent counts its own node only: node2's agent never saw node1's pods.
    assert not prom.query('netdrop_drops_total{node="sim-node2", namespace="default"}')
    # Both agents healthy, as Prometheus sees them and on /healthz.
    assert prom.values("up", "instance") == {(f"127.0.0.1:{p}",): 1.0 for _, p in agents.values()}
    for _, port in agents.values():
        assert get(f"https://127.0.0.1:{port}/healthz", context=serving.client) == (
            200, "ok: programs attached, counters readable\n")
        status, text = get(f"https://127.0.0.1:{port}/metrics", token=token, context=serving.client)
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
        assert status == 200 and check.returncode == 0, check.stdout + check.stderr

    # Every panel of the dashboard runs on this Prometheus and returns series.
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]
    assert len(exprs) >= 6
    for title, expr in exprs:
        promql = expr.replace("$__rate_interval", "1m").replace("$node", ".*").replace("$namespace", ".*")
        deadline = time.monotonic() + 20      # rate() wants two scrapes of a series in its window
        while not prom.query(promql) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert prom.query(promql), f"panel {title!r}: {promql} returned no series"

    # Every call the agents made to the API is one deploy/rbac.yaml grants them.
    calls = api_calls(node.api.requests)
    assert {("watch", "pods"), ("create", "tokenreviews"), ("create", "subjectaccessreviews")} <= calls
    assert [c for c in calls if not agent_may(*c)] == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_ends_serve_within_2s_with_its_port_closed(node, sig):
    port = free_port()
    agent = Agent("serve", "--listen", f"127.0.0.1:{port}", "--kubeconfig", str(node.kubeconfig),
                  "--node-netns", node.node1)
    try:
        agent.wait_ready()
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        t0 = time.monotonic()
        agent.stop(settle=0, sig=sig)
        took = time.monotonic() - t0
    finally:
        agent.kill()
    assert took < allowed(2.0), f"{signal.Signals(sig).name} took {took:.1f} s"    # 2 s promised: tests/timing.py
    assert agent.proc.returncode == 0 and "Traceback" not in agent.stderr, agent.stderr
    assert "netdrop: stopped:" in agent.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_port_in_use_fails_at_once_with_one_line(node):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run(NETDROP + ["serve", "--listen", f"127.0.0.1:{port}"],
                             capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip() == f"netdrop: error: cannot listen on 127.0.0.1:{port}: Address already in use"


def _get_headers(url: str, context: ssl.SSLContext, token: str | None = None) -> tuple[int, dict[str, str], str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5, context=context) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_only_tokens_allowed_to_get_this_nodes_metrics_are_served_and_probes_need_none(node, serving):
    tenant = node.api.add_user("system:serviceaccount:shop:default")
    elsewhere = node.api.add_user("system:serviceaccount:monitoring:node2-only")
    scraper = node.api.add_user(PROMETHEUS_USER)
    node.api.grant("system:serviceaccount:monitoring:node2-only", "get", "nodes", "metrics", "sim-node2")
    node.api.grant(PROMETHEUS_USER, "get", "nodes", "metrics", "sim-node1")
    port = free_port()
    agent = Agent("serve", "--listen", f"127.0.0.1:{port}", "--kubeconfig", str(node.kubeconfig),
                  "--node-netns", node.node1, *serving.args())
    url = f"https://127.0.0.1:{port}"
    try:
        agent.wait_ready()
        assert "/metrics for bearer tokens allowed to get nodes/metrics" in agent.stderr_now()
        # The kubelet's probe: no token, and nothing about pods in the answer.
        status, _, body = _get_headers(f"{url}/healthz", serving.client)
        assert (status, body) == (200, "ok: programs attached, counters readable\n")
        status, headers, body = _get_headers(f"{url}/metrics", serving.client)
        assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer"), (status, headers)
        assert "db-0" not in body
        assert _get_headers(f"{url}/metrics", serving.client, "made-up-token")[0] == 401
        status, _, body = _get_headers(f"{url}/metrics", serving.client, tenant)
        assert status == 403 and "system:serviceaccount:shop:default may not get nodes/metrics sim-node1" in body
        assert "db-0" not in body
        assert _get_headers(f"{url}/metrics", serving.client, elsewhere)[0] == 403
        reviews = dict(node.api.reviews)
        for _ in range(5):
            status, _, body = _get_headers(f"{url}/metrics", serving.client, scraper)
            assert status == 200 and "netdrop_build_info" in body, body[:300]
        # The answers are kept: five scrapes, one TokenReview and one SubjectAccessReview.
        assert {k: node.api.reviews[k] - reviews[k] for k in reviews} == {"TokenReview": 1, "SubjectAccessReview": 1}
        # Plain HTTP on the TLS port carries no token and gets nothing.
        with pytest.raises((OSError, urllib.error.URLError)):
            get(f"http://127.0.0.1:{port}/metrics", token=scraper)
        agent.stop()
    finally:
        agent.kill()
        node.api.revoke("system:serviceaccount:monitoring:node2-only", "get", "nodes", "metrics", "sim-node2")
        node.api.revoke(PROMETHEUS_USER, "get", "nodes", "metrics", "sim-node1")
    assert agent.proc.returncode == 0 and "Traceback" not in agent.stderr, agent.stderr


def test_without_a_certificate_tokens_go_over_tls_with_one_made_at_start(node):
    scraper = node.api.add_user(PROMETHEUS_USER)
    node.api.grant(PROMETHEUS_USER, "get", "nodes", "metrics", "sim-node1")
    port = free_port()
    agent = Agent("serve", "--listen", f"127.0.0.1:{port}", "--kubeconfig", str(node.kubeconfig),
                  "--node-netns", node.node1, "--auth", "kubernetes")
    try:
        agent.wait_ready()
        assert f"serving https://127.0.0.1:{port}/metrics" in agent.stderr_now()
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE    # as Prometheus scrapes a kubelet
        status, _, body = _get_headers(f"https://127.0.0.1:{port}/metrics", insecure, scraper)
        assert status == 200 and "netdrop_build_info" in body
        # The certificate is one this agent made, self-signed: a verifying client refuses it.
        with pytest.raises(urllib.error.URLError, match="self-signed certificate"):
            _get_headers(f"https://127.0.0.1:{port}/healthz", ssl.create_default_context())
        agent.stop()
    finally:
        agent.kill()
        node.api.revoke(PROMETHEUS_USER, "get", "nodes", "metrics", "sim-node1")
    assert agent.proc.returncode == 0 and "Traceback" not in agent.stderr, agent.stderr


def test_any_address_but_loopback_without_credentials_to_check_tokens_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(tmp_path)         # no ~/.kube/config
    res = subprocess.run(NETDROP + ["serve", "--listen", f"0.0.0.0:{free_port()}"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip()
    assert "\n" not in line and line.startswith("netdrop: error: scrapers' tokens are checked through the "
                                                "Kubernetes API, which cannot be used"), line
    assert "--insecure-no-auth" in line
