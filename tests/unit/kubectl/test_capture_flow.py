"""`kubectl netdrop capture` against the lab's API server through the real client, the test playing the agents.

The agents' part (reports written with the agent's credentials, files served
over HTTPS to bearer tokens) is played here until the agents' own end-to-end
test; the plugin's part is all real: RBAC as deploy/rbac.yaml grants it, the
reports listed, the files fetched by fetch.py trusting the reported
certificate, the summaries merged.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tracer.captures.report import REPORT_PLURAL, FileEntry, Report, report_object
from tracer.captures.spec import GROUP, PLURAL, VERSION, parse_capture
from tracer.lab import api as labapi
from tracer.sinks.summary.schema import load
from tracer.tlsconf import load_pem, make_certificate

from ..helpers import built_summary
from .conftest import Plugin, write_kubeconfig


FAST = {"poll_seconds": 0.1, "grace_seconds": 2.0}


class Files:
    """One agent's file endpoint: GET /captures/<ns>/<name>/<file> over HTTPS, to one bearer token."""

    def __init__(self, token: str) -> None:
        self.files: dict[str, bytes] = {}
        self.token = token
        self.requests: list[str] = []
        cert, key = make_certificate("netdrop-agent", ["127.0.0.1"])
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        der = x509.load_pem_x509_certificate(cert).public_bytes(Encoding.DER)
        self.cert_sha256 = hashlib.sha256(der).hexdigest()
        files = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                files.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {files.token}":
                    self.send_error(401)
                    return
                body = files.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        load_pem(ctx, cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Agents:
    """The nodes' agents as the API sees them: each writes its report with the agent's token."""

    def __init__(self, lab: labapi.KubeAPI, tmp: Path, token: str) -> None:
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host, cfg.api_key = lab.url, {"authorization": f"Bearer {lab.token}"}
        self.custom = client.CustomObjectsApi(client.ApiClient(cfg))
        self.tmp, self.token = tmp, token
        self.files: dict[str, Files] = {}      # node -> its agent's file endpoint
        self.done: list[str] = []

    def capture(self, namespace: str) -> Any:
        """The one capture of the namespace, once the plugin created it."""
        import time

        for _ in range(200):
            items = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
            if items:
                return parse_capture(items[0])
            time.sleep(0.05)
        raise AssertionError("the plugin created no capture")

    def report(self, cap: Any, node: str, state: str, message: str = "", drops: int = 0) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        base = Report(cap.name, cap.uid, node, state, message, window_from=now,  # type: ignore[arg-type]
                      window_to=now if state != "Recording" else None, updated=now)
        if state == "Done":
            summary = built_summary(self.tmp / node)
            summary["node"]["kubernetes_node"] = node
            body = json.dumps(summary).encode()
            files = self.files.setdefault(node, Files(self.token))
            files.files[f"/captures/{cap.namespace}/{cap.name}/summary.json"] = body
            base = replace(base, endpoint=files.url, cert_sha256=files.cert_sha256,
                           files=(FileEntry("summary.json", len(body)),), packets=summary["totals"]["drops"])
        obj = report_object(cap, base)
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, cap.namespace, REPORT_PLURAL, obj)
        except ApiException as exc:     # 409: already there, replace it
            if exc.status != 409:
                raise
            cur = self.custom.get_namespaced_custom_object(GROUP, VERSION, cap.namespace, REPORT_PLURAL,
                                                           obj["metadata"]["name"])
            obj["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
            self.custom.replace_namespaced_custom_object(GROUP, VERSION, cap.namespace, REPORT_PLURAL,
                                                         obj["metadata"]["name"], obj)


@pytest.fixture
def cluster(lab, tmp_path):
    """A responder (jane) bound to netdrop-capturer in shop, her kubeconfig, and the agents' side."""
    token = lab.add_user("jane")
    lab.bind_cluster_role("jane", "netdrop-capturer", "shop")
    kc = write_kubeconfig(tmp_path / "jane.kubeconfig", {"lab": (lab.url, token, "shop")}, "lab")
    agents = Agents(lab, tmp_path / "agents", token)
    yield Plugin(kc, tmp_path, FAST), agents
    for files in agents.files.values():
        files.stop()


def _play(agents: Agents, script: Any) -> threading.Thread:
    t = threading.Thread(target=script, daemon=True)
    t.start()
    return t


def test_capture_of_a_selector_fetches_each_node_and_merges(cluster, tmp_path, lab):
    plugin, agents = cluster

    def nodes() -> None:
        cap = agents.capture("shop")
        agents.report(cap, "node-1", "Recording")
        agents.report(cap, "node-2", "Recording")
        agents.report(cap, "node-1", "Done")
        agents.report(cap, "node-2", "Done")
    t = _play(agents, nodes)
    out = tmp_path / "out"
    run = plugin("capture", "-l", "app=web", "--duration", "2s", "--since", "2m", "-o", str(out), "--name",
                 "web-drops")
    t.join(5)
    assert run.status == 0, run.err
    merged = load(out / "summary.json")
    nodes = [load(out / n / "summary.json") for n in ("node-1", "node-2")]
    assert merged["totals"]["drops"] == sum(n["totals"]["drops"] for n in nodes) == 420
    assert [n["node"]["kubernetes_node"] for n in merged["nodes"]] == ["node-1", "node-2"]
    assert "420" in run.out         # the merged summary printed as a table
    assert "capture shop/web-drops created: pods -l app=web for 2s, from 2m before; 2 nodes expected" in run.err
    assert "capture shop/web-drops: 2/2 nodes done" in run.err
    assert not (out / "node-3").exists()
    assert all(len(line) <= 80 for line in run.err.splitlines() if "node-" in line and "Done" in line)


def test_failed_and_silent_nodes_are_named_and_the_others_merged(cluster, tmp_path):
    plugin, agents = cluster

    def nodes() -> None:
        cap = agents.capture("shop")
        agents.report(cap, "node-1", "Done")
        agents.report(cap, "node-2", "Failed", "since: the flight recorder is off on this node")
    t = _play(agents, nodes)
    out = tmp_path / "out"
    run = plugin("capture", "--pod", "web-0", "--pod", "web-1", "--pod", "db-0", "--duration", "1s", "-o", str(out))
    t.join(5)
    assert run.status == 1
    assert "kubectl netdrop: node-2 failed: since: the flight recorder is off on this node" in run.err
    assert "kubectl netdrop: no report from node-3: is its netdrop agent running? kubectl -n netdrop get pods " \
           "-o wide --field-selector spec.nodeName=node-3" in run.err
    assert load(out / "summary.json")["totals"]["drops"] == 210
    assert sorted(p.name for p in out.iterdir()) == ["node-1", "summary.json"]


def test_ctrl_c_leaves_the_capture_running(cluster, tmp_path):
    plugin, agents = cluster

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt
    run = plugin("capture", "-l", "app=web", "--duration", "1m", "-o", str(tmp_path / "o"), "--name", "late",
                 sleep=interrupted)
    assert run.status == 130
    assert run.err.strip().splitlines()[-1] == (
        "kubectl netdrop: stopped waiting; capture shop/late goes on on the agents until its end. "
        "See it with: kubectl netdrop get late -n shop")
    assert agents.capture("shop").name == "late"
    get = plugin("get", "late")
    assert get.status == 0 and "capture shop/late: pods -l app=web for 1m" in get.out
    assert "no node has reported yet" in get.out


def test_get_list_delete(cluster, tmp_path, lab):
    plugin, agents = cluster
    t = _play(agents, lambda: [agents.report(cap, n, s, m) for cap in [agents.capture("shop")]
                               for n, s, m in (("node-1", "Done", ""), ("node-2", "Failed", "no BTF"))])
    run = plugin("capture", "-l", "app=web", "--duration", "1s", "-o", str(tmp_path / "o"), "--name", "web")
    t.join(5)
    assert run.status == 1
    got = plugin("get", "web")
    assert got.status == 0
    lines = got.out.splitlines()
    assert any(line.split()[:3] == ["node-1", "Done", "210"] for line in lines)
    assert any(line.split()[:2] == ["node-2", "Failed"] and line.rstrip().endswith("no BTF") for line in lines)
    listed = plugin("list")
    row = next(line for line in listed.out.splitlines() if line.startswith("web "))
    assert row.split()[2:5] == ["2", "1", "1"] and "pods -l app=web for 1s" in row
    assert plugin("delete", "web").out == "netdropcapture.netdrop.io/web deleted\n"
    assert plugin("get", "web").err.strip() == "kubectl netdrop: error: no capture web in namespace shop " \
                                               "(kubectl netdrop list -n shop)"


def test_rbac_refusals_are_one_line(cluster, tmp_path, lab):
    plugin, _ = cluster
    run = plugin("capture", "-l", "app=web", "-n", "netdrop", "--duration", "1s", "-o", str(tmp_path / "o"))
    assert run.status == 2
    line, = run.err.splitlines()
    assert line.startswith("kubectl netdrop: error: forbidden: you may not list pods in namespace netdrop")
    assert "netdrop-capturer" in line
    run = plugin("list", "-A")
    line, = run.err.splitlines()
    assert line.startswith("kubectl netdrop: error: forbidden: you may not list netdropcaptures.netdrop.io at the "
                           "cluster scope")


def test_node_capture_goes_to_the_agents_namespace(lab, tmp_path):
    """An operator bound cluster-wide: --node names are checked by listing (the role lists nodes)."""
    token = lab.add_user("ops")
    lab.bind_cluster_role("ops", "netdrop-capturer")
    kc = write_kubeconfig(tmp_path / "ops.kubeconfig", {"lab": (lab.url, token, "shop")}, "lab")
    plugin = Plugin(kc, tmp_path, FAST)
    run = plugin("capture", "--node", "node-9", "--duration", "1s", "-o", str(tmp_path / "o"))
    assert run.status == 2 and run.err.strip() == "kubectl netdrop: error: no node node-9 (kubectl get nodes)"
    run = plugin("capture", "--node", "node-2", "--duration", "1s", "-o", str(tmp_path / "o"), "--name", "n2")
    assert run.status == 1
    assert "capture netdrop/n2 created: nodes node-2 for 1s; 1 node expected" in run.err
    assert "no report from node-2" in run.err
