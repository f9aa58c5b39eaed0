"""The agent's image, run the way deploy/daemonset.yaml says (tracer/lab/kubelet.py reads it:
security context, capabilities, read-only root, each emptyDir as the kubelet makes it, env,
args, host network and PID, limits, probes). It traces a drop made in a network namespace of
this test's own, its probes answer, /metrics counts the drop, and SIGTERM ends it within the
grace period; nothing is left behind, also when a container cannot start.

The image is built first from this checkout (scripts/image: the base made once, the layers
cached; scripts/setup installs the engine). The lab's API server (HTTPS on 127.0.0.1) plays the
cluster: the container gets the service account the kubelet would mount, and a real Prometheus
scrapes /metrics as deploy/servicemonitor.yaml tells the operator to (HTTPS, the certificate not
verified, a bearer token that may get nodes/metrics of the node).
"""

import os
import shutil
import socket
import ssl
import stat
import subprocess
import time
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tracer.lab import image as lab_image
from tracer.lab.container import Container, cluster_api, scratch_dir
from tracer.lab.kubelet import Variation, load_daemonset

from .conftest import TIME_SCALE
from .prometheus import PROMETHEUS, Prometheus

pytestmark = pytest.mark.image
NODE = "image-test-node"
DATAGRAMS = 23


@pytest.fixture(scope="module")
def daemonset():
    for tool in ("podman", "mmdebstrap", "runc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup installs it)")   # a failure under CI=true
    lab_image.ensure_image()     # this checkout's code: cached layers make it quick
    return load_daemonset(lab_image.DAEMONSET)


@pytest.fixture
def netns():
    """A network namespace of this test's own, loopback up: where the drops are made."""
    name = f"ndimg{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=10)


def container_exists(name: str) -> bool:
    return subprocess.run(["podman", "container", "exists", name], timeout=60).returncode == 0


def udp_no_ports(ns: str) -> int:
    text = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"], capture_output=True, text=True,
                          check=True, timeout=10).stdout
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
    return int(dict(zip(rows[0], rows[1], strict=True))["NoPorts"])


def drop_udp(ns: str, count: int) -> None:
    """count datagrams to a port nobody listens on, inside ns: each one a NO_SOCKET drop."""
    send = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range({count}): s.sendto(b'x' * 100, ('127.0.0.1', 9))")
    subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", send], check=True, timeout=30)


PROMETHEUS_USER = "system:serviceaccount:monitoring:prometheus"
# Prometheus scrapes a node's agent as it scrapes kubelets: the serving certificate not verified.
INSECURE = ssl.create_default_context()
INSECURE.check_hostname, INSECURE.verify_mode = False, ssl.CERT_NONE


@pytest.fixture
def cluster():
    """The lab's API with the test's node, the agent's service account, and a scraper's token."""
    with cluster_api(NODE) as (api, sa):
        token = api.add_user(PROMETHEUS_USER, ("system:serviceaccounts",))
        api.grant(PROMETHEUS_USER, "get", "nodes", "metrics", NODE)
        yield api, sa, token


def get(port: int, path: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5, context=INSECURE) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int, token: str) -> dict[str, list]:
    status, text = get(port, "/metrics", token)
    assert status == 200, text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def servicemonitor_job() -> dict:
    """deploy/servicemonitor.yaml's endpoint as the Prometheus operator turns it into a scrape job
    (a field this does not know fails the test: what Prometheus ran is what the manifest says)."""
    monitor = yaml.safe_load((lab_image.DAEMONSET.parent / "servicemonitor.yaml").read_text())
    (endpoint,) = monitor["spec"]["endpoints"]
    known = {"port", "path", "scheme", "bearerTokenFile", "tlsConfig", "interval", "scrapeTimeout"}
    assert set(endpoint) <= known, set(endpoint) - known
    assert set(endpoint.get("tlsConfig", {})) <= {"insecureSkipVerify"}
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"   # Prometheus's own
    return {"scheme": endpoint["scheme"], "metrics_path": endpoint["path"],
            "tls_config": {"insecure_skip_verify": bool(endpoint.get("tlsConfig", {}).get("insecureSkipVerify"))}}


def no_socket_drops(metrics: dict[str, list]) -> float:
    return sum(s.value for s in metrics.get("netdrop_drops", []) if s.name == "netdrop_drops_total"
               and s.labels.get("reason") == "NO_SOCKET")


def test_the_daemonsets_container_traces_answers_its_probes_and_is_scraped(daemonset, netns, cluster, tmp_path):
    if PROMETHEUS is None:
        pytest.skip("Debian's prometheus is not installed (scripts/setup installs it)")   # a failure under CI=true
    api, sa, token = cluster
    scratch = scratch_dir()
    run = daemonset.run(NODE, scratch, sa=sa, suffix=f"test{os.getpid()}")
    assert f"--node={NODE}" in run.args             # $(NODE_NAME), from spec.nodeName
    (port,) = {p.port for p in run.probes}
    with Container(run, scratch) as c:
        ready = c.wait_ready(120 * TIME_SCALE)
        for probe in run.probes:
            assert c.probe_now(probe.kind) == (True, "200 ok: programs attached, counters readable"), probe.kind

        # The cache volume, an emptyDir the kubelet made 0777, is netdrop's own now.
        cache = scratch / "volumes" / "kubernetes.io~empty-dir" / "cache"
        assert stat.S_IMODE(cache.stat().st_mode) == 0o700
        assert [p.name[:7] for p in cache.iterdir()] == ["kernel-"]

        before, kernel_before = no_socket_drops(scrape(port, token)), udp_no_ports(netns)
        drop_udp(netns, DATAGRAMS)
        assert udp_no_ports(netns) - kernel_before == DATAGRAMS
        deadline = time.monotonic() + 15
        while (counted := no_socket_drops(metrics := scrape(port, token)) - before) < DATAGRAMS:
            assert time.monotonic() < deadline, f"{counted} of the {DATAGRAMS} drops counted\n{c.output()}"
            time.sleep(0.5)
        # The host's own drops count too (the agent sees the whole node): at least ours.
        assert counted >= DATAGRAMS
        # The real Prometheus, scraping as the ServiceMonitor says, sees them too.
        prom = Prometheus(tmp_path, [f"127.0.0.1:{port}"], servicemonitor_job(), token)
        try:
            deadline = time.monotonic() + 30 * TIME_SCALE
            while True:
                up = prom.values("up", "instance")
                seen = prom.values('sum(netdrop_drops_total{reason="NO_SOCKET"})')
                if up == {(f"127.0.0.1:{port}",): 1.0} and seen.get((), 0.0) >= before + DATAGRAMS:
                    break
                assert time.monotonic() < deadline, (up, seen, before)
                time.sleep(0.5)
        finally:
            prom.stop()
        assert {s.labels["node"] for s in metrics["netdrop_hook_attached"]} == {NODE}
        attached = {s.labels["hook"] for s in metrics["netdrop_hook_attached"] if s.value == 1}
        assert "tp_btf skb:kfree_skb" in attached, attached
        if shutil.which("promtool"):
            check = subprocess.run(["promtool", "check", "metrics"], input=get(port, "/metrics", token)[1],
                                   capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr
        # The agent reviewed the tokens with its service account's: no token, no metrics.
        assert get(port, "/metrics", None)[0] == 401
        assert get(port, "/metrics", api.add_user("system:serviceaccount:shop:default"))[0] == 403
        assert api.reviews["TokenReview"] >= 2 and api.reviews["SubjectAccessReview"] >= 1

        took = c.stop()
        assert c.exit_status == 0, c.output()
    output = c.output()
    assert "Traceback" not in output and "netdrop: stopped:" in output, output
    assert took < run.grace_seconds, f"SIGTERM took {took:.1f} s of the {run.grace_seconds} s grace period"
    assert not c.restarts_wanted and not c.over_limit
    assert [r for r in c.results if r.kind == "livenessProbe" and not r.ok] == []
    assert not container_exists(run.name) and not scratch.exists()
    print(f"ready {ready:.1f} s after start; stopped {took:.2f} s after SIGTERM")


def test_a_container_that_cannot_start_leaves_nothing_behind(daemonset, cluster):
    """Without the capabilities the manifest adds no program can be loaded: the agent exits
    with one line, and the runner still removes the container and its volumes."""
    scratch = scratch_dir()
    added = frozenset(daemonset.container["securityContext"]["capabilities"]["add"])
    run = daemonset.run(NODE, scratch, sa=cluster[1], variation=Variation(withhold=added),
                        suffix=f"nocaps{os.getpid()}")
    with Container(run, scratch) as c, pytest.raises(AssertionError, match="exited"):
        c.wait_ready(120 * TIME_SCALE)
    assert c.proc is not None and c.proc.returncode not in (0, None)
    assert "netdrop: error:" in c.output() and "Traceback" not in c.output(), c.output()
    assert not container_exists(run.name) and not scratch.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", run.probes[0].port), timeout=1).close()
