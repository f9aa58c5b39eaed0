"""The live console and the demo, run as a user runs them."""

import os
import signal
import subprocess
import time
from pathlib import Path

from tracer import lab

from .conftest import NETDROP


def test_console_shows_the_cases(netdrop, node):
    nd = netdrop("watch", "--netns", node.node1, "--duration", "60",
                 env={**os.environ, "COLUMNS": "160"}).wait_ready()
    lab.CASES["mtu"].play(node, 3)
    lab.CASES["no-route"].play(node, 2)
    nd.stop(settle=1.0)
    assert nd.proc.returncode == 0, nd.stderr
    out = nd.stdout
    for text in ("PKT_TOO_BIG", "ip_forward", "mtu 1450 on cni0", "IP_INNOROUTES", "no-route",
                 "Recent drops", "events lost", "tracepoint skb:kfree_skb", node.node1):
        assert text in out, text


def demo_namespaces(prefix: str) -> list[str]:
    run_dir = Path("/run/netns")
    return [p.name for p in run_dir.iterdir() if p.name.startswith(prefix + "-")] if run_dir.is_dir() else []


def test_demo_plays_cases_and_cleans_up():
    prefix = "ndtdemo"
    res = subprocess.run([*NETDROP, "demo", "--duration", "8", "--cases", "mtu,udp-closed", "--prefix", prefix],
                         capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr
    assert "PKT_TOO_BIG" in res.stdout and "NO_SOCKET" in res.stdout
    assert demo_namespaces(prefix) == []


def test_demo_cleans_up_on_ctrl_c():
    prefix = "ndtdemoint"
    proc = subprocess.Popen([*NETDROP, "demo", "--duration", "120", "--prefix", prefix],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(demo_namespaces(prefix)) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert demo_namespaces(prefix) == []
