"""The live console and the demo, run as a user runs them."""

import os
import re
import subprocess
import time

from tracer.lab.cases import CASES
from tracer.lab.ownership import Ownership

from ..conftest import NETDROP
from ..helpers import existing, finish, lab_namespaces, tracing


def test_console_shows_the_cases(netdrop, node):
    nd = netdrop("watch", "--netns", node.node1, "--duration", "60",
                 env={**os.environ, "COLUMNS": "160"}).wait_ready()
    CASES["mtu"].play(node, 3)
    CASES["no-route"].play(node, 2)
    nd.stop(settle=1.0)
    assert nd.proc.returncode == 0, nd.stderr
    out = nd.stdout
    for text in ("PKT_TOO_BIG at ip_forward", "MTU 1450 flannel.1, 1500-byte DF", "IP_INNOROUTES", "no-route",
                 "Recent drops", "events lost", "hooks 2/", node.node1):
        assert text in out, text
    # One line per group, whatever the width: the MTU group's line has its count and the why,
    # led by what decides (the MTU and its device).
    row = next(line for line in out.splitlines() if "PKT_TOO_BIG at ip_forward" in line and "mtu" in line)
    assert re.search(r" 3 .*MTU 1450 flannel.1, 1500-byte DF · 1500-byte packet", row)


def test_demo_plays_cases_and_cleans_up():
    prefix = f"ndd{os.getpid() % 100000}"        # the test's own: another run may play its demo meanwhile
    res = subprocess.run([*NETDROP, "demo", "--duration", "8", "--cases", "mtu,udp-closed", "--prefix", prefix],
                         capture_output=True, text=True, timeout=90, env={**os.environ, "COLUMNS": "80"})
    assert res.returncode == 0, res.stderr
    # At 80 columns each group's row leads with what decides.
    assert "MTU 1450 flannel.1, 1500-byte DF" in res.stdout and "udp/9999 nothing listening" in res.stdout
    assert lab_namespaces(prefix) == [] and existing([f"{prefix}-node1", f"{prefix}-client"]) == []


def test_demo_cleans_up_on_ctrl_c():
    prefix = f"ndi{os.getpid() % 100000}"
    try:
        with tracing("demo", "--duration", "120", "--prefix", prefix) as proc:
            created = lab_namespaces(prefix)
            assert len(created) == 7 and len(existing(created)) == 7
            time.sleep(2.5)
            status, _, err = finish(proc)
    except BaseException:
        Ownership(prefix).cleanup_leftovers()   # what a demo killed by tracing() leaves
        raise
    assert status == 0, err
    assert "Traceback" not in err
    assert existing(created) == [] and lab_namespaces(prefix) == []
