"""A real Prometheus for kernel tests (Debian's, which scripts/setup installs), and the small
HTTP helpers the tests that scrape share."""

import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5, token: str | None = None,
        context: ssl.SSLContext | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout,
                                    context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Prometheus:
    """Debian's Prometheus on 127.0.0.1, its configuration and TSDB under tmp, scraping
    `targets` every second with the job settings given (scheme, tls_config, ...) and,
    with a token, `authorization: credentials_file`."""

    def __init__(self, tmp: Path, targets: list[str], settings: dict | None = None, token: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        job: dict = {"job_name": "netdrop", "static_configs": [{"targets": targets}], **(settings or {})}
        if token is not None:
            (tmp / "token").write_text(token)
            job["authorization"] = {"credentials_file": str(tmp / "token")}
        config.write_text(json.dumps({      # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [job],
        }))
        self.proc = subprocess.Popen(
            [PROMETHEUS or "prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if get(f"{self.url}/-/ready", 1)[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
            time.sleep(0.2)
        raise AssertionError("prometheus not ready within 30 s")

    def query(self, promql: str) -> list[dict]:
        status, body = get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", (promql, body)
        return data["data"]["result"]

    def values(self, promql: str, *by: str) -> dict[tuple[str, ...], float]:
        return {tuple(r["metric"].get(k, "") for k in by): float(r["value"][1]) for r in self.query(promql)}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
